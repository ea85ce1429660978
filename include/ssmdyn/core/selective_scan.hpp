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
#include "detail/enum_names.hpp"
#include "detail/simd.hpp"

namespace ssmdyn {
namespace detail {

/// Per-thread scratch of the scan: the projections of a block of tokens, the hidden state
/// h (D×N) and per-token vectors. Sized once per (D, N, block); later calls of the same
/// size allocate nothing.
template <typename Scalar>
struct ScanWorkspace {
    MatrixX<Scalar> delta, decay0, B, C;            // Δ = φ(S_Δ X + b_Δ), e^{Δ ⊙ A_{·,0}} (D×block); S_B X, S_C X (N×block)
    MatrixX<Scalar> h;                              // h_l (D×N)
    Eigen::Array<Scalar, Eigen::Dynamic, 1> u;      // zero-order hold: e^{Δ_l A_{·,n}} − 1 (D)
    VectorX<Scalar> x, y;                           // x_l and y_l (D), contiguous for the kernel

    void resize(Eigen::Index d, Eigen::Index n, Eigen::Index block) {
        delta.resize(d, block);
        decay0.resize(d, block);
        B.resize(n, block);
        C.resize(n, block);
        h.resize(d, n);
        u.resize(d);
        x.resize(d);
        y.resize(d);
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
template <typename Scalar, typename StepSizeMap, typename XDerived, typename YDerived>
void selective_scan(const S6Params<Scalar>& params, const StepSizeMap& phi,
                    const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<YDerived>& Y_,
                    const LayerOptions<Scalar>& options) {
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
        selective_scan(params, phi, tokens, out, options);
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

    // Tokens go in blocks: the projections of a block as three matrix products (far faster
    // than a matrix-vector product per token), then the recurrence through the block. A
    // block's scratch, 4·block·D doubles, stays in cache, and Eigen keeps its packing
    // buffers on the stack (no allocation while D·max(D, N) ≤ 8192).
    const Eigen::Index L = X.cols(), block = std::clamp<Eigen::Index>(4096 / D, 16, 1024);
    auto& ws = detail::ScanWorkspace<Scalar>::local();
    ws.resize(D, n_state, std::min(block, L));
    const detail::DecayPattern pattern = zoh ? detail::DecayPattern::General : detail::decay_pattern(params.A);
    auto kernel = pattern == detail::DecayPattern::General    ? detail::scan_token<detail::DecayPattern::General, Scalar>
                  : pattern == detail::DecayPattern::Harmonic ? detail::scan_token<detail::DecayPattern::Harmonic, Scalar>
                                                              : detail::scan_token<detail::DecayPattern::Equal, Scalar>;
    ws.h.setZero();
    for (Eigen::Index first = 0; first < L; first += block) {
        const Eigen::Index count = std::min(block, L - first);
        const auto tokens = X.middleCols(first, count);
        auto delta = ws.delta.leftCols(count), decay0 = ws.decay0.leftCols(count);
        auto B = ws.B.leftCols(count), C = ws.C.leftCols(count);
        delta.noalias() = params.S_Delta * tokens;
        B.noalias() = params.S_B * tokens;
        C.noalias() = params.S_C * tokens;
        delta.colwise() += params.delta_bias;
        auto delta_array = delta.array();
        detail::apply_step_size(phi, delta_array, delta_array);  // entrywise, so in place is safe
        if (pattern != detail::DecayPattern::General) {
            // The structured layouts' one exponential per channel and token, in one long
            // vectorised loop.
            decay0.array() = delta.array().colwise() * params.A.col(0).array();
            decay0.array() = decay0.array().exp();
        }
        for (Eigen::Index j = 0; j < count; ++j) {
            const Eigen::Index l = first + j;
            ws.x = X.col(l);
            const VectorX<Scalar>& x = ws.x;
            if (zoh) {
                ws.y.setZero();
                for (Eigen::Index n = 0; n < n_state; ++n) {
                    const auto a = params.A.col(n).array();
                    ws.u = (a * delta.col(j).array()).expm1();  // e^{ΔA} − 1, accurate for small ΔA
                    ws.h.col(n).array() = (ws.u + 1) * ws.h.col(n).array() + ws.u / a * x.array() * B(n, j);
                    ws.y += ws.h.col(n) * C(n, j);
                }
            } else {
                kernel(ws.h.data(), params.A.data(), params.A.outerStride(), &delta(0, j), &decay0(0, j), ws.x.data(),
                       &B(0, j), &C(0, j), ws.y.data(), D, n_state);
            }
            Y.col(l) = ws.y;
            if (skip) Y.col(l) += options.D_skip.cwiseProduct(x);
            if (gate) {
                const auto z = options.gate.col(l).array();
                Y.col(l).array() *= z / (1 + (-z).exp());  // silu(z) = z·sigmoid(z)
            }
        }
    }
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
    MatrixX<Scalar> Delta(D, L), B(N, L), C(N, L);
    for (Eigen::Index l = 0; l < L; ++l) {
        for (Eigen::Index d = 0; d < D; ++d)
            Delta(d, l) = phi(Scalar(params.S_Delta.row(d).dot(X.col(l)) + params.delta_bias(d)));
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
    const Eigen::MatrixBase<Eigen::Map<MatrixX<double>>>&, const LayerOptions<double>&);
}  // namespace ssmdyn
#endif
