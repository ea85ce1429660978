#!/usr/bin/env python3
"""ssmdyn against PyTorch on the right-hand side dX/dt = S6(X) and on an ODE solve.

The layer (tokens are columns): X is D x L,
    Delta = softplus(W_dt (W_x X) + b)   (D x L; W_dt D x R, W_x R x D: Mamba's low-rank dt),
    B = S_B X,  C = S_C X                (N x L),  A (D x N, all < 0),
    h_l = exp(Delta_l A) o h_{l-1} + (Delta_l o x_l) B_l^T,  h_{-1} = 0,   y_l = h_l C_l,
and Y = S6(X) = [y_0 .. y_{L-1}] is the right-hand side of the token ODE.

Part 1, one right-hand side at the size of a real Mamba layer (mamba-130m: D = 1536,
N = 16, dt rank R = 48; L = 1024 tokens). build/bin/real_size_rhs draws the problem,
writes it and its own Y (double and float) as .npy files and prints its timings; the same
Y is then computed in PyTorch two ways:
  loop     the recurrence token by token, vectorised over D and N, after exp(Delta A) and
           (Delta o X) B^T for all tokens at once (as mamba_ssm's selective_scan_ref);
  chunked  a log-space scan in chunks of at most 16 tokens: inside a chunk starting at
           token a, with Q_t = A o (Delta_{a+1} + .. + Delta_t) (one cumulative sum over D
           only, since the decay factors), h_t = e^{Q_t} o (e^{Delta_a A} o h_{a-1}
           + sum_{s<=t} e^{-Q_s} o (Delta_s o x_s) B_s^T); the sum over s is one matrix
           product with a lower-triangular matrix of ones and the output one batched
           product with C. e^{-Q_s} overflows (and e^{Q_t} underflows) when the decay
           inside a chunk is large, so a chunk also ends before max_dn |Q| could pass 500
           (float64) or 30 (float32); that bounds the rounding of the exponent too
           (relative 30 * 6e-8 ~ 2e-6 in float32). The bound is taken from the data at
           every call, so the form is stable for any decays.
Both take the projections as single matrix products for all tokens. The float64 forms must
agree with ssmdyn's double Y to 1e-6 (max |error| / max |Y|), the float32 forms and ssmdyn's
float Y to 1e-3 (seen: ~1e-6); the exit status is 1 otherwise. Timings are the best of
--repeats calls after a warm-up, with torch.set_num_threads(1) and (2), in the same run as
the C++ program, whose own timings are taken as it prints them. The table gives each
form's milliseconds per right-hand side and the speed-up of it against the fastest PyTorch
float32 form at the same number of threads (so > 1 for ssmdyn means ssmdyn is faster).

PyTorch's matrix products go to the BLAS it is linked with: Debian's python3-torch calls
libblas.so.3, the reference BLAS (20-70x slower products) unless an optimised one is
installed. The BLAS loaded is printed, with a warning for the reference one. For a fair
comparison install Debian's libopenblas0-openmp (update-alternatives then makes it
libblas.so.3 for NumPy and SciPy too; built on OpenMP, it shares PyTorch's threads), or
for this command alone point LD_LIBRARY_PATH at a folder holding OpenBLAS's libblas.so.3.
OpenBLAS built on its own pthreads pool is kept at 1 thread (see Blas.set_threads).

Part 2, an ODE solve (skip it with --no-scipy; skipped without SciPy): the problem of
compare_scipy.py (its make_problem: D = N = 16, full S_Delta, L = 256, t in [0, 10], rtol
1e-8, atol 1e-10) with SciPy's solve_ivp RK45 and the faster of the two PyTorch float64
forms above as its right-hand side (timed on the initial tokens, 1 thread), against
`ssmdyn simulate --stepper dopri5 --error-norm rms` (the same Dormand-Prince pair and error
norm); solve time only (solve_seconds of ssmdyn, the solve_ivp call of SciPy, both in
their process). The final tokens must agree to within 1e-6 relative (as in
compare_scipy.py); the exit status is 1 otherwise.

Needs NumPy and PyTorch (Debian: python3-torch), and SciPy for part 2; skipped (exit status
0) without PyTorch. Run it with /usr/bin/python3 if another python3 comes first on PATH:

    /usr/bin/python3 benchmarks/compare_torch.py
    /usr/bin/python3 benchmarks/compare_torch.py --small           # smoke test, seconds
    /usr/bin/python3 benchmarks/compare_torch.py --no-scipy --L 2048 --repeats 3
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 benchmarks/compare_torch.py
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

AGREEMENT_DOUBLE = 1e-6   # float64 forms against ssmdyn's double Y, and the ODE solve
AGREEMENT_FLOAT = 1e-3    # float32 forms and ssmdyn's float Y against ssmdyn's double Y
CHUNK = 16                # the chunked form's largest chunk (tokens)
MAX_EXPONENT = {"float64": 500.0, "float32": 30.0}   # bound on |Q| inside a chunk
SSMDYN_KEYS = [("double", 1, "double_1thread_ms"), ("float", 1, "float_1thread_ms"),
               ("double", 2, "double_2threads_ms"), ("float", 2, "float_2threads_ms")]


# ----------------------------------------------------------------------------- PyTorch forms

def projections(X, p):
    """Tokens first: X^T, Delta^T (L x D), B^T, C^T (L x N), each one matrix product for
    all tokens (the dt projection low-rank W_dt W_x, or a full S_Delta)."""
    import torch.nn.functional as F

    Xt = X.T
    if "W_x" in p:
        z = (Xt @ p["W_x"].T) @ p["W_dt"].T
    else:
        z = Xt @ p["S_Delta"].T
    Delta = F.softplus(z + p["b"])
    return Xt, Delta, Xt @ p["S_B"].T, Xt @ p["S_C"].T


def rhs_loop(X, p):
    """Y = S6(X) (D x L) by the recurrence token by token, vectorised over D and N."""
    import torch

    Xt, Delta, Bt, Ct = projections(X, p)
    dA = torch.mul(Delta[:, :, None], p["A"]).exp_()             # L x D x N: exp(Delta_l A)
    H = torch.mul((Delta * Xt)[:, :, None], Bt[:, None, :])     # (Delta_l o x_l) B_l^T, then h_l
    for l in range(1, H.shape[0]):
        H[l].addcmul_(dA[l], H[l - 1])
    return torch.bmm(H, Ct[:, :, None]).view(Xt.shape).T


def chunk_bounds(Delta, A, max_exponent, chunk):
    """Chunk starts (and L): at most `chunk` tokens, and inside each chunk the sum of the
    bound max_d Delta_l[d] * max |A| over its tokens but the first below max_exponent."""
    import torch

    rate = Delta.amax(1).double() * float(A.abs().max())
    index = torch.div(rate.cumsum(0), max_exponent, rounding_mode="floor").tolist()
    bounds = [0]
    for l in range(1, len(index)):
        if index[l] != index[l - 1] or l - bounds[-1] >= chunk:
            bounds.append(l)
    bounds.append(len(index))
    return bounds


def rhs_chunked(X, p, chunk=CHUNK):
    """Y = S6(X) (D x L) by the log-space scan in chunks (see the module comment)."""
    import torch

    Xt, Delta, Bt, Ct = projections(X, p)
    A = p["A"]
    L, D = Xt.shape
    N = A.shape[1]
    ones = torch.ones(chunk, chunk, dtype=X.dtype).tril_()
    U = Delta * Xt
    h = torch.zeros_like(A)
    Y = torch.empty(L, D, dtype=X.dtype)
    bounds = chunk_bounds(Delta, A, MAX_EXPONENT[str(X.dtype).split(".")[-1]], chunk)
    for a, b in zip(bounds[:-1], bounds[1:]):
        T = b - a
        tril = ones[:T, :T]
        S = tril @ Delta[a:b]
        S -= Delta[a]                                            # Delta_{a+1} + .. + Delta_t
        E = torch.mul(S[:, :, None], A).exp_()                   # e^{Q_t}, T x D x N
        W = torch.mul(U[a:b, :, None], Bt[a:b, None, :]).div_(E)
        h0 = torch.mul(Delta[a, :, None], A).exp_().mul_(h)      # e^{Delta_a A} o h_{a-1}
        H = torch.addmm(h0.view(1, -1), tril, W.view(T, -1)).view(T, D, N).mul_(E)
        torch.bmm(H, Ct[a:b, :, None], out=Y[a:b, :, None])
        h = H[-1]
    return Y.T


FORMS = [("loop", rhs_loop), ("chunked", rhs_chunked)]


# ----------------------------------------------------------------------------- threads, BLAS

class Blas:
    """The BLAS that PyTorch's matrix products run on (Debian's python3-torch calls
    libblas.so.3): found among this process's mapped libraries after a product."""

    def __init__(self):
        import torch

        torch.ones(64, 64, dtype=torch.float64) @ torch.ones(64, 64, dtype=torch.float64)
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "/" in line})
        paths = [p for p in paths if any(k in os.path.basename(p).lower() for k in ("blas", "mkl", "blis"))]
        self.lib, self.parallel, self.description = None, 0, "not found"
        for path in paths:
            lib = ctypes.CDLL(path)
            if hasattr(lib, "openblas_get_config"):
                lib.openblas_get_config.restype = ctypes.c_char_p
                self.lib, self.parallel = lib, lib.openblas_get_parallel()
                kind = {0: "sequential", 1: "pthreads", 2: "OpenMP"}.get(self.parallel, "?")
                self.description = f"{lib.openblas_get_config().decode()} ({kind}), {path}"
                break
        else:
            if paths:
                self.description = os.path.realpath(paths[0])
        self.reference = any("/blas/libblas.so" in os.path.realpath(p) for p in paths) and self.lib is None

    def set_threads(self, n):
        """PyTorch's intra-op threads to n, and OpenBLAS's with them when it shares
        PyTorch's OpenMP pool; OpenBLAS built on its own pthreads pool stays at 1 thread
        (with 2 its pool and PyTorch's spinning OpenMP threads contend for the 2 cores:
        the chunked float32 form ran 10x slower so)."""
        import torch

        torch.set_num_threads(n)
        if self.lib is not None:
            self.lib.openblas_set_num_threads(ctypes.c_int(n if self.parallel == 2 else 1))


def best_ms(fn, repeats):
    """Best wall time of `repeats` calls after one warm-up call, in milliseconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def rel_error(Y, reference):
    import numpy as np

    return float(np.max(np.abs(np.asarray(Y, dtype=np.float64) - reference)) / np.max(np.abs(reference)))


# ----------------------------------------------------------------------------- part 1

def part1(args, blas):
    """One right-hand side at real size; returns True when every check passed."""
    import numpy as np
    import torch

    if not os.access(args.ssmdyn_rhs, os.X_OK):
        raise SystemExit(f"{args.ssmdyn_rhs} is not an executable; build it or pass --ssmdyn-rhs")
    print(f"Part 1: one right-hand side, D = {args.D}, N = {args.N}, L = {args.L}, R = {args.R}, "
          f"seed {args.seed}; best of {args.repeats} after a warm-up\n")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([args.ssmdyn_rhs, "--out", tmp, "--D", str(args.D), "--N", str(args.N),
                               "--L", str(args.L), "--R", str(args.R), "--seed", str(args.seed),
                               "--repeats", str(args.repeats)], capture_output=True, text=True)
        try:
            timings = json.loads(done.stdout)
        except ValueError:
            timings = None
        if done.returncode not in (0, 1) or timings is None:   # 1: its 2 threads differ from 1
            raise SystemExit(f"{args.ssmdyn_rhs} failed ({done.returncode}):\n{done.stderr}")
        arrays = {k: np.ascontiguousarray(np.load(os.path.join(tmp, k + ".npy")))   # it writes Fortran order
                  for k in ("S_B", "S_C", "W_dt", "W_x", "b", "A", "X", "Y_double", "Y_float")}
    Y_ref = arrays.pop("Y_double")
    Y_float = arrays.pop("Y_float")
    if Y_ref.shape != (args.D, args.L):
        raise SystemExit(f"Y_double.npy is {Y_ref.shape}, expected {(args.D, args.L)}")

    errors = [("ssmdyn float", rel_error(Y_float, Y_ref), AGREEMENT_FLOAT)]
    tensors = {}
    for dtype in (torch.float64, torch.float32):
        p = {k: torch.from_numpy(v).to(dtype) for k, v in arrays.items()}
        tensors[dtype] = p
        for name, fn in FORMS:
            with torch.no_grad():
                Y = fn(p["X"], p).numpy()
            bound = AGREEMENT_DOUBLE if dtype == torch.float64 else AGREEMENT_FLOAT
            errors.append((f"PyTorch {name} {str(dtype)[6:]}", rel_error(Y, Y_ref), bound))
    if done.returncode != 0 or timings.get("threads_bitwise_identical") is False:
        print(f"{args.ssmdyn_rhs}: its 2-thread Y differs from its 1-thread Y (exit status "
              f"{done.returncode})  DISAGREE")
        ok = False
    print("max |Y - Y_ssmdyn double| / max |Y_ssmdyn double|:")
    for name, err, bound in errors:
        good = err <= bound
        ok &= good
        print(f"  {name:<24} {err:.1e}  (<= {bound:g}){'' if good else '  DISAGREE'}")

    rows = []   # (implementation, threads, ms, is_torch_float32)
    for threads in (1, 2):
        for precision, n, key in SSMDYN_KEYS:
            if n == threads and timings.get(key) is not None:
                rows.append((f"ssmdyn {precision}", threads, float(timings[key]), False))
        blas.set_threads(threads)
        for dtype in (torch.float64, torch.float32):
            p = tensors[dtype]
            for name, fn in FORMS:
                with torch.no_grad():
                    ms = best_ms(lambda: fn(p["X"], p), args.repeats)
                rows.append((f"PyTorch {name} {str(dtype)[6:]}", threads, ms, dtype == torch.float32))
    blas.set_threads(1)

    best = {t: min((r for r in rows if r[1] == t and r[3]), key=lambda r: r[2]) for t in (1, 2)}
    print("\n| implementation | threads | ms per RHS | speed-up against the best PyTorch float32 (same threads) |")
    print("|---|---:|---:|---:|")
    for name, threads, ms, _ in rows:
        print(f"| {name} | {threads} | {ms:.4g} | {best[threads][2] / ms:.2f}x |")

    ms = {(r[0], r[1]): r[2] for r in rows}
    ref_name, _, ref_ms, _ = best[1]

    def ratio(num, den):
        return f"{num / den:.1f}x" if num is not None and den is not None else "n/a"

    print(f"\nAgainst the best PyTorch float32 form on 1 thread ({ref_name}, {ref_ms:.2f} ms"
          + ("; on the reference BLAS, so PyTorch is handicapped" if blas.reference else "") + "):")
    for precision in ("double", "float"):
        print(f"  ssmdyn {precision}, 1 thread: speed-up {ratio(ref_ms, ms.get((f'ssmdyn {precision}', 1)))}")
    print("ssmdyn on 2 threads against 1 thread: speed-up " + ", ".join(
        f"{precision} {ratio(ms.get((f'ssmdyn {precision}', 1)), ms.get((f'ssmdyn {precision}', 2)))}"
        for precision in ("double", "float")))
    return ok


# ----------------------------------------------------------------------------- part 2

def part2(args, blas):
    """The ODE solve of compare_scipy.py; returns True when the final tokens agree."""
    try:
        import scipy
        from scipy.integrate import solve_ivp
    except ImportError:
        print("Part 2 skipped: SciPy is not installed (Debian: python3-scipy).")
        return True
    import numpy as np
    import torch

    if not os.access(args.ssmdyn, os.X_OK):
        raise SystemExit(f"{args.ssmdyn} is not an executable; build it or pass --ssmdyn")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from compare_scipy import D, make_problem

    L = args.ode_L
    config = make_problem(L, args.ode_seed)
    p = {k: torch.tensor(v, dtype=torch.float64) for k, v in config["model"].items()}
    p["b"] = p.pop("delta_bias")
    blas.set_threads(1)

    def make_rhs(form):
        def rhs(t, y):
            with torch.no_grad():
                return form(torch.from_numpy(y).view(L, D).T, p).T.reshape(-1).numpy()
        return rhs

    y0 = np.array(config["tokens"], dtype=np.float64).ravel()
    speed = {name: best_ms(lambda: make_rhs(form)(0.0, y0), 5) for name, form in FORMS}
    form_name = min(speed, key=speed.get)
    print(f"Part 2: an ODE solve, the problem of compare_scipy.py (D = N = {D}, L = {L}, seed "
          f"{args.ode_seed}), t in [0, {args.t_end:g}], rtol {args.rtol:g}, atol {args.atol:g}; SciPy "
          f"{scipy.__version__} RK45 on the PyTorch {form_name} float64 right-hand side (1 thread; "
          + ", ".join(f"{n} {v:.2f} ms" for n, v in speed.items()) + ") against ssmdyn dopri5\n")

    rhs = make_rhs(dict(FORMS)[form_name])
    start = time.perf_counter()
    sol = solve_ivp(rhs, (0.0, args.t_end), y0, method="RK45", rtol=args.rtol, atol=args.atol)
    sp_seconds = time.perf_counter() - start
    if not sol.success:
        raise SystemExit(f"solve_ivp failed: {sol.message}")

    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, f"problem_{L}.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        command = [args.ssmdyn, "simulate", config_path, "--t-end", str(args.t_end), "--stepper", "dopri5",
                   "--rtol", str(args.rtol), "--atol", str(args.atol), "--error-norm", "rms"]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    ss = json.loads(done.stdout)
    if ss["status"] != "completed":
        raise SystemExit(f"ssmdyn simulate ended with status {ss['status']}")

    x_sp = sol.y[:, -1]
    x_ss = np.array(ss["tokens"], dtype=np.float64).ravel()
    diff = float(np.max(np.abs(x_sp - x_ss)) / np.max(np.abs(x_sp)))
    ok = diff <= AGREEMENT_DOUBLE
    print("| solver | steps | RHS evaluations | solve seconds |")
    print("|---|---:|---:|---:|")
    print(f"| SciPy RK45 + PyTorch {form_name} | {len(sol.t) - 1} | {sol.nfev} | {sp_seconds:.3f} |")
    print(f"| ssmdyn dopri5 | {ss['steps']} | {ss['rhs_evaluations']} | {ss['solve_seconds']:.4f} |")
    print(f"\nssmdyn solves {sp_seconds / ss['solve_seconds']:.1f}x faster; final tokens: max |diff| / max |x| "
          f"= {diff:.1e} (<= {AGREEMENT_DOUBLE:g}){'' if ok else '  DISAGREE'}"
          + (f"; ssmdyn took {ss['stiff_steps']} stiff (rosenbrock4) steps" if ss.get("stiff_steps") else ""))
    return ok


# ----------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ssmdyn-rhs", default="build/bin/real_size_rhs", help="the real_size_rhs program")
    parser.add_argument("--ssmdyn", default="build/bin/ssmdyn", help="the ssmdyn program (part 2)")
    parser.add_argument("--D", type=int, default=1536)
    parser.add_argument("--N", type=int, default=16)
    parser.add_argument("--L", type=int, default=1024)
    parser.add_argument("--R", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (best of), after a warm-up")
    parser.add_argument("--no-rhs", action="store_true", help="skip part 1")
    parser.add_argument("--no-scipy", action="store_true", help="skip part 2 (the ODE solve)")
    parser.add_argument("--ode-L", type=int, default=256, help="tokens of the part 2 problem")
    parser.add_argument("--ode-seed", type=int, default=2025)
    parser.add_argument("--t-end", type=float, default=10.0)
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--atol", type=float, default=1e-10)
    parser.add_argument("--small", action="store_true",
                        help="smoke test: D = L = 64, R = 8, 2 repeats; part 2 with L = 16, t_end = 1")
    args = parser.parse_args()
    if args.small:
        args.D, args.L, args.R, args.repeats, args.ode_L, args.t_end = 64, 64, 8, 2, 16, 1.0

    try:
        import numpy
        import torch
    except ImportError as e:
        print(f"compare_torch.py skipped: {e.name} is not installed (Debian: python3-torch)")
        return 0

    blas = Blas()
    print(f"PyTorch {torch.__version__}, NumPy {numpy.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; BLAS: {blas.description}")
    if blas.reference:
        print("WARNING: PyTorch runs on the reference BLAS; its matrix products are many times slower "
              "than with OpenBLAS (Debian: libopenblas0-openmp), which makes PyTorch look slower here.")
    print()
    ok = True
    if not args.no_rhs:
        ok &= part1(args, blas)
    if not args.no_scipy:
        if not args.no_rhs:
            print()
        ok &= part2(args, blas)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
