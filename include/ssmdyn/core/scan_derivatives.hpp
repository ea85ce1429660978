#pragma once
/// \file scan_derivatives.hpp
/// Exact derivatives of the S6 layer Y = S6(X) (the linearisation of dX/dt = S6(X)):
/// the Jacobian-vector product by a tangent scan run alongside the primal one
/// (selective_scan_jvp), and the vector-Jacobian product with every parameter gradient by a
/// reverse scan (selective_scan_vjp), both in O(L·D·(D+N)) time with no O(L²) anything.
///
/// Notation (one token l, channel d, state n; see selective_scan.hpp):
/// z_l = S_Δ x_l + b_Δ, Δ_l = φ(z_l), B_l = S_B x_l, C_l = S_C x_l, ā = e^{A Δ},
/// h_l = ā ⊙ h_{l−1} + β ⊙ (x_l B_lᵀ) with β = Δ (Mamba) or β = expm1(AΔ)/A (zero-order hold),
/// y_l = h_l C_l, s_l = y_l + D_skip ⊙ x_l, and the output s_l ⊙ silu(g_l) with the gate g.

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "params.hpp"
#include "selective_scan.hpp"
#include "state.hpp"
#include "parallel_for.hpp"
#include "step_size.hpp"
#include "detail/projection.hpp"
#include "detail/simd.hpp"

namespace ssmdyn {

/// Gradients of a scalar loss through one S6 layer, written by selective_scan_vjp: each
/// field is ∂⟨gY, S6(X)⟩/∂(field) and has the shape of the field it differentiates
/// (S6Params for the first five, LayerOptions for the last two).
template <typename Scalar = double>
struct S6Gradients {
    /// N×D, gradient with respect to S_B.
    MatrixX<Scalar> S_B;
    /// N×D, gradient with respect to S_C.
    MatrixX<Scalar> S_C;
    /// D×D, gradient with respect to S_Δ; empty when S_Δ is low rank.
    MatrixX<Scalar> S_Delta;
    /// D×R and R×D, gradients with respect to S_Δ's low-rank factors; empty when S_Δ is dense.
    MatrixX<Scalar> S_Delta_up, S_Delta_down;
    /// Length D, gradient with respect to b_Δ.
    VectorX<Scalar> delta_bias;
    /// D×N, gradient with respect to A.
    MatrixX<Scalar> A;
    /// Length D, gradient with respect to the skip D_skip; empty when the layer has no skip.
    VectorX<Scalar> D_skip;
    /// D×L, gradient with respect to the gate input z; empty when the layer has no gate.
    MatrixX<Scalar> gate;

    /// Zero gradients shaped like `params` (and like the skip and gate of `options`), to
    /// accumulate into.
    static S6Gradients zeros_like(const S6Params<Scalar>& params, const LayerOptions<Scalar>& options = {}) {
        S6Gradients g;
        g.S_B = MatrixX<Scalar>::Zero(params.S_B.rows(), params.S_B.cols());
        g.S_C = MatrixX<Scalar>::Zero(params.S_C.rows(), params.S_C.cols());
        g.S_Delta = MatrixX<Scalar>::Zero(params.S_Delta.rows(), params.S_Delta.cols());
        g.S_Delta_up = MatrixX<Scalar>::Zero(params.S_Delta_up.rows(), params.S_Delta_up.cols());
        g.S_Delta_down = MatrixX<Scalar>::Zero(params.S_Delta_down.rows(), params.S_Delta_down.cols());
        g.delta_bias = VectorX<Scalar>::Zero(params.delta_bias.size());
        g.A = MatrixX<Scalar>::Zero(params.A.rows(), params.A.cols());
        g.D_skip = VectorX<Scalar>::Zero(options.D_skip.size());
        g.gate = MatrixX<Scalar>::Zero(options.gate.rows(), options.gate.cols());
        return g;
    }

    /// *this += weight · other, field by field (both shaped alike, as zeros_like makes them).
    S6Gradients& add(const S6Gradients& other, Scalar weight = Scalar(1)) {
        S_B += weight * other.S_B;
        S_C += weight * other.S_C;
        S_Delta += weight * other.S_Delta;
        S_Delta_up += weight * other.S_Delta_up;
        S_Delta_down += weight * other.S_Delta_down;
        delta_bias += weight * other.delta_bias;
        A += weight * other.A;
        if (D_skip.size()) D_skip += weight * other.D_skip;
        if (gate.size()) gate += weight * other.gate;
        return *this;
    }
};

namespace detail {

/// Whether `phi.derivative(z)` exists for a Scalar z and gives something convertible to Scalar.
template <typename Map, typename Scalar, typename = void>
struct has_scalar_derivative : std::false_type {};

template <typename Map, typename Scalar>
struct has_scalar_derivative<Map, Scalar,
                             std::void_t<decltype(std::declval<const Map&>().derivative(std::declval<Scalar>()))>>
    : std::is_convertible<decltype(std::declval<const Map&>().derivative(std::declval<Scalar>())), Scalar> {};

/// Whether the map has an array form of its derivative, `vectorized_derivative(ArrayBase)`.
template <typename Map, typename Array, typename = void>
struct has_vectorized_derivative : std::false_type {};

template <typename Map, typename Array>
struct has_vectorized_derivative<Map, Array,
                                 std::void_t<decltype(std::declval<const Map&>().vectorized_derivative(
                                     std::declval<const Eigen::ArrayBase<Array>&>()))>> : std::true_type {};

/// φ'(z) entrywise as an expression, through the map's array form when it has one.
template <typename StepSizeMap, typename Derived>
auto step_size_derivative(const StepSizeMap& phi, const Eigen::ArrayBase<Derived>& z) {
    if constexpr (has_vectorized_derivative<StepSizeMap, Derived>::value) {
        return phi.vectorized_derivative(z);
    } else {
        using Scalar = typename Derived::Scalar;
        return z.unaryExpr([&phi](Scalar v) { return Scalar(phi.derivative(v)); });
    }
}

/// The kernels below are written once against the lane operations of detail/simd.hpp
/// (ScalarLanes, PacketLanes) and run on packets for the channels that fill them, then on
/// scalars for the rest.

/// The data of one token, every array contiguous: what the three kernels read.
template <typename Scalar>
struct TokenData {
    Eigen::Index D = 0, N = 0;
    const Scalar* A = nullptr;       ///< the decays, D×N column-major with leading dimension lda
    Eigen::Index lda = 0;
    const Scalar* delta = nullptr;   ///< Δ_l (D)
    const Scalar* decay0 = nullptr;  ///< e^{Δ_l A_{·,0}} (D), structured layouts only
    const Scalar* x = nullptr;       ///< x_l (D)
    const Scalar* B = nullptr;       ///< B_l (N)
    const Scalar* C = nullptr;       ///< C_l (N)
};

/// ∂/∂A [expm1(AΔ)/A] = Δ²·zoh_slope(AΔ) with zoh_slope(t) = (t e^t − expm1 t)/t²
/// = Σ_{k≥1} k t^{k−1}/(k+1)!. The closed form cancels for small |t|, so the series
/// (20 terms, converged to below 1e-24 for |t| < 1/2) is used there.
template <typename Scalar>
Scalar zoh_slope(Scalar t) {
    using std::abs;
    using std::exp;
    using std::expm1;
    if (abs(t) >= Scalar(0.5)) return (t * exp(t) - expm1(t)) / (t * t);
    constexpr int terms = 20;
    Scalar coefficient[terms + 1];
    Scalar factorial = 1;  // (k+1)!
    for (int k = 1; k <= terms; ++k) {
        factorial *= Scalar(k + 1);
        coefficient[k] = Scalar(k) / factorial;
    }
    Scalar sum = 0;
    for (int k = terms; k >= 1; --k) sum = sum * t + coefficient[k];
    return sum;
}

/// The input coefficient of the zero-order hold, expm1(AΔ)/A, and the decay e^{AΔ} from the
/// same expm1 (as selective_scan computes them).
template <typename Scalar>
void zoh_coefficients(Scalar a, Scalar step, Scalar& decay, Scalar& input) {
    using std::expm1;
    const Scalar em1 = expm1(a * step);
    decay = em1 + Scalar(1);
    input = em1 / a;
}

/// Primal recurrence for the channels d, d + size, … that fill whole lanes, from h_prev into h
/// (which may be the same array): h_{d,n} = ā h_prev_{d,n} + β x_d B_n. With `store` it also
/// writes the decays ā (D×N) to `decay` and y_d = Σ_n C_n h_{d,n} to y.
/// \return the first channel not processed
template <typename Lanes, DecayPattern pattern, bool zoh, bool store, typename Scalar>
Eigen::Index forward_lanes(const TokenData<Scalar>& t, const Scalar* h_prev, Scalar* h, Scalar* decay, Scalar* y,
                           Eigen::Index d) {
    using P = typename Lanes::Packet;
    static_assert(!zoh || Lanes::size == 1, "The zero-order hold runs on scalars (no SIMD expm1).");
    const Eigen::Index D = t.D;
    for (; d + Lanes::size <= D; d += Lanes::size) {
        const P step = Lanes::load(t.delta + d), xv = Lanes::load(t.x + d), u = Lanes::mul(step, xv);
        P acc = Lanes::set1(Scalar(0)), q = acc, f = acc;
        if constexpr (pattern != DecayPattern::General) f = q = Lanes::load(t.decay0 + d);
        for (Eigen::Index n = 0; n < t.N; ++n) {
            const Eigen::Index i = n * D + d;
            P v;
            if constexpr (zoh) {
                Scalar input;
                zoh_coefficients(t.A[n * t.lda + d], step, f, input);
                v = f * h_prev[i] + input * xv * t.B[n];
            } else {
                if constexpr (pattern == DecayPattern::General)
                    f = Lanes::exp(Lanes::mul(Lanes::load(t.A + n * t.lda + d), step));
                v = Lanes::madd(f, Lanes::load(h_prev + i), Lanes::mul(u, Lanes::set1(t.B[n])));
            }
            Lanes::store(h + i, v);
            if constexpr (store) {
                Lanes::store(decay + i, f);
                acc = Lanes::madd(Lanes::set1(t.C[n]), v, acc);
            }
            if constexpr (pattern == DecayPattern::Harmonic) f = Lanes::mul(f, q);
        }
        if constexpr (store) Lanes::store(y + d, acc);
    }
    return d;
}

/// Primal and tangent recurrence together (the JVP), channels that fill whole lanes:
///   h' = ā h + β x B,
///   dh' = ā (dh + dΔ A h) + dΔ x B + Δ dx B + Δ x dB                    (Mamba),
///   dh' = ā (dh + dΔ (A h + x B)) + β (dx B + x dB)                      (zero-order hold),
///   dy = Σ_n dC_n h'_n + C_n dh'_n.
/// \return the first channel not processed
template <typename Lanes, DecayPattern pattern, bool zoh, typename Scalar>
Eigen::Index tangent_lanes(const TokenData<Scalar>& t, const Scalar* ddelta, const Scalar* dx, const Scalar* dB,
                           const Scalar* dC, Scalar* h, Scalar* dh, Scalar* dy, Eigen::Index d) {
    using P = typename Lanes::Packet;
    static_assert(!zoh || Lanes::size == 1, "The zero-order hold runs on scalars (no SIMD expm1).");
    const Eigen::Index D = t.D;
    for (; d + Lanes::size <= D; d += Lanes::size) {
        const P step = Lanes::load(t.delta + d), dstep = Lanes::load(ddelta + d);
        const P xv = Lanes::load(t.x + d), dxv = Lanes::load(dx + d);
        const P u = Lanes::mul(step, xv), du = Lanes::madd(dstep, xv, Lanes::mul(step, dxv));
        P dacc = Lanes::set1(Scalar(0)), q = dacc, f = dacc;
        if constexpr (pattern != DecayPattern::General) f = q = Lanes::load(t.decay0 + d);
        for (Eigen::Index n = 0; n < t.N; ++n) {
            const Eigen::Index i = n * D + d;
            const P a = Lanes::load(t.A + n * t.lda + d), hold = Lanes::load(h + i), dhold = Lanes::load(dh + i);
            const P Bn = Lanes::set1(t.B[n]), dBn = Lanes::set1(dB[n]);
            P v, dv;
            if constexpr (zoh) {
                Scalar input;
                zoh_coefficients(a, step, f, input);
                const Scalar xb = xv * Bn;
                v = f * hold + input * xb;
                dv = f * (dhold + dstep * (a * hold + xb)) + input * (dxv * Bn + xv * dBn);
            } else {
                if constexpr (pattern == DecayPattern::General) f = Lanes::exp(Lanes::mul(a, step));
                v = Lanes::madd(f, hold, Lanes::mul(u, Bn));
                dv = Lanes::madd(f, Lanes::madd(Lanes::mul(a, dstep), hold, dhold),
                                 Lanes::madd(du, Bn, Lanes::mul(u, dBn)));
            }
            Lanes::store(h + i, v);
            Lanes::store(dh + i, dv);
            dacc = Lanes::madd(Lanes::set1(dC[n]), v, Lanes::madd(Lanes::set1(t.C[n]), dv, dacc));
            if constexpr (pattern == DecayPattern::Harmonic) f = Lanes::mul(f, q);
        }
        Lanes::store(dy + d, dacc);
    }
    return d;
}

/// Where the reverse step of one token writes.
template <typename Scalar>
struct AdjointData {
    const Scalar* gy = nullptr;      ///< ∂loss/∂y_l (D)
    const Scalar* h = nullptr;       ///< h_l (D×N)
    const Scalar* h_prev = nullptr;  ///< h_{l−1} (D×N)
    const Scalar* decay = nullptr;   ///< ā_l (D×N)
    Scalar* G = nullptr;             ///< in: ∂loss/∂h_l from the later tokens; out: from token l on, for h_{l−1}
    Scalar* gA = nullptr;            ///< ∂loss/∂A, accumulated (D×N)
    Scalar* gdelta = nullptr;        ///< ∂loss/∂Δ_l (D), written
    Scalar* gx = nullptr;            ///< the part of ∂loss/∂x_l through x_l itself (D), written
    Scalar* gB = nullptr;            ///< ∂loss/∂B_l (N), accumulated
    Scalar* gC = nullptr;            ///< ∂loss/∂C_l (N), accumulated
    Scalar* partial = nullptr;       ///< scratch, 2·N·(packet size): the sums over channels of gB, gC
};

/// Reverse step of one token, channels that fill whole lanes. With G = gy C_lᵀ + ā_{l+1} G_{l+1}
/// (the whole ∂loss/∂h_l):
///   ∂Δ_d = Σ_n G (A ā h_prev + x B_n)  [zoh: G ā (A h_prev + x B_n)],
///   ∂A_{d,n} += G Δ ā h_prev           [zoh: + G x B_n Δ² zoh_slope(AΔ)],
///   ∂x_d = Σ_n G β B_n,  ∂B_n = Σ_d G β x_d,  ∂C_n = Σ_d gy_d h_{d,n},  and G ← ā G.
/// The sums over channels collect per lane in `partial` over the packets of channels and are
/// reduced across the lanes once, at the end, into gB and gC.
/// \return the first channel not processed
template <typename Lanes, bool zoh, typename Scalar>
Eigen::Index adjoint_lanes(const TokenData<Scalar>& t, const AdjointData<Scalar>& g, Eigen::Index d) {
    using P = typename Lanes::Packet;
    static_assert(!zoh || Lanes::size == 1, "The zero-order hold runs on scalars (no SIMD expm1).");
    const Eigen::Index D = t.D, first = d;
    for (; d + Lanes::size <= D; d += Lanes::size) {
        const P step = Lanes::load(t.delta + d), xv = Lanes::load(t.x + d), gyv = Lanes::load(g.gy + d);
        const P u = Lanes::mul(step, xv);
        P gd = Lanes::set1(Scalar(0)), gbx = gd;  // Σ_n G A ā h_prev,  Σ_n G B_n (or G β B_n)
        for (Eigen::Index n = 0; n < t.N; ++n) {
            const Eigen::Index i = n * D + d;
            const P a = Lanes::load(t.A + n * t.lda + d), Bn = Lanes::set1(t.B[n]);
            const P G = Lanes::madd(gyv, Lanes::set1(t.C[n]), Lanes::load(g.G + i));
            const P hp = Lanes::load(g.h_prev + i);
            P f, gb;
            if constexpr (zoh) {
                Scalar input;
                zoh_coefficients(a, step, f, input);
                const Scalar xb = xv * Bn;
                gd += G * f * (a * hp + xb);
                g.gA[i] += G * step * (f * hp + step * zoh_slope(a * step) * xb);
                gbx += G * input * Bn;
                gb = G * input * xv;
            } else {
                f = Lanes::load(g.decay + i);
                const P ga = Lanes::mul(G, Lanes::mul(f, hp));
                gd = Lanes::madd(ga, a, gd);
                Lanes::store(g.gA + i, Lanes::madd(ga, step, Lanes::load(g.gA + i)));
                gbx = Lanes::madd(G, Bn, gbx);
                gb = Lanes::mul(G, u);
            }
            P gc = Lanes::mul(gyv, Lanes::load(g.h + i));
            Scalar* pb = g.partial + 2 * n * Lanes::size;
            Scalar* pc = pb + Lanes::size;
            if (d != first) {
                gb = Lanes::add(gb, Lanes::load(pb));
                gc = Lanes::add(gc, Lanes::load(pc));
            }
            Lanes::store(pb, gb);
            Lanes::store(pc, gc);
            Lanes::store(g.G + i, Lanes::mul(f, G));
        }
        if constexpr (zoh) {
            Lanes::store(g.gdelta + d, gd);
            Lanes::store(g.gx + d, gbx);
        } else {
            Lanes::store(g.gdelta + d, Lanes::madd(xv, gbx, gd));
            Lanes::store(g.gx + d, Lanes::mul(step, gbx));
        }
    }
    if (d != first)
        for (Eigen::Index n = 0; n < t.N; ++n) {
            g.gB[n] += Lanes::sum(Lanes::load(g.partial + 2 * n * Lanes::size));
            g.gC[n] += Lanes::sum(Lanes::load(g.partial + (2 * n + 1) * Lanes::size));
        }
    return d;
}

/// Whether the packet path applies: packets wider than one scalar, and not the zero-order
/// hold (Eigen 3.4 has no SIMD expm1 for double).
template <typename Scalar, bool zoh>
constexpr bool use_packets() {
#if SSMDYN_EIGEN_PACKETS
    return !zoh && PacketLanes<Scalar>::size > 1;
#else
    return false;
#endif
}

#if SSMDYN_EIGEN_PACKETS
template <typename Scalar, bool zoh>
using WideLanes = std::conditional_t<use_packets<Scalar, zoh>(), PacketLanes<Scalar>, ScalarLanes<Scalar>>;
#else
template <typename Scalar, bool>
using WideLanes = ScalarLanes<Scalar>;
#endif

/// One token of the primal recurrence, every channel (packets, then the scalar tail).
template <DecayPattern pattern, bool zoh, bool store, typename Scalar>
void forward_token(const TokenData<Scalar>& t, const Scalar* h_prev, Scalar* h, Scalar* decay, Scalar* y) {
    Eigen::Index d = 0;
    if constexpr (use_packets<Scalar, zoh>())
        d = forward_lanes<WideLanes<Scalar, zoh>, pattern, zoh, store>(t, h_prev, h, decay, y, d);
    forward_lanes<ScalarLanes<Scalar>, pattern, zoh, store>(t, h_prev, h, decay, y, d);
}

/// One token of the tangent recurrence, every channel.
template <DecayPattern pattern, bool zoh, typename Scalar>
void tangent_token(const TokenData<Scalar>& t, const Scalar* ddelta, const Scalar* dx, const Scalar* dB,
                   const Scalar* dC, Scalar* h, Scalar* dh, Scalar* dy) {
    Eigen::Index d = 0;
    if constexpr (use_packets<Scalar, zoh>())
        d = tangent_lanes<WideLanes<Scalar, zoh>, pattern, zoh>(t, ddelta, dx, dB, dC, h, dh, dy, d);
    tangent_lanes<ScalarLanes<Scalar>, pattern, zoh>(t, ddelta, dx, dB, dC, h, dh, dy, d);
}

/// One token of the reverse recurrence, every channel; gB and gC are overwritten.
template <bool zoh, typename Scalar>
void adjoint_token(const TokenData<Scalar>& t, const AdjointData<Scalar>& g) {
    std::fill(g.gB, g.gB + t.N, Scalar(0));
    std::fill(g.gC, g.gC + t.N, Scalar(0));
    Eigen::Index d = 0;
    if constexpr (use_packets<Scalar, zoh>()) d = adjoint_lanes<WideLanes<Scalar, zoh>, zoh>(t, g, d);
    adjoint_lanes<ScalarLanes<Scalar>, zoh>(t, g, d);
}

/// Per-thread scratch of selective_scan_jvp and selective_scan_vjp, sized once per problem
/// size; later calls of the same size allocate nothing. The two functions use separate
/// members, so alternating between them does not reallocate either.
template <typename Scalar>
struct ScanDerivativeWorkspace {
    // Both: the stacked projection [S_Δ; S_B; S_C], so one matrix product gives the three
    // projections of a token block (rows: z or Δ, then B, then C; S_Δ dense or low rank).
    StackedProjection<Scalar> stack;
    // JVP, per block of tokens: tokens and tangents, their projections, structured decays.
    MatrixX<Scalar> jx, jdx, jproj, jdproj, jdecay0;
    VectorX<Scalar> jh, jdh, jdy;
    // VJP, whole sequence: tokens, projections (Δ, B, C), φ'(z), structured decays, the
    // output gradient seen by the scan (gY ⊙ silu(gate)), sigmoid(gate), the scan output
    // (for the gate's gradient), the gradients of the projections (Δ then z, B, C), the
    // direct part of gX; per chunk: the states h and decays ā; then checkpoints.
    MatrixX<Scalar> X, proj, dphi, decay0, gs, sig, ys, grad, gxk;
    MatrixX<Scalar> checkpoints, H, decay, G, gA, GP;
    VectorX<Scalar> y, partial;

    /// One workspace per thread and scalar type (see ScanWorkspace).
    static ScanDerivativeWorkspace& local() {
        thread_local ScanDerivativeWorkspace ws;
        return ws;
    }

    void stack_params(const S6Params<Scalar>& params, Eigen::Index block) {
        stack.set(params);
        stack.reserve(block);
    }
};

/// Tokens per block of the matrix products with the stacked projection (D+2N rows): as many
/// multiply-adds per product as the scan's largest one (selective_scan, 4096/D tokens of
/// S_Δ X), so that the conditions under which the scan allocates nothing hold here too:
/// Eigen keeps its packing buffers on the stack, and when OpenMP is enabled it does not
/// split a product this small over threads (which would allocate, and cost more than it
/// saves).
inline Eigen::Index token_block(Eigen::Index D, Eigen::Index N) {
    const Eigen::Index scan_block = std::clamp<Eigen::Index>(4096 / D, 16, 1024);
    return std::max<Eigen::Index>(16, scan_block * D / (D + 2 * N));
}

/// Tokens per chunk of the reverse scan: checkpoints cost D·N·L/K numbers and a chunk's
/// states and decays 2·D·N·K, so K near √(L/2) keeps their sum smallest, and 16 ≤ K ≤ 64
/// keeps a chunk in the L2 cache for the D and N of real layers.
inline Eigen::Index vjp_chunk(Eigen::Index L) {
    Eigen::Index k = 16;
    while (k < 64 && 2 * k * k < L) k *= 2;
    return k;
}

[[noreturn]] inline void bad_size(const char* function, const std::string& what) {
    throw std::invalid_argument(std::string(function) + ": " + what);
}

inline std::string shape(Eigen::Index rows, Eigen::Index cols) {
    return std::to_string(rows) + "x" + std::to_string(cols);
}

/// Throws std::invalid_argument naming X, `name` (the second D×L argument) or the layer
/// option whose size does not fit.
template <typename Scalar>
void check_sizes(const char* function, const S6Params<Scalar>& params, Eigen::Index x_rows, Eigen::Index x_cols,
                 const char* name, Eigen::Index rows, Eigen::Index cols, const char* out_name, Eigen::Index out_rows,
                 Eigen::Index out_cols, const LayerOptions<Scalar>& options) {
    const Eigen::Index D = params.dim();
    if (x_rows != D)
        bad_size(function, "X is " + shape(x_rows, x_cols) + "; it must be D x L with D = " + std::to_string(D) +
                               " rows (column l = token l)");
    const std::string dl = shape(x_rows, x_cols);
    if (rows != x_rows || cols != x_cols)
        bad_size(function, std::string(name) + " is " + shape(rows, cols) + " but must be D x L = " + dl + " like X");
    if (out_rows != x_rows || out_cols != x_cols)
        bad_size(function,
                 std::string(out_name) + " is " + shape(out_rows, out_cols) + " but must be D x L = " + dl + " like X");
    if (options.D_skip.size() != 0 && options.D_skip.size() != D)
        bad_size(function, "D_skip has " + std::to_string(options.D_skip.size()) + " entries, expected D = " +
                               std::to_string(D));
    if (options.gate.size() != 0 && (options.gate.rows() != D || options.gate.cols() != x_cols))
        bad_size(function, "gate is " + shape(options.gate.rows(), options.gate.cols()) + " but must be D x L = " + dl);
}

/// selective_scan_jvp after the checks, for one decay layout and discretisation.
template <DecayPattern pattern, bool zoh, typename Scalar, typename StepSizeMap, typename XDerived,
          typename DXDerived, typename DYDerived>
void jvp_scan(const S6Params<Scalar>& params, const StepSizeMap& phi, const Eigen::MatrixBase<XDerived>& X,
              const Eigen::MatrixBase<DXDerived>& dX, Eigen::MatrixBase<DYDerived>& dY,
              const LayerOptions<Scalar>& options) {
    const Eigen::Index D = params.dim(), N = params.state_dim(), L = X.cols(), R = D + 2 * N;
    const Eigen::Index block = std::min(token_block(D, N), L);
    const bool skip = options.D_skip.size() != 0, gate = options.gate.size() != 0;
    const SerialEigenProducts serial_products;  // Eigen's own threads would allocate (and vary)
    auto& ws = ScanDerivativeWorkspace<Scalar>::local();
    ws.stack_params(params, block);
    ws.jx.resize(D, block);
    ws.jdx.resize(D, block);
    ws.jproj.resize(R, block);
    ws.jdproj.resize(R, block);
    if constexpr (pattern != DecayPattern::General) ws.jdecay0.resize(D, block);
    ws.jh.setZero(D * N);
    ws.jdh.setZero(D * N);
    ws.jdy.resize(D);
    TokenData<Scalar> t;
    t.D = D;
    t.N = N;
    t.A = params.A.data();
    t.lda = params.A.outerStride();
    for (Eigen::Index first = 0; first < L; first += block) {
        const Eigen::Index count = std::min(block, L - first);
        auto x = ws.jx.leftCols(count), dx = ws.jdx.leftCols(count);
        auto proj = ws.jproj.leftCols(count), dproj = ws.jdproj.leftCols(count);
        x = X.middleCols(first, count);
        dx = dX.middleCols(first, count);
        ws.stack.apply(x, proj);
        ws.stack.apply(dx, dproj);
        auto z = proj.topRows(D);
        z.colwise() += params.delta_bias;
        dproj.topRows(D).array() *= step_size_derivative(phi, z.array());  // dΔ = φ'(z) dz
        auto delta = z.array();
        apply_step_size(phi, delta, delta);  // entrywise, so in place is safe
        if constexpr (pattern != DecayPattern::General) {
            auto decay0 = ws.jdecay0.leftCols(count);
            decay0.array() = (delta.colwise() * params.A.col(0).array()).exp();
        }
        for (Eigen::Index j = 0; j < count; ++j) {
            const Eigen::Index l = first + j;
            t.delta = &proj(0, j);
            t.B = &proj(D, j);
            t.C = &proj(D + N, j);
            t.x = &x(0, j);
            if constexpr (pattern != DecayPattern::General) t.decay0 = &ws.jdecay0(0, j);
            tangent_token<pattern, zoh>(t, &dproj(0, j), &dx(0, j), &dproj(D, j), &dproj(D + N, j), ws.jh.data(),
                                        ws.jdh.data(), ws.jdy.data());
            auto out = dY.col(l);
            out = ws.jdy;
            if (skip) out += options.D_skip.cwiseProduct(dx.col(j));
            if (gate) {
                const auto g = options.gate.col(l).array();
                out.array() *= g / (1 + (-g).exp());  // silu(g); the gate does not depend on X
            }
        }
    }
}

/// selective_scan_vjp after the checks, for one decay layout and discretisation.
template <DecayPattern pattern, bool zoh, typename Scalar, typename StepSizeMap, typename XDerived,
          typename GYDerived, typename GXDerived>
void vjp_scan(const S6Params<Scalar>& params, const StepSizeMap& phi, const Eigen::MatrixBase<XDerived>& X_in,
              const Eigen::MatrixBase<GYDerived>& gY, Eigen::MatrixBase<GXDerived>& gX, S6Gradients<Scalar>& grads,
              const LayerOptions<Scalar>& options) {
    const Eigen::Index D = params.dim(), N = params.state_dim(), L = X_in.cols(), R = D + 2 * N, DN = D * N;
    const Eigen::Index block = token_block(D, N);
    const bool skip = options.D_skip.size() != 0, gate = options.gate.size() != 0;
    if (L == 0) {  // no tokens: the loss is the empty sum
        grads = S6Gradients<Scalar>::zeros_like(params, options);
        grads.gate.resize(0, 0);
        return;
    }
    const SerialEigenProducts serial_products;  // Eigen's own threads would allocate (and vary)
    auto& ws = ScanDerivativeWorkspace<Scalar>::local();
    ws.stack_params(params, block);
    auto& X = ws.X;
    X = X_in;

    // The projections of every token, kept for the reverse pass: rows Δ = φ(z), B, C.
    ws.proj.resize(R, L);
    ws.dphi.resize(D, L);
    for (Eigen::Index first = 0; first < L; first += block) {
        const Eigen::Index count = std::min(block, L - first);
        ws.stack.apply(X.middleCols(first, count), ws.proj.middleCols(first, count));
    }
    {
        auto z = ws.proj.topRows(D);
        z.colwise() += params.delta_bias;
        ws.dphi.array() = step_size_derivative(phi, z.array());
        auto delta = z.array();
        apply_step_size(phi, delta, delta);
    }
    if constexpr (pattern != DecayPattern::General) {
        ws.decay0.resize(D, L);
        ws.decay0.array() = (ws.proj.topRows(D).array().colwise() * params.A.col(0).array()).exp();
    }
    // The output gradient the scan sees: gY ⊙ silu(g) behind a gate.
    ws.gs.resize(D, L);
    if (gate) {
        ws.sig.resize(D, L);
        ws.ys.resize(D, L);
        ws.sig.array() = (Scalar(1) + (-options.gate.array()).exp()).inverse();
        ws.gs.array() = gY.array() * options.gate.array() * ws.sig.array();
    } else {
        ws.gs = gY;
    }

    auto token = [&](Eigen::Index l) {
        TokenData<Scalar> t;
        t.D = D;
        t.N = N;
        t.A = params.A.data();
        t.lda = params.A.outerStride();
        t.delta = &ws.proj(0, l);
        t.B = &ws.proj(D, l);
        t.C = &ws.proj(D + N, l);
        t.x = &X(0, l);
        if constexpr (pattern != DecayPattern::General) t.decay0 = &ws.decay0(0, l);
        return t;
    };

    // Forward: h at the start of every chunk of K tokens. The last chunk is recomputed
    // anyway, so this pass stops where it begins.
    const Eigen::Index K = vjp_chunk(L), chunks = (L + K - 1) / K;
    ws.checkpoints.resize(DN, chunks);
    ws.H.resize(DN, K + 1);
    ws.decay.resize(DN, K);
    ws.y.resize(D);
    ws.checkpoints.col(0).setZero();
    for (Eigen::Index c = 1; c < chunks; ++c) {
        Scalar* h = ws.checkpoints.col(c).data();
        std::copy(ws.checkpoints.col(c - 1).data(), ws.checkpoints.col(c - 1).data() + DN, h);
        for (Eigen::Index l = (c - 1) * K; l < c * K; ++l)
            forward_token<pattern, zoh, false>(token(l), h, h, static_cast<Scalar*>(nullptr),
                                               static_cast<Scalar*>(nullptr));
    }

    // Backward, chunk by chunk from the last: recompute the chunk's states h and decays ā
    // from its checkpoint (running h backwards by dividing by ā would amplify rounding by
    // e^{|A|Δ} per token), then walk it in reverse.
    ws.G.setZero(D, N);
    ws.gA.setZero(D, N);
    ws.grad.resize(R, L);
    ws.gxk.resize(D, L);
    ws.partial.resize(2 * N * WideLanes<Scalar, zoh>::size);
    AdjointData<Scalar> a;
    a.G = ws.G.data();
    a.gA = ws.gA.data();
    a.partial = ws.partial.data();
    for (Eigen::Index c = chunks - 1; c >= 0; --c) {
        const Eigen::Index first = c * K, count = std::min(K, L - first);
        ws.H.col(0) = ws.checkpoints.col(c);
        for (Eigen::Index j = 0; j < count; ++j) {
            forward_token<pattern, zoh, true>(token(first + j), ws.H.col(j).data(), ws.H.col(j + 1).data(),
                                              ws.decay.col(j).data(), ws.y.data());
            if (gate) ws.ys.col(first + j) = ws.y;
        }
        for (Eigen::Index j = count - 1; j >= 0; --j) {
            const Eigen::Index l = first + j;
            a.gy = &ws.gs(0, l);
            a.h = ws.H.col(j + 1).data();
            a.h_prev = ws.H.col(j).data();
            a.decay = ws.decay.col(j).data();
            a.gdelta = &ws.grad(0, l);
            a.gB = &ws.grad(D, l);
            a.gC = &ws.grad(D + N, l);
            a.gx = &ws.gxk(0, l);
            adjoint_token<zoh>(token(l), a);
        }
    }

    // Through the step-size map and the projections: z = S_Δ x + b_Δ, B = S_B x, C = S_C x.
    ws.grad.topRows(D).array() *= ws.dphi.array();
    ws.stack.parameter_gradients(X, ws.grad, block, ws.GP, grads);
    grads.delta_bias = ws.grad.topRows(D).rowwise().sum();
    grads.A = ws.gA;
    if (skip) grads.D_skip = (ws.gs.array() * X.array()).rowwise().sum();
    else grads.D_skip.resize(0);
    if (gate) {
        // ∂/∂g [s silu(g)] = s σ(g) (1 + g (1 − σ(g))), with s the output before the gate.
        const auto g = options.gate.array();
        const auto sig = ws.sig.array();
        if (skip) ws.ys.array() += X.array().colwise() * options.D_skip.array();
        grads.gate.resize(D, L);
        grads.gate.array() = gY.array() * ws.ys.array() * sig * (Scalar(1) + g * (Scalar(1) - sig));
    } else {
        grads.gate.resize(0, 0);
    }

    // gX last, after every read of X and gY.
    for (Eigen::Index first = 0; first < L; first += block) {
        const Eigen::Index count = std::min(block, L - first);
        auto out = gX.middleCols(first, count);
        if (skip)
            out = ws.gxk.middleCols(first, count) +
                  (ws.gs.middleCols(first, count).array().colwise() * options.D_skip.array()).matrix();
        else
            out = ws.gxk.middleCols(first, count);
        ws.stack.add_transpose(ws.grad.middleCols(first, count), out);
    }
}

}  // namespace detail

/// Jacobian-vector product of the S6 layer: \f$ dY = \frac{\partial\, S6(X)}{\partial X}\, dX \f$,
/// the directional derivative of selective_scan(params, phi, X, ·, options) along dX.
///
/// Runs the tangent recurrence beside the primal one, token by token (forward-mode
/// differentiation of the scan): with \f$ d\Delta = \varphi'(z) \odot S_\Delta\, dx \f$,
/// \f$ dB = S_B\, dx \f$, \f$ dC = S_C\, dx \f$,
/// \f[ dh_l = \bar a \odot \big(dh_{l-1} + A \odot d\Delta\, h_{l-1}\big)
///     + (d\Delta \odot x + \Delta \odot dx)\, B^\top + (\Delta \odot x)\, dB^\top,\qquad
///     dy_l = dh_l\, C_l + h_l\, dC_l \f]
/// (zero-order hold analogously), then the skip and gate. O(L·D·(D+N)) time; extra memory
/// 2·D·N for h and dh plus the projections of one block of tokens, in a thread-local
/// scratch: repeated calls of the same size allocate nothing (under the same size limits
/// as selective_scan, e.g. D = N = 16 at any L).
///
/// \param params  the layer (assumed valid: see S6Params::validate)
/// \param phi     the step-size map; it must have `Scalar derivative(Scalar z) const`
/// \param X       D×L tokens, column l is token l (a flat state: view it with token_matrix)
/// \param dX      D×L direction
/// \param dY      D×L output, written; may not alias X or dX
/// \param options discretisation, skip and gate, as in selective_scan
/// \throws std::invalid_argument naming X, dX, dY, D_skip or gate when its size is wrong
template <typename Scalar, typename StepSizeMap, typename XDerived, typename DXDerived, typename DYDerived>
void selective_scan_jvp(const S6Params<Scalar>& params, const StepSizeMap& phi, const Eigen::MatrixBase<XDerived>& X,
                        const Eigen::MatrixBase<DXDerived>& dX, const Eigen::MatrixBase<DYDerived>& dY_,
                        const LayerOptions<Scalar>& options) {
    // No run-time test can check this assertion; it is exercised by hand (see the tests).
    static_assert(detail::has_scalar_derivative<StepSizeMap, Scalar>::value,
                  "selective_scan_jvp needs a differentiable step-size map: give it Scalar derivative(Scalar z) const.");
    auto& dY = const_cast<Eigen::MatrixBase<DYDerived>&>(dY_);  // Eigen's idiom for writable expressions
    detail::check_sizes("selective_scan_jvp", params, X.rows(), X.cols(), "dX", dX.rows(), dX.cols(), "dY", dY.rows(),
                        dY.cols(), options);
    if (X.cols() == 0) return;
    using detail::DecayPattern;
    if (options.discretization == Discretization::ZeroOrderHold)
        return detail::jvp_scan<DecayPattern::General, true>(params, phi, X, dX, dY, options);
    switch (detail::decay_pattern(params.A)) {
        case DecayPattern::Equal:
            return detail::jvp_scan<DecayPattern::Equal, false>(params, phi, X, dX, dY, options);
        case DecayPattern::Harmonic:
            return detail::jvp_scan<DecayPattern::Harmonic, false>(params, phi, X, dX, dY, options);
        default:
            return detail::jvp_scan<DecayPattern::General, false>(params, phi, X, dX, dY, options);
    }
}

/// Jacobian-vector product of the paper's layer (Mamba's discretisation, no skip, no gate).
template <typename Scalar, typename StepSizeMap, typename XDerived, typename DXDerived, typename DYDerived>
void selective_scan_jvp(const S6Params<Scalar>& params, const StepSizeMap& phi, const Eigen::MatrixBase<XDerived>& X,
                        const Eigen::MatrixBase<DXDerived>& dX, const Eigen::MatrixBase<DYDerived>& dY) {
    selective_scan_jvp(params, phi, X, dX, dY, LayerOptions<Scalar>{});
}

/// Jacobian-vector product with the default step-size map (softplus).
template <typename Scalar, typename XDerived, typename DXDerived, typename DYDerived>
void selective_scan_jvp(const S6Params<Scalar>& params, const Eigen::MatrixBase<XDerived>& X,
                        const Eigen::MatrixBase<DXDerived>& dX, const Eigen::MatrixBase<DYDerived>& dY) {
    selective_scan_jvp(params, Softplus{}, X, dX, dY);
}

/// Vector-Jacobian product of the S6 layer and the gradients of its parameters: for the
/// loss \f$ \ell = \langle gY, S6(X)\rangle \f$, \f$ gX = (\partial S6/\partial X)^\top gY \f$
/// and every field of `grads` = ∂ℓ/∂(that parameter).
///
/// Reverse-mode differentiation of the scan, as Mamba's backward kernel does it: the
/// adjoint G_l = ∂ℓ/∂h_l runs from the last token to the first,
/// \f[ G_l = gy_l\, C_l^\top + \bar a_{l+1} \odot G_{l+1}, \f]
/// and each token's gradients (of Δ, B, C, x and A) are read off G_l, h_l and h_{l−1}.
/// Those states are not stored for the whole sequence: a forward pass keeps h at the start
/// of every chunk of K tokens (16 ≤ K ≤ 64, about √(L/2)), and each chunk, last to first, is
/// recomputed from its checkpoint before it is walked backwards. Memory:
/// O(L·(D+N)) for the projections and their gradients plus D·N·(L/K + 2K + 3) for the
/// checkpoints and one chunk; never O(L·D·N) or O(L²). Time: about two primal scans plus
/// the reverse one. The scratch is thread-local; repeated calls of the same size allocate
/// nothing (grads then keeps its storage).
///
/// \param params  the layer (assumed valid: see S6Params::validate)
/// \param phi     the step-size map; it must have `Scalar derivative(Scalar z) const`
/// \param X       D×L tokens, column l is token l
/// \param gY      D×L, ∂ℓ/∂Y (the vector of the product)
/// \param gX      D×L output, written with ∂ℓ/∂X; may not alias X or gY
/// \param grads   output, overwritten (not accumulated): every field resized to the shape
///                of its parameter; D_skip and gate are emptied when the layer has none
/// \param options discretisation, skip and gate, as in selective_scan
/// \throws std::invalid_argument naming X, gY, gX, D_skip or gate when its size is wrong
template <typename Scalar, typename StepSizeMap, typename XDerived, typename GYDerived, typename GXDerived>
void selective_scan_vjp(const S6Params<Scalar>& params, const StepSizeMap& phi, const Eigen::MatrixBase<XDerived>& X,
                        const Eigen::MatrixBase<GYDerived>& gY, const Eigen::MatrixBase<GXDerived>& gX_,
                        S6Gradients<Scalar>& grads, const LayerOptions<Scalar>& options) {
    // No run-time test can check this assertion; it is exercised by hand (see the tests).
    static_assert(detail::has_scalar_derivative<StepSizeMap, Scalar>::value,
                  "selective_scan_vjp needs a differentiable step-size map: give it Scalar derivative(Scalar z) const.");
    auto& gX = const_cast<Eigen::MatrixBase<GXDerived>&>(gX_);  // Eigen's idiom for writable expressions
    detail::check_sizes("selective_scan_vjp", params, X.rows(), X.cols(), "gY", gY.rows(), gY.cols(), "gX", gX.rows(),
                        gX.cols(), options);
    using detail::DecayPattern;
    if (options.discretization == Discretization::ZeroOrderHold)
        return detail::vjp_scan<DecayPattern::General, true>(params, phi, X, gY, gX, grads, options);
    switch (detail::decay_pattern(params.A)) {
        case DecayPattern::Equal:
            return detail::vjp_scan<DecayPattern::Equal, false>(params, phi, X, gY, gX, grads, options);
        case DecayPattern::Harmonic:
            return detail::vjp_scan<DecayPattern::Harmonic, false>(params, phi, X, gY, gX, grads, options);
        default:
            return detail::vjp_scan<DecayPattern::General, false>(params, phi, X, gY, gX, grads, options);
    }
}

/// Vector-Jacobian product of the paper's layer (Mamba's discretisation, no skip, no gate).
template <typename Scalar, typename StepSizeMap, typename XDerived, typename GYDerived, typename GXDerived>
void selective_scan_vjp(const S6Params<Scalar>& params, const StepSizeMap& phi, const Eigen::MatrixBase<XDerived>& X,
                        const Eigen::MatrixBase<GYDerived>& gY, const Eigen::MatrixBase<GXDerived>& gX,
                        S6Gradients<Scalar>& grads) {
    selective_scan_vjp(params, phi, X, gY, gX, grads, LayerOptions<Scalar>{});
}

/// Vector-Jacobian product with the default step-size map (softplus).
template <typename Scalar, typename XDerived, typename GYDerived, typename GXDerived>
void selective_scan_vjp(const S6Params<Scalar>& params, const Eigen::MatrixBase<XDerived>& X,
                        const Eigen::MatrixBase<GYDerived>& gY, const Eigen::MatrixBase<GXDerived>& gX,
                        S6Gradients<Scalar>& grads) {
    selective_scan_vjp(params, Softplus{}, X, gY, gX, grads);
}

}  // namespace ssmdyn
