#!/usr/bin/env python3
"""The stiff family of issue 12 integrated independently of ssmdyn: SciPy's Radau IIA
(order 5, L-stable) with an exact Jacobian, on a right-hand side written in NumPy from the
formulas (nothing of ssmdyn is called).

The systems are those of benchmarks/stiff_family.cpp, read from the files its --dump DIR
writes (DIR/seed_<s>.txt: parameters, tokens X0 and ssmdyn's right-hand side F0 = S6(X0),
all at %.17g). For each seed:

1. the right-hand side below is checked against F0, both its token-by-token scan and the
   chunked one used for the integration (max |f - F0| / max |F0| <= 1e-12; exit status 1
   otherwise);
2. the Jacobian (see `jacobian`) is checked against the complex-step directional
   derivative of the whole right-hand side, Im f(X0 + i eps v) / eps, for two random v,
   and the block solve by its residual for one real and one complex shift (relative 1e-12);
3. solve_ivp(method=BlockRadau, rtol=1e-10, atol=1e-12) integrates to t_end. Status
   "blow_up": max |x| reached the dump's blowup_norm (1e8; a terminal event located on
   Radau's dense output), t_blowup is that time; "radau_failed": Radau stopped because its
   step fell below the spacing of the floating-point numbers, t_blowup is where (on the
   seeds seen so far this happens at max |x| ~ 3e4 with steps ~ 2e-15 and |x| growing
   1.5 % a step: RK45 and DOP853 restarted there fail at once too, so the singularity is
   within ~1e-12 of that time); "completed"; "time_limit" (--radau-seconds spent).
   tau = max|x| / max|dx/dt| at the end is the time scale left there.

The right-hand side, for X = [x_0 ... x_{L-1}] (D x L), token by token:
    z_l = S_Delta x_l + b,  Delta_l = softplus(z_l),  B_l = S_B x_l,  C_l = S_C x_l,
    h_l[d, n] = exp(Delta_l[d] A[d, n]) h_{l-1}[d, n] + Delta_l[d] B_l[n] x_l[d],  h_{-1} = 0,
    y_l[d] = sum_n C_l[n] h_l[d, n],      dX/dt = Y,
on the flat state in column-major order (token l is entries l*D .. l*D + D - 1).

The Jacobian is block lower-triangular in tokens (y_l depends on x_m for m <= l only) with
dense D x D blocks, L(L+1)/2 of them. It is never formed: for m < l,
    dy_l/dx_m = (E_l o ... o E_{m+1} o dh_m/dx_m) C_l,   E_l = exp(Delta_l A)   (o entrywise),
so it is kept as E_l, G_l = dh_l/dx_l (D x D x N) and the diagonal blocks dy_l/dx_l, the
last two by complex-step differentiation of one token's update (x_l + i eps e_j, h_{l-1}
real; exact to rounding with eps = 1e-100). A product with J is one forward sweep over the
tokens carrying T_l = sum_{m<=l} dh_l/dx_m v_m:
    T_l = E_l o T_{l-1} + G_l . v_l,   (J v)_l = (E_l o T_{l-1}) C_l + J_ll v_l,
and so is the solve of (c I - J) z = b that Radau needs (c = one of its eigenvalues over
h), with z_l = (c I - J_ll)^{-1} (b_l + (E_l o T_{l-1}) C_l), taken K = 4 tokens at a time
(block_lu inverts each chunk's 4D x 4D block from the D x D diagonal inverses). An exact
direct solve in O(L D^2 N) instead of a dense (L D)^3 factorisation (this NumPy links the
reference BLAS). The eigenvalues of J are those of its diagonal blocks.

Usage (NumPy and SciPy; on Debian run it with /usr/bin/python3):
    build/bin/stiff_family --dump stiff_dump > ssmdyn.csv
    /usr/bin/python3 benchmarks/stiff_family_radau.py stiff_dump --out radau.csv --ssmdyn-csv ssmdyn.csv
    /usr/bin/python3 benchmarks/stiff_family_radau.py stiff_dump --seeds 3 --check-only
    /usr/bin/python3 benchmarks/stiff_family_radau.py stiff_dump --from-csv radau.csv --ssmdyn-csv ssmdyn.csv
Options: --seeds SPEC (e.g. 1-30 or 3,7; default: every seed file in DIR), --rtol (1e-10),
--atol (1e-12), --jobs P (seeds in P processes), --radau-seconds S (processor-time budget
of one seed, 0: none), --out FILE (the Radau CSV, also printed), --resume (keep the seeds
already in --out), --from-csv FILE (read Radau results instead of integrating),
--ssmdyn-csv FILE (print the markdown comparison table; rows whose blow-up times differ by
more than --agreement, 1e-6 relative, whose ssmdyn status is not blow_up/completed, or
slower than --max-seconds, 10, are marked ** and make the exit status 1), --check-only
(checks 1 and 2 only). A seed takes 1-2 minutes of processor time when Radau reaches the
blow-up; seeds on which it crawls stop at --radau-seconds.
"""

import argparse
import csv
import os
import re
import sys
import time

import numpy as np
from scipy.integrate import solve_ivp
from scipy.integrate._ivp.radau import Radau
from scipy.special import expit

EPS_CS = 1e-100          # complex-step increment
RHS_TOLERANCE = 1e-12    # check 1
JAC_TOLERANCE = 1e-12    # check 2
FIELDS = ["seed", "rhs_rel_err", "jac_rel_err", "status", "t_blowup", "t_final", "max_abs_x", "tau",
          "steps", "nfev", "njev", "nlu", "seconds", "cpu_seconds", "message"]


# ----------------------------------------------------------------------------- the dump

def load_dump(path):
    """The problem of one seed: a dict with D, N, L, t_end, rtol, atol, blowup_norm and the
    matrices S_B, S_C, S_Delta, delta_bias (D,), A, X0, F0 (D x L)."""
    with open(path) as f:
        head = f.readline().split()
        if head[:2] != ["stiff_family", "seed"]:
            raise ValueError(f"{path}: not a stiff_family dump")
        p = {"seed": int(head[2])}
        for key, value in zip(head[3::2], head[4::2]):
            p[key] = int(value) if key in ("D", "N", "L") else float(value)
        while True:
            line = f.readline()
            if not line:
                break
            name, rows, cols = line.split()
            rows, cols = int(rows), int(cols)
            m = np.array([[float(v) for v in f.readline().split()] for _ in range(rows)])
            if m.shape != (rows, cols):
                raise ValueError(f"{path}: {name} is not {rows} x {cols}")
            p[name] = m
    p["delta_bias"] = p["delta_bias"][:, 0]
    return p


def to_tokens(y, D):
    """Flat state (column-major D x L) -> D x L."""
    return y.reshape(-1, D).T


def to_flat(X):
    return X.T.reshape(-1)


# ----------------------------------------------------------------------------- the model

def softplus(z):
    """softplus(z) = ln(1 + e^z). Real: np.logaddexp (no overflow, full precision for very
    negative z). Complex, for complex-step differentiation (z = a + i b, b tiny):
    softplus(a) + i b sigmoid(a), the analytic extension to first order in b, which is exact
    in floating point when b ~ eps = 1e-100 (the b^2 terms are below 1e-200 relative)."""
    if np.iscomplexobj(z):
        return np.logaddexp(0.0, z.real) + 1j * z.imag * expit(z.real)
    return np.logaddexp(0.0, z)


class TimeLimit(Exception):
    pass


class Model:
    """dX/dt = S6(X) for one dumped system, on the flat state."""

    def __init__(self, p):
        self.D, self.N, self.L = p["D"], p["N"], p["L"]
        self.S_B, self.S_C, self.S_Delta = p["S_B"], p["S_C"], p["S_Delta"]
        self.b, self.A = p["delta_bias"], p["A"]
        self.nrhs = 0
        self.solver = None
        self.deadline = None

    def projections(self, X):
        """Delta, B, C (D x L, N x L, N x L) and E[l] = exp(Delta_l A) (L x D x N)."""
        Delta = softplus(self.S_Delta @ X + self.b[:, None])
        E = np.exp(Delta.T[:, :, None] * self.A[None, :, :])
        return Delta, self.S_B @ X, self.S_C @ X, E

    def scan(self, X, keep_h=False):
        """Y = S6(X) (D x L) by the recurrence, token by token; with keep_h also
        H[l] = h_l (L x D x N). The reference: checked against ssmdyn's F0, and fast_scan
        against it."""
        D, N, L = self.D, self.N, self.L
        Delta, Bm, Cm, E = self.projections(X)
        W = (Delta * X).T[:, :, None] * Bm.T[:, None, :]      # W[l] = (Delta_l o x_l) B_l^T
        H = np.empty((L, D, N), dtype=W.dtype)
        h = np.zeros((D, N), dtype=W.dtype)
        for l in range(L):
            np.multiply(E[l], h, out=h)
            h += W[l]
            H[l] = h
        Y = np.einsum("ldn,nl->dl", H, Cm)
        if keep_h:
            return Y, (Delta, Bm, Cm, E, H)
        return Y

    def fast_scan(self, X, keep_h=False):
        """The same recurrence in chunks of K tokens (fewer, larger NumPy operations): the
        scan inside every chunk from h = 0, all chunks at once; then the state entering
        each chunk, chunk by chunk; then h_l = (local scan)_l + (E_{qK} o ... o E_l) o h_in."""
        D, N, L = self.D, self.N, self.L
        K = next(k for k in (16, 8, 4, 2, 1) if L % k == 0)
        nC = L // K
        Delta, Bm, Cm, E = self.projections(X)
        W = ((Delta * X).T[:, :, None] * Bm.T[:, None, :]).reshape(nC, K, D, N)
        E = E.reshape(nC, K, D, N)
        local = np.empty_like(W)
        acc = np.zeros((nC, D, N), dtype=W.dtype)
        for i in range(K):
            acc *= E[:, i]
            acc += W[:, i]
            local[:, i] = acc
        P = np.cumprod(E, axis=1)
        h_in = np.zeros((nC, D, N), dtype=W.dtype)
        for q in range(1, nC):
            h_in[q] = P[q - 1, -1] * h_in[q - 1] + local[q - 1, -1]
        H = (local + P * h_in[:, None]).reshape(L, D, N)
        Y = np.einsum("ldn,nl->dl", H, Cm)
        if keep_h:
            return Y, (Delta, Bm, Cm, E.reshape(L, D, N), H)
        return Y

    def rhs(self, t, y):
        self.nrhs += 1
        if self.deadline is not None and self.nrhs % 64 == 0 and time.process_time() > self.deadline:
            raise TimeLimit()
        return to_flat(self.fast_scan(to_tokens(y, self.D)))

    def jacobian(self, y):
        """The exact Jacobian at y in block form (see the module comment)."""
        D, N, L = self.D, self.N, self.L
        X = to_tokens(y, D)
        _, (Delta, Bm, Cm, E, H) = self.fast_scan(X, keep_h=True)
        H_prev = np.concatenate([np.zeros((1, D, N)), H[:-1]])
        # One token's update for every token l and every direction j at once, x_l + i eps e_j:
        Xc = X.T[:, None, :] + 1j * EPS_CS * np.eye(D)[None, :, :]            # [l, j, d]
        Dc = softplus(Xc @ self.S_Delta.T + self.b)                            # [l, j, d]
        Bc, Cc = Xc @ self.S_B.T, Xc @ self.S_C.T                              # [l, j, n]
        hc = np.exp(Dc[..., None] * self.A) * H_prev[:, None] + (Dc * Xc)[..., None] * Bc[:, :, None, :]
        yc = np.einsum("ljdn,ljn->ljd", hc, Cc)
        G = (hc.imag / EPS_CS).reshape(L, D, D * N)                            # [l, j, (d, n)]
        Jd = np.transpose(yc.imag / EPS_CS, (0, 2, 1)).copy()                  # [l, d, j]
        return BlockJacobian(E, G, np.ascontiguousarray(Cm.T), Jd)


class BlockJacobian:
    """J in block form: E[l] (D x N), G[l] = dh_l/dx_l (D x D*N, row j), C[l] (N) and
    the diagonal blocks Jd[l] = dy_l/dx_l (D x D); for the solver, also the tokens in
    chunks of K (see block_solve)."""

    def __init__(self, E, G, C, Jd, K=None):
        self.E, self.G, self.C, self.Jd = E, G, C, Jd
        self.L, self.D, self.N = E.shape
        self.shape = (self.L * self.D,) * 2
        self._chunks(K if K is not None else next(k for k in (4, 2, 1) if self.L % k == 0))
        self._complex = None

    def matvec(self, v):
        """J v, token by token (the forward sweep of the module comment)."""
        D, N = self.D, self.N
        V = v.reshape(self.L, D)
        out = np.empty_like(V)
        T = np.zeros((D, N), dtype=v.dtype)
        for l in range(self.L):
            T *= self.E[l]
            out[l] = T @ self.C[l] + self.Jd[l] @ V[l]
            T += (V[l] @ self.G[l]).reshape(D, N)
        return out.reshape(-1)

    def _chunks(self, K):
        """Chunk q holds tokens qK .. qK+K-1. With t = T_{qK-1} flattened (D*N) coming in:
        Jin[q]  the chunk's own (K D) x (K D) block of J (its diagonal blocks included),
        PC[q]   K x D x N: the coupling of the earlier tokens into the chunk's token i is
                sum_n PC[q, i, d, n] T[d, n], PC[q, i] = (E_{qK} o ... o E_{qK+i}) C_{qK+i},
        Q[q]    (K D) x (D N) and last[q] (D N): T after the chunk = last[q] o t + z Q[q]
                for the chunk's part z of the solution."""
        L, D, N = self.L, self.D, self.N
        nC, DN = L // K, D * N
        E = self.E.reshape(nC, K, D, N)
        G = self.G.reshape(nC, K, D, D, N)
        C = self.C.reshape(nC, K, N)
        P = np.cumprod(E, axis=1)                                    # P[:, i] = E_{qK} o ... o E_{qK+i}
        tail = np.ones_like(E)                                       # tail[:, i] = E_{qK+i+1} o ... o E_{qK+K-1}
        for i in range(K - 2, -1, -1):
            tail[:, i] = tail[:, i + 1] * E[:, i + 1]
        self.PC = P * C[:, :, None, :]
        self.Q = (tail[:, :, None] * G).reshape(nC, K * D, DN)
        self.last = P[:, -1].reshape(nC, DN)
        Jin = np.zeros((nC, K * D, K * D))
        Tan = np.zeros((nC, K * D, D, N))                            # tangents of h for the chunk's directions
        for i in range(K):
            Tan[:, : i * D] *= E[:, i][:, None]
            Jin[:, i * D:(i + 1) * D, : i * D] = np.einsum("cjdn,cn->cdj", Tan[:, : i * D], C[:, i])
            Jin[:, i * D:(i + 1) * D, i * D:(i + 1) * D] = self.Jd.reshape(nC, K, D, D)[:, i]
            Tan[:, i * D:(i + 1) * D] = G[:, i]
        self.K, self.nC = K, nC
        # couplings[k]: for the sub-chunks of s = 2^k tokens, paired into 2s, the block of J
        # from the first of a pair to the second (s D x s D), pair by pair in token order
        self.couplings = []
        s = 1
        while s < K:
            m = K // (2 * s)
            blocks = Jin.reshape(nC, m, 2 * s * D, m, 2 * s * D)[:, np.arange(m), :, np.arange(m), :]
            self.couplings.append(np.ascontiguousarray(blocks.swapaxes(0, 1).reshape(nC * m, 2 * s * D, 2 * s * D)
                                                       [:, s * D:, : s * D]))
            s *= 2

    def complex_Q(self):
        """Q as a complex array (made once, for the complex solves)."""
        if self._complex is None:
            self._complex = self.Q.astype(complex)
        return self._complex

    def dense(self):
        """The (L D) x (L D) matrix, column by column (for tests on small problems only)."""
        n = self.shape[0]
        return np.column_stack([self.matvec(np.eye(n)[:, k]) for k in range(n)])


class _Identity:
    """Stands for Radau's identity so that `c * I - J` (its only use) builds the shifted
    Jacobian lazily instead of two dense (L D)^2 matrices."""
    __array_ufunc__ = None   # make numpy scalars defer to __rmul__

    def __init__(self, c=1.0):
        self.c = c

    def __rmul__(self, c):
        return _Identity(c * self.c)

    __mul__ = __rmul__

    def __sub__(self, J):
        return (self.c, J)


def block_lu(shifted):
    """Factor c I - J: the inverse of each chunk's (K D) x (K D) block, from the inverses
    of its D x D diagonal blocks by doubling, ([[A, 0], [-B, C]]^-1 = [[A^-1, 0],
    [C^-1 B A^-1, C^-1]]), B the couplings inside the chunk (BlockJacobian.couplings)."""
    c, J = shifted
    D = J.D
    inv = np.linalg.inv(c * np.eye(D) - J.Jd)                       # (L, D, D)
    s = 1
    for coupling in J.couplings:                                     # sub-chunks of s tokens -> 2s
        a, b = inv[0::2], inv[1::2]
        n = s * D
        new = np.zeros((a.shape[0], 2 * n, 2 * n), dtype=inv.dtype)
        new[:, :n, :n] = a
        new[:, n:, n:] = b
        new[:, n:, :n] = b @ coupling @ a
        inv, s = new, 2 * s
    return c, J, inv


def block_solve(factors, b):
    """(c I - J) z = b by a forward sweep over the chunks of tokens."""
    c, J, inv = factors
    Q = J.complex_Q() if np.iscomplexobj(inv) else J.Q
    dtype = np.result_type(b, inv)
    B = b.reshape(J.nC, -1)
    Z = np.empty(B.shape, dtype=dtype)
    T = np.zeros((J.D, J.N), dtype=dtype)
    last, PC = J.last.reshape(J.nC, J.D, J.N), J.PC
    for q in range(J.nC):
        z = inv[q] @ (B[q] + (PC[q] * T).sum(axis=2).reshape(-1))
        Z[q] = z
        T = last[q] * T + (z @ Q[q]).reshape(J.D, J.N)
    return Z.reshape(-1)


class BlockRadau(Radau):
    """SciPy's Radau with the block Jacobian and block solver above (the method, its error
    control and its step-size and Newton logic are SciPy's, unchanged)."""

    def __init__(self, fun, t0, y0, t_bound, model=None, **options):
        self.model = model
        self.accepted = 0
        super().__init__(fun, t0, y0, t_bound, **options)
        self.I = _Identity()
        self.lu = self._lu
        self.solve_lu = block_solve
        model.solver = self

    def _validate_jac(self, jac, sparsity):
        def wrapped(t, y, _=None):
            self.njev += 1
            return self.model.jacobian(y)
        self.njev = 0
        return wrapped, wrapped(self.t, self.y)

    def _lu(self, shifted):
        self.nlu += 1
        return block_lu(shifted)

    def _step_impl(self):
        ok, message = super()._step_impl()
        if ok:
            self.accepted += 1
        return ok, message


# ----------------------------------------------------------------------------- one seed

def check(model, p, rng):
    """Checks 1 and 2: (relative error of the rhs against F0, of J v against complex step)."""
    X0 = p["X0"]
    scale = np.max(np.abs(p["F0"]))
    rhs_err = max(np.max(np.abs(model.scan(X0) - p["F0"])), np.max(np.abs(model.fast_scan(X0) - p["F0"]))) / scale
    y0 = to_flat(X0)
    J = model.jacobian(y0)
    jac_err = 0.0
    for _ in range(2):
        v = rng.standard_normal(y0.size)
        cs = to_flat(model.scan(to_tokens(y0 + 1j * EPS_CS * v, model.D)).imag) / EPS_CS
        jac_err = max(jac_err, np.max(np.abs(J.matvec(v) - cs)) / np.max(np.abs(cs)))
    # the block solve inverts c I - J: check the residual for one real and one complex c
    for c in (7.3, 2.1 + 3.4j):
        v = rng.standard_normal(y0.size)
        z = block_solve(block_lu((c, J)), v)
        res = c * z - J.matvec(z.real) - 1j * J.matvec(z.imag) if np.iscomplexobj(z) else c * z - J.matvec(z)
        jac_err = max(jac_err, np.max(np.abs(res - v)) / np.max(np.abs(v)))
    return rhs_err, jac_err


def run_seed(args_tuple):
    path, rtol, atol, check_only, budget = args_tuple
    p = load_dump(path)
    model = Model(p)
    rhs_err, jac_err = check(model, p, np.random.default_rng(p["seed"]))
    row = {"seed": p["seed"], "rhs_rel_err": f"{rhs_err:.3g}", "jac_rel_err": f"{jac_err:.3g}"}
    if check_only:
        return row
    bound = p["blowup_norm"]

    def blowup(t, y):
        return np.max(np.abs(y)) - bound
    blowup.terminal, blowup.direction = True, 1

    model.nrhs = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    model.deadline = cpu_start + budget if budget > 0 else None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            sol = solve_ivp(model.rhs, (0.0, p["t_end"]), to_flat(p["X0"]), method=BlockRadau, t_eval=[p["t_end"]],
                            events=blowup, rtol=rtol, atol=atol, model=model)
    except TimeLimit:
        sol = None
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    s, nfev = model.solver, model.nrhs
    if sol is None:
        sol = type("Stopped", (), {"message": f"processor-time budget of {budget:g} s spent"})()
        status, t_blowup, t_final, y_final = "time_limit", None, s.t, s.y
    elif sol.status == 1:
        status, t_blowup, t_final = "blow_up", sol.t_events[0][0], sol.t_events[0][0]
        y_final = sol.y_events[0][0]
    elif sol.status == 0:
        status, t_blowup, t_final, y_final = "completed", None, sol.t[-1], sol.y[:, -1]
    else:
        status, t_blowup, t_final, y_final = "radau_failed", s.t, s.t, s.y
    # tau = max|x| / max|dx/dt| at the end: the time scale left there (for x ~ (T - t)^-a,
    # T - t = a tau), i.e. how far from the singularity a run that stops short of the bound is
    tau = np.max(np.abs(y_final)) / np.max(np.abs(model.rhs(t_final, y_final)))
    row.update(status=status, t_blowup="" if t_blowup is None else repr(float(t_blowup)), t_final=repr(float(t_final)),
               max_abs_x=f"{np.max(np.abs(y_final)):.3g}", tau=f"{tau:.2g}", steps=s.accepted, nfev=nfev,
               njev=s.njev, nlu=s.nlu, seconds=f"{seconds:.1f}", cpu_seconds=f"{cpu_seconds:.1f}", message=sol.message)
    return row


# ----------------------------------------------------------------------------- the table

def parse_seeds(spec):
    seeds = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def table(radau_rows, ssmdyn_csv, agreement, max_seconds):
    """The markdown table; returns (text, number of rows that fail the issue's check)."""
    with open(ssmdyn_csv) as f:
        ours = {int(r["seed"]): r for r in csv.DictReader(f)}
    lines = ["| seed | ssmdyn status | ssmdyn t_blowup | steps | stiff steps | s (cpu) | Radau t_blowup | rel. diff. |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    bad = 0
    for r in radau_rows:
        seed = int(r["seed"])
        o = ours.get(seed)
        if o is None:
            continue
        mark = ""
        rel = ""
        if o["t_blowup"] and r["t_blowup"]:
            d = abs(float(o["t_blowup"]) - float(r["t_blowup"])) / float(r["t_blowup"])
            rel = f"{d:.1e}"
            if d > agreement:
                mark = " **"
        elif o["status"] != r["status"]:
            mark = " **"
        if o["status"] not in ("blow_up", "completed") or float(o["seconds"]) > max_seconds:
            mark = " **"
        bad += mark != ""
        t_o = f"{float(o['t_blowup']):.10f}" if o["t_blowup"] else f"— ({o['status']} at {float(o['t_final']):.6g})"
        t_r = f"{float(r['t_blowup']):.10f}" if r["t_blowup"] else f"— ({r['status']})"
        secs = f"{float(o['seconds']):.2f}"
        if o.get("cpu_seconds"):
            secs += f" ({float(o['cpu_seconds']):.2f})"
        lines.append(f"| {seed} | {o['status']}{mark} | {t_o} | {o['steps']} | {o['stiff_steps']} | {secs} | {t_r} | {rel} |")
    return "\n".join(lines), bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the directory stiff_family --dump wrote")
    ap.add_argument("--seeds", help="e.g. 1-30 or 3,7 (default: every seed_<s>.txt in DIR)")
    ap.add_argument("--rtol", type=float, default=1e-10)
    ap.add_argument("--atol", type=float, default=1e-12)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", help="write the Radau CSV here too")
    ap.add_argument("--from-csv", help="read the Radau results from this CSV instead of integrating")
    ap.add_argument("--ssmdyn-csv", help="stiff_family's CSV: print the markdown comparison table")
    ap.add_argument("--agreement", type=float, default=1e-6)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--resume", action="store_true", help="keep the seeds already in --out, run the others")
    ap.add_argument("--radau-seconds", type=float, default=0.0,
                    help="processor-time budget of one Radau run (0: none); past it the seed ends in time_limit")
    args = ap.parse_args()

    if args.from_csv:
        with open(args.from_csv) as f:
            rows = list(csv.DictReader(f))
        if args.seeds:
            wanted = set(parse_seeds(args.seeds))
            rows = [r for r in rows if int(r["seed"]) in wanted]
        failed_checks = 0
    else:
        if args.seeds:
            seeds = parse_seeds(args.seeds)
        else:
            seeds = sorted(int(m.group(1)) for m in map(re.compile(r"seed_(\d+)\.txt$").match, os.listdir(args.dir)) if m)
        done = []
        if args.resume and args.out and os.path.exists(args.out):
            with open(args.out) as f:
                done = [r for r in csv.DictReader(f) if r.get("seed")]
            seeds = [s for s in seeds if s not in {int(r["seed"]) for r in done}]
        jobs = [(os.path.join(args.dir, f"seed_{s}.txt"), args.rtol, args.atol, args.check_only, args.radau_seconds)
                for s in seeds]
        writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS)
        writer.writeheader()
        sys.stdout.flush()
        out = open(args.out, "a" if done else "w", newline="") if args.out else None
        if out:
            out_writer = csv.DictWriter(out, fieldnames=FIELDS)
            if not done:
                out_writer.writeheader()
        rows = list(done)
        if args.jobs > 1:
            import multiprocessing
            results = multiprocessing.Pool(args.jobs).imap_unordered(run_seed, jobs)
        else:
            results = map(run_seed, jobs)
        for row in results:
            rows.append(row)
            writer.writerow(row)
            sys.stdout.flush()
            if out:
                out_writer.writerow(row)
                out.flush()
        failed_checks = sum(float(r["rhs_rel_err"]) > RHS_TOLERANCE or float(r["jac_rel_err"]) > JAC_TOLERANCE
                            for r in rows)
        if failed_checks:
            print(f"stiff_family_radau: {failed_checks} seeds fail the right-hand-side or Jacobian check "
                  f"(tolerances {RHS_TOLERANCE:g}, {JAC_TOLERANCE:g})", file=sys.stderr)
    rows.sort(key=lambda r: int(r["seed"]))
    bad = 0
    if args.ssmdyn_csv and not args.check_only:
        text, bad = table(rows, args.ssmdyn_csv, args.agreement, args.max_seconds)
        print()
        print(text)
        if bad:
            print(f"\n** {bad} seeds fail the check (status, time > {args.max_seconds:g} s, or blow-up times "
                  f"differing by more than {args.agreement:g} relative)")
    return 1 if failed_checks or bad else 0


if __name__ == "__main__":
    sys.exit(main())
