#pragma once
/// \file selective_scan.hpp
/// The S6 layer y = S6(X) computed by the selective scan, and the O(L²) double-sum
/// formula it must equal (kept as an independent reference for tests and benchmarks).

#include <algorithm>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

#include "params.hpp"
#include "state.hpp"
#include "step_size.hpp"
#include "parallel_for.hpp"
#include "detail/enum_names.hpp"
#include "detail/projection.hpp"
#include "detail/simd.hpp"

namespace ssmdyn {
namespace detail {

/// Tokens per block of the scan: enough for the projections to run at matrix-product speed,
/// few enough that a block's projections ((2D+2N)·block numbers with its tokens and
/// outputs) stay in the L2 cache. Independent of the thread count (see selective_scan).
inline Eigen::Index scan_block(Eigen::Index D, Eigen::Index N) {
    return std::clamp<Eigen::Index>(65536 / (3 * D + 2 * N), 128, 256);
}

/// Tokens per chunk of the projections: the unit of work of one thread, the same for every
/// thread count. A chunk's matrix product is large enough for Eigen's kernels and small
/// enough that its packing buffers stay on the stack at the sizes the tests check.
constexpr Eigen::Index kProjectionChunk = 32;

/// Channels per chunk of the recurrence on `threads` threads: a whole number of SIMD packets
/// (16 lanes covers AVX-512 floats), so every channel takes the same code path (packet or
/// scalar tail) whatever the chunks, and at least 32 channels so a chunk is worth a thread.
template <typename Scalar>
Eigen::Index channel_chunk(Eigen::Index D, int threads) {
    constexpr Eigen::Index lanes = 16, smallest = 32;
    if (threads <= 1) return std::max<Eigen::Index>(D, 1);
    const Eigen::Index share = (D + threads - 1) / threads;
    return std::max(smallest, (share + lanes - 1) / lanes * lanes);
}

/// Per-thread scratch of the scan: a block's tokens, projections (rows Δ, B, C), structured
/// decays e^{Δ ⊙ A_{·,0}} and outputs, the hidden state h (D×N) and the stacked projection
/// matrix. Sized once per (D, N, R, block); later calls of the same size allocate nothing.
template <typename Scalar>
struct ScanWorkspace {
    MatrixX<Scalar> x, proj, decay0, y;             // D×block, (D+2N)×block, D×block, D×block
    MatrixX<Scalar> h;                              // h_l (D×N)
    Eigen::Array<Scalar, Eigen::Dynamic, 1> u;      // zero-order hold: e^{Δ_l A_{·,n}} − 1 (D)
    StackedProjection<Scalar> stack;

    void resize(const S6Params<Scalar>& params, Eigen::Index block) {
        const Eigen::Index d = params.dim(), n = params.state_dim();
        x.resize(d, block);
        proj.resize(d + 2 * n, block);
        decay0.resize(d, block);
        y.resize(d, block);
        h.resize(d, n);
        u.resize(d);
        stack.set(params);
        stack.reserve(block);
    }

    /// One workspace per thread and scalar type: the scan stays allocation-free and a
    /// system shared between threads (e.g. passed with std::ref) needs no locking.
    static ScanWorkspace& local() {
        thread_local ScanWorkspace ws;
        return ws;
    }
};

/// The layout of A, by exact comparison (a trained layer is General).
template <typename Scalar>
DecayPattern decay_pattern(const MatrixX<Scalar>& A) {
    const auto first = A.col(0).array();
    bool equal = true, harmonic = true;
    for (Eigen::Index n = 1; n < A.cols(); ++n) {
        equal = equal && (A.col(n).array() == first).all();
        harmonic = harmonic && (A.col(n).array() == Scalar(n + 1) * first).all();
    }
    return equal ? DecayPattern::Equal : harmonic ? DecayPattern::Harmonic : DecayPattern::General;
}

}  // namespace detail

/// How the input term is discretised over one step Δ (per channel d and state n).
enum class Discretization {
    /// Mamba's kernel: B̄ = Δ·B. The default, and the one whose continuous limit is the ODE.
    Simplified,
    /// Zero-order hold: B̄ = (ΔA)^{-1}(e^{ΔA} − 1)·Δ·B = expm1(Δ·A_{d,n}) / A_{d,n} · B_n.
    ZeroOrderHold
};

/// "simplified" or "zero_order_hold".
inline const char* to_string(Discretization d) {
    return d == Discretization::ZeroOrderHold ? "zero_order_hold" : "simplified";
}

/// The Discretization called `name` (as printed by to_string); throws std::invalid_argument.
inline Discretization parse_discretization(const std::string& name) {
    static constexpr Discretization all[] = {Discretization::Simplified, Discretization::ZeroOrderHold};
    return detail::parse_enum(name, all, "discretization");
}

/// What a real Mamba layer has beyond the paper's S6. All off by default, which is the
/// layer whose continuous limit is dX/dt = S6(X).
template <typename Scalar = double>
struct LayerOptions {
    /// Discretisation of the input term.
    Discretization discretization = Discretization::Simplified;
    /// Skip term: y_l += D_skip ⊙ x_l (Mamba's D). Empty: off; else length D.
    VectorX<Scalar> D_skip;
    /// Gate input z (D×L, column l for token l): y_l ← y_l ⊙ silu(z_l). Empty: off.
    MatrixX<Scalar> gate;
};

/// Selective scan: Y = S6(X) in O(L·D·(D+N)) time and O(D·N) extra memory (a thread-local
/// scratch, reused across calls).
///
/// \f[ h_l = e^{A \odot \Delta_l} \odot h_{l-1} + (\Delta_l \odot x_l)\, B_l^\top,\qquad
///     y_l = h_l\, C_l,\qquad h_0 = 0 \f]
/// (h_l is D×N; the exponential and products are entrywise, Δ_l broadcast along rows.)
/// This is the recurrence of Mamba's reference selective scan (delta_softplus with
/// delta_bias, input-dependent B and C); `options` adds its zero-order-hold variant, the
/// skip term and the gate.
///
/// \param params  the layer (assumed valid: see S6Params::validate)
/// \param phi     the step-size map (see step_size.hpp)
/// \param X       D×L tokens, column l is token l, or the flat state (length D·L)
/// \param Y       the output in the same form as X, written; may not alias X
/// \param options discretisation, skip and gate (sizes checked: std::invalid_argument)
/// \param threads OpenMP threads for this one scan (1: the calling thread alone; without
///                OpenMP always 1). Channels and token chunks are split between them and
///                the result is bitwise the same for every thread count. Leave it at 1
///                inside parallel sweeps, which already use every core.
template <typename Scalar, typename StepSizeMap, typename XDerived, typename YDerived>
void selective_scan(const S6Params<Scalar>& params, const StepSizeMap& phi,
                    const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<YDerived>& Y_,
                    const LayerOptions<Scalar>& options, int threads = 1) {
    auto& Y = const_cast<Eigen::MatrixBase<YDerived>&>(Y_);  // Eigen's idiom for writable expressions
    const Eigen::Index n_state = params.state_dim(), D = params.dim();
    if (D >= 1 && X.rows() != D && X.cols() == 1 && X.rows() % D == 0) {
        // Flat state in, flat state out: through D×L copies (the ODE's system maps its state
        // without copying and never comes this way).
        if (Y.rows() != X.rows() || Y.cols() != 1)
            throw std::invalid_argument("selective_scan: X is a flat state of " + std::to_string(X.rows()) +
                                        " entries, so Y must be one too; Y is " + std::to_string(Y.rows()) + "x" +
                                        std::to_string(Y.cols()));
        const MatrixX<Scalar> tokens = to_token_matrix(X, D, "X");
        MatrixX<Scalar> out(D, tokens.cols());
        selective_scan(params, phi, tokens, out, options, threads);
        Y = Eigen::Map<const VectorX<Scalar>>(out.data(), out.size());
        return;
    }
    if (X.rows() != D || Y.rows() != X.rows() || Y.cols() != X.cols())
        throw std::invalid_argument("selective_scan: X is " + std::to_string(X.rows()) + "x" +
                                    std::to_string(X.cols()) + " and Y " + std::to_string(Y.rows()) + "x" +
                                    std::to_string(Y.cols()) + "; both must be D x L with D = " + std::to_string(D));
    const bool skip = options.D_skip.size() != 0, gate = options.gate.size() != 0;
    if (skip && options.D_skip.size() != D)
        throw std::invalid_argument("D_skip has " + std::to_string(options.D_skip.size()) +
                                    " entries, expected D = " + std::to_string(D));
    if (gate && (options.gate.rows() != D || options.gate.cols() != X.cols()))
        throw std::invalid_argument("gate must be D x L = " + std::to_string(D) + "x" +
                                    std::to_string(X.cols()));
    const bool zoh = options.discretization == Discretization::ZeroOrderHold;

    // Tokens go in blocks. Per block: the projections of chunks of kProjectionChunk tokens
    // as matrix products with the stacked [S_Δ; S_B; S_C] (S_Δ low rank: two products),
    // then the recurrence through the block for chunks of channels (channels are
    // independent). Threads take chunks of either kind; the chunks are the same for every
    // thread count and no chunk's arithmetic depends on which thread runs it, so every
    // thread count gives the same bits.
    const Eigen::Index L = X.cols(), block = std::min(detail::scan_block(D, n_state), L);
    auto& ws = detail::ScanWorkspace<Scalar>::local();
    ws.resize(params, block);
    const detail::DecayPattern pattern = zoh ? detail::DecayPattern::General : detail::decay_pattern(params.A);
    auto kernel = pattern == detail::DecayPattern::General    ? detail::scan_token<detail::DecayPattern::General, Scalar>
                  : pattern == detail::DecayPattern::Harmonic ? detail::scan_token<detail::DecayPattern::Harmonic, Scalar>
                                                              : detail::scan_token<detail::DecayPattern::Equal, Scalar>;
    ws.h.setZero();
    const Eigen::Index column_chunks = (block + detail::kProjectionChunk - 1) / detail::kProjectionChunk;
    const Eigen::Index channel_width = detail::channel_chunk<Scalar>(D, threads);
    const Eigen::Index channel_chunks = (D + channel_width - 1) / channel_width;
    const Eigen::Index rows = D + 2 * n_state;

    // Projections of tokens [first + c·chunk, …) of the block starting at `first`.
    auto project = [&](Eigen::Index first, Eigen::Index count, Eigen::Index c) {
        const Eigen::Index begin = c * detail::kProjectionChunk;
        if (begin >= count) return;
        const Eigen::Index width = std::min(detail::kProjectionChunk, count - begin);
        auto x = ws.x.middleCols(begin, width);
        x = X.middleCols(first + begin, width);
        auto proj = ws.proj.block(0, begin, rows, width);
        ws.stack.apply(x, proj, begin);
        auto delta = proj.topRows(D);
        delta.colwise() += params.delta_bias;
        auto delta_array = delta.array();
        detail::apply_step_size(phi, delta_array, delta_array);  // entrywise, so in place is safe
        if (pattern != detail::DecayPattern::General)  // the structured layouts' one exp per channel
            ws.decay0.middleCols(begin, width).array() = (delta.array().colwise() * params.A.col(0).array()).exp();
    };
    // The recurrence through the block for channels [c·width, …).
    auto recur = [&](Eigen::Index count, Eigen::Index c) {
        const Eigen::Index d0 = c * channel_width, dn = std::min(channel_width, D - d0);
        for (Eigen::Index j = 0; j < count; ++j) {
            Scalar* y = &ws.y(d0, j);
            const Scalar* x = &ws.x(d0, j);
            const Scalar* B = &ws.proj(D, j);
            const Scalar* C = &ws.proj(D + n_state, j);
            if (zoh) {
                auto yv = ws.y.col(j).segment(d0, dn);
                yv.setZero();
                const auto xv = ws.x.col(j).segment(d0, dn).array();
                const auto step = ws.proj.col(j).segment(d0, dn).array();
                for (Eigen::Index n = 0; n < n_state; ++n) {
                    const auto a = params.A.col(n).segment(d0, dn).array();
                    auto u = ws.u.segment(d0, dn);
                    u = (a * step).expm1();  // e^{ΔA} − 1, accurate for small ΔA
                    auto hn = ws.h.col(n).segment(d0, dn).array();
                    hn = (u + 1) * hn + u / a * xv * B[n];
                    yv += ws.h.col(n).segment(d0, dn) * C[n];
                }
            } else {
                kernel(&ws.h(d0, 0), D, &params.A(d0, 0), params.A.outerStride(), &ws.proj(d0, j),
                       &ws.decay0(d0, j), x, B, C, y, dn, n_state);
            }
        }
    };
    // The output of tokens [first + c·chunk, …): skip and gate by whole columns, since a
    // vectorised exp over a range of channels may take its scalar path for other channels
    // than over all of them.
    auto output = [&](Eigen::Index first, Eigen::Index count, Eigen::Index c) {
        const Eigen::Index begin = c * detail::kProjectionChunk;
        if (begin >= count) return;
        const Eigen::Index width = std::min(detail::kProjectionChunk, count - begin);
        auto out = Y.middleCols(first + begin, width);
        out = ws.y.middleCols(begin, width);
        if (skip) out += (ws.x.middleCols(begin, width).array().colwise() * options.D_skip.array()).matrix();
        if (gate) {
            const auto z = options.gate.middleCols(first + begin, width).array();
            out.array() *= z / (1 + (-z).exp());  // silu(z) = z·sigmoid(z)
        }
    };
    detail::SerialEigenProducts serial_products;
    // Threads only when the recurrence splits: at small D (one chunk of channels) the
    // barriers would cost more than the projections' share gains.
    const int team = static_cast<int>(std::min<Eigen::Index>(std::max(threads, 1), channel_chunks));
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
        for (Eigen::Index first = 0; first < L; first += block) {
            const Eigen::Index count = std::min(block, L - first);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (Eigen::Index c = 0; c < column_chunks; ++c) project(first, count, c);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (Eigen::Index c = 0; c < channel_chunks; ++c) recur(count, c);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (Eigen::Index c = 0; c < column_chunks; ++c) output(first, count, c);
        }
    }
    (void)team;
}
/// The S6 layer of the paper (Mamba's discretisation, no skip, no gate): the right-hand
/// side of dX/dt = S6(X).
template <typename Scalar, typename StepSizeMap, typename XDerived, typename YDerived>
void selective_scan(const S6Params<Scalar>& params, const StepSizeMap& phi,
                    const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<YDerived>& Y) {
    selective_scan(params, phi, X, Y, LayerOptions<Scalar>{});
}

/// Selective scan with the default step-size map (softplus).
template <typename Scalar, typename XDerived, typename YDerived>
void selective_scan(const S6Params<Scalar>& params, const Eigen::MatrixBase<XDerived>& X,
                    const Eigen::MatrixBase<YDerived>& Y) {
    selective_scan(params, Softplus{}, X, Y);
}

/// The same layer from its defining double sum, in O(L²·D·N) time:
/// \f[ y_l^d = \sum_{j\le l}\Big[\sum_n C_{l,n}\, e^{A_{d,n}\sum_{k=j+1}^{l}\Delta_k^d}\,
///     B_{j,n}\Big]\Delta_j^d x_j^d . \f]
/// Written independently of selective_scan so that each checks the other.
template <typename Scalar, typename StepSizeMap = Softplus>
MatrixX<Scalar> selective_scan_reference(const S6Params<Scalar>& params, const MatrixX<Scalar>& X,
                                         const StepSizeMap& phi = {}) {
    const Eigen::Index D = X.rows(), L = X.cols(), N = params.state_dim();
    const MatrixX<Scalar> S_Delta = params.step_matrix();
    MatrixX<Scalar> Delta(D, L), B(N, L), C(N, L);
    for (Eigen::Index l = 0; l < L; ++l) {
        for (Eigen::Index d = 0; d < D; ++d)
            Delta(d, l) = phi(Scalar(S_Delta.row(d).dot(X.col(l)) + params.delta_bias(d)));
        B.col(l) = params.S_B * X.col(l);
        C.col(l) = params.S_C * X.col(l);
    }
    MatrixX<Scalar> Y = MatrixX<Scalar>::Zero(D, L);
    for (Eigen::Index l = 0; l < L; ++l)
        for (Eigen::Index d = 0; d < D; ++d) {
            Scalar elapsed = 0;  // Σ_{k=j+1..l} Δ_k^d, grown as j walks down from l
            for (Eigen::Index j = l; j >= 0; --j) {
                if (j < l) elapsed += Delta(d, j + 1);
                Scalar kernel = 0;
                for (Eigen::Index n = 0; n < N; ++n)
                    kernel += C(n, l) * std::exp(params.A(d, n) * elapsed) * B(n, j);
                Y(d, l) += kernel * Delta(d, j) * X(d, j);
            }
        }
    return Y;
}

}  // namespace ssmdyn

#ifdef SSMDYN_EXTERN_TEMPLATES
// The right-hand side of SelectiveSystem<double>, compiled once in src/instances.cpp for
// the project's own programs (see simulate.hpp).
namespace ssmdyn {
extern template void selective_scan<double, Softplus, Eigen::Map<const MatrixX<double>>, Eigen::Map<MatrixX<double>>>(
    const S6Params<double>&, const Softplus&, const Eigen::MatrixBase<Eigen::Map<const MatrixX<double>>>&,
    const Eigen::MatrixBase<Eigen::Map<MatrixX<double>>>&, const LayerOptions<double>&, int);
}  // namespace ssmdyn
#endif
