#pragma once
/// \file causal_jacobian.hpp
/// The exact Jacobian J = ∂S6(X)/∂X of the layer at a state, in the structure causality
/// gives it, and the shifted solve (c·I − J) v = r that a linearly implicit (Rosenbrock)
/// step needs, in O(L·D·(D + N)) per solve instead of a dense (L·D)³ factorisation.
///
/// Token l's output depends on tokens j <= l only, so J is block lower-triangular with
/// D×D blocks J_lj. The off-diagonal part acts through the scan's own recurrence: tokens
/// j < l reach token l only through the state h_{l−1}, so (Σ_{j<l} J_lj v_j) is the tangent
/// scan (scan_derivatives.hpp) carried to token l with the tangent of token l itself set to
/// zero. The solve is therefore a forward sweep over tokens,
///   v_l = (c·I − J_ll)^{−1} (r_l + Σ_{j<l} J_lj v_j),
/// with the diagonal blocks J_ll formed once per linearisation (D tangent directions per
/// token) and factorised once per shift c. Memory: D²·L numbers for the blocks and their
/// factors, plus the projections of the tokens.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/LU>

#include "params.hpp"
#include "scan_derivatives.hpp"
#include "selective_scan.hpp"
#include "state.hpp"
#include "step_size.hpp"
#include "system.hpp"

namespace ssmdyn {

/// The Jacobian of S6 at a state X, block lower-triangular in tokens, with the shifted
/// solve and the product it allows (see the file comment).
///
/// \code
/// ssmdyn::CausalJacobian<double> jac(params);
/// jac.linearize(x);               // the flat D·L state
/// jac.factorize(1.0 / (gamma * h));
/// jac.solve(r, v);                // (I/(γh) − J) v = r
/// \endcode
///
/// Not thread-safe: one object per thread (it holds its own scratch).
///
/// \tparam ScalarT     floating-point type
/// \tparam StepSizeMap the map Δ = φ(S_Δ x + b_Δ), with a derivative (Softplus has one)
template <typename ScalarT = double, typename StepSizeMap = Softplus>
class CausalJacobian {
public:
    using Scalar = ScalarT;
    using State = StateVector<Scalar>;
    using Params = S6Params<Scalar>;

    /// \param params  the layer (validated here; throws std::invalid_argument)
    /// \param phi     the step-size map
    /// \param options discretisation, skip and gate, as for selective_scan (a gate fixes L)
    explicit CausalJacobian(Params params, StepSizeMap phi = {}, LayerOptions<Scalar> options = {})
        : CausalJacobian(std::make_shared<const Params>(validated(std::move(params))), std::move(phi),
                         std::move(options)) {}

    /// Shares the parameters (no copy), e.g. those of a SelectiveSystem.
    CausalJacobian(std::shared_ptr<const Params> params, StepSizeMap phi, LayerOptions<Scalar> options = {})
        : m_params(std::move(params)), m_phi(std::move(phi)), m_options(std::move(options)) {
        const Params& p = *m_params;
        const Eigen::Index D = p.dim(), N = p.state_dim();
        if (m_options.D_skip.size() != 0 && m_options.D_skip.size() != D)
            throw std::invalid_argument("CausalJacobian: D_skip has " + std::to_string(m_options.D_skip.size()) +
                                        " entries, expected D = " + std::to_string(D));
        if (m_options.gate.size() != 0 && m_options.gate.rows() != D)
            throw std::invalid_argument("CausalJacobian: the gate has " + std::to_string(m_options.gate.rows()) +
                                        " rows, expected D = " + std::to_string(D));
        m_zoh = m_options.discretization == Discretization::ZeroOrderHold;
        m_pattern = m_zoh ? detail::DecayPattern::General : detail::decay_pattern(p.A);
        m_P.resize(D + 2 * N, D);
        m_P << p.S_Delta, p.S_B, p.S_C;
    }

    /// Token dimension D.
    Eigen::Index dim() const { return m_params->dim(); }
    /// Tokens L of the last linearisation.
    Eigen::Index tokens() const { return m_X.cols(); }

    /// Bytes the blocks and their factors of an L-token state take (what linearize and
    /// factorize allocate, dominated by 2·D²·L numbers).
    std::size_t bytes_for(Eigen::Index L) const {
        const auto D = static_cast<std::size_t>(dim()), N = static_cast<std::size_t>(m_params->state_dim());
        return sizeof(Scalar) * static_cast<std::size_t>(L) * (2 * D * D + 3 * D + 2 * N + 2 * D);
    }

    /// Linearises at the flat state x (D·L, finite): stores what the sweeps need and forms
    /// the diagonal blocks J_ll.
    void linearize(const State& x) {
        const Eigen::Index D = dim();
        if (x.size() == 0 || x.size() % D != 0)
            throw std::invalid_argument("CausalJacobian::linearize: the state has " + std::to_string(x.size()) +
                                        " entries, not a positive multiple of D = " + std::to_string(D));
        const Eigen::Index L = x.size() / D;
        if (m_options.gate.size() != 0 && m_options.gate.cols() != L)
            throw std::invalid_argument("CausalJacobian::linearize: the gate has " +
                                        std::to_string(m_options.gate.cols()) + " columns but the state " +
                                        std::to_string(L) + " tokens");
        m_X = token_matrix(x, D);
        m_proj.noalias() = m_P * m_X;
        auto z = m_proj.topRows(D);
        z.colwise() += m_params->delta_bias;
        m_dphi.resize(D, L);
        m_dphi.array() = detail::step_size_derivative(m_phi, z.array());
        auto delta = z.array();
        detail::apply_step_size(m_phi, delta, delta);
        if (m_pattern != detail::DecayPattern::General)
            m_decay0 = (m_proj.topRows(D).array().colwise() * m_params->A.col(0).array()).exp().matrix();
        if (m_options.gate.size() != 0) {
            const auto g = m_options.gate.array();
            m_silu = (g / (1 + (-g).exp())).matrix();
        } else {
            m_silu.resize(0, 0);
        }
        m_factored = false;
        form_blocks();
    }

    /// ε · max_l ‖J_ll‖_∞ ‖x_l‖_∞ at the last linearisation: about how much rounding the
    /// tokens to double precision (ε) changes S6(X). The spectrum of J is the union of the
    /// blocks' spectra (J is block-triangular), so this also bounds ε·ρ(J)·|x|. When it
    /// exceeds |S6(X)| itself, the right-hand side is noise at that state.
    Scalar roundoff_bound() const { return m_roundoff; }

    /// The diagonal block J_ll = ∂S6(X)_l/∂x_l (D×D) of the last linearisation.
    auto block(Eigen::Index l) const { return m_blocks.middleRows(l * dim(), dim()); }

    /// Factorises c·I − J_ll for every token (LU with partial pivoting), for solve().
    void factorize(Scalar shift) {
        const Eigen::Index D = dim(), L = tokens();
        m_lu.resize(static_cast<std::size_t>(L));
        m_shifted.resize(D, D);
        for (Eigen::Index l = 0; l < L; ++l) {
            m_shifted = -block(l);
            m_shifted.diagonal().array() += shift;
            m_lu[static_cast<std::size_t>(l)].compute(m_shifted);
        }
        m_factored = true;
    }

    /// Solves (c·I − J) v = r by the forward sweep, c the shift of the last factorize().
    /// A singular block gives non-finite entries (a caller's step then fails and shrinks).
    void solve(const State& r, State& v) {
        if (!m_factored) throw std::logic_error("CausalJacobian::solve: call factorize() after linearize()");
        check_size(r, "solve");
        v.resize(r.size());
        dispatch([&](auto kernel) { sweep<true>(kernel, r, v); });
    }

    /// out = J·v by the same sweep (for checks: it equals selective_scan_jvp's tangent).
    void multiply(const State& v, State& out) {
        check_size(v, "multiply");
        out.resize(v.size());
        dispatch([&](auto kernel) { sweep<false>(kernel, v, out); });
    }

private:
    template <detail::DecayPattern P, bool Z>
    struct Kernel {
        static constexpr detail::DecayPattern pattern = P;
        static constexpr bool zoh = Z;
    };

    template <typename F>
    void dispatch(F&& f) {
        using detail::DecayPattern;
        if (m_zoh) return f(Kernel<DecayPattern::General, true>{});
        switch (m_pattern) {
            case DecayPattern::Equal: return f(Kernel<DecayPattern::Equal, false>{});
            case DecayPattern::Harmonic: return f(Kernel<DecayPattern::Harmonic, false>{});
            case DecayPattern::General: return f(Kernel<DecayPattern::General, false>{});
        }
    }

    static Params validated(Params p) {
        p.validate();
        return p;
    }

    void check_size(const State& v, const char* what) const {
        if (m_X.size() == 0) throw std::logic_error(std::string("CausalJacobian::") + what + ": call linearize() first");
        if (v.size() != m_X.size())
            throw std::invalid_argument(std::string("CausalJacobian::") + what + ": the vector has " +
                                        std::to_string(v.size()) + " entries, expected D·L = " +
                                        std::to_string(m_X.size()));
    }

    /// Token l's data for the tangent kernel, at the linearisation point.
    detail::TokenData<Scalar> token(Eigen::Index l) const {
        const Eigen::Index D = dim(), N = m_params->state_dim();
        detail::TokenData<Scalar> t;
        t.D = D;
        t.N = N;
        t.A = m_params->A.data();
        t.lda = m_params->A.outerStride();
        t.delta = &m_proj(0, l);
        t.B = &m_proj(D, l);
        t.C = &m_proj(D + N, l);
        t.x = &m_X(0, l);
        if (m_pattern != detail::DecayPattern::General) t.decay0 = &m_decay0(0, l);
        return t;
    }

    /// The tangents of token l's own direction v (D): dΔ, dB, dC into m_dproj.
    void token_tangents(Eigen::Index l, const Scalar* v) {
        const Eigen::Index D = dim();
        m_dproj.noalias() = m_P * Eigen::Map<const VectorX<Scalar>>(v, D);
        m_dproj.head(D).array() *= m_dphi.col(l).array();
    }

    /// Token l's row scale (the gate's silu) applied to a D-vector.
    void gate_row(Eigen::Index l, Scalar* y) const {
        if (m_silu.size() == 0) return;
        Eigen::Map<VectorX<Scalar>>(y, dim()).array() *= m_silu.col(l).array();
    }

    /// The diagonal blocks in closed form, with h_{l−1} fixed (ā = e^{AΔ}, β = Δ or
    /// expm1(AΔ)/A, β' = ∂β/∂Δ = 1 or ā, H the D×N states):
    ///   J_ll = H_l S_C + diag(φ' ⊙ g) S_Δ + diag(x) (β ⊙ C) S_B + diag((β ⊙ B ⊙ C) 1)
    /// with g = (A ⊙ ā ⊙ H_{l−1}) C + x ⊙ ((β' ⊙ B) C). The per-token factors are stacked
    /// (token l in rows l·D …) so that the products are two GEMMs over all tokens instead
    /// of D tangent scans per token. Also the bound for roundoff_bound().
    void form_blocks() {
        const Eigen::Index D = dim(), N = m_params->state_dim(), L = tokens();
        const auto& A = m_params->A;
        m_H.setZero(D, N);
        m_Hs.resize(D * L, N);
        m_Bc.resize(D * L, N);
        m_g.resize(D * L);
        m_diag.resize(D * L);
        for (Eigen::Index l = 0; l < L; ++l) {
            m_delta = m_proj.col(l).head(D);  // contiguous, so that exp below vectorises
            const auto delta = m_delta.array();
            const auto B = m_proj.col(l).segment(D, N);
            const auto C = m_proj.col(l).segment(D + N, N);
            const auto x = m_X.col(l).array();
            m_decay = A.array().colwise() * delta;
            m_decay.array() = m_decay.array().exp();  // ā, D×N
            if (m_zoh) {
                m_beta = ((A.array().colwise() * delta).unaryExpr([](Scalar v) {
                    using std::expm1;
                    return expm1(v);
                }) / A.array()).matrix();
                m_dbeta = m_decay;
            } else {
                m_beta = delta.matrix().replicate(1, N);
                m_dbeta.setOnes(D, N);
            }
            auto g = m_g.segment(l * D, D);
            g.noalias() = (A.array() * m_decay.array() * m_H.array()).matrix() * C;
            g.array() += x * ((m_dbeta.array().rowwise() * B.transpose().array()).matrix() * C).array();
            g.array() *= m_dphi.col(l).array();
            // H_l = ā ⊙ H_{l−1} + β ⊙ (x Bᵀ); β ⊙ C for the S_B term and its diagonal part.
            m_H = (m_decay.array() * m_H.array() + m_beta.array() * (x.matrix() * B.transpose()).array()).matrix();
            m_Hs.middleRows(l * D, D) = m_H;
            auto betac = m_Bc.middleRows(l * D, D);
            betac = (m_beta.array().rowwise() * C.transpose().array()).matrix();
            m_diag.segment(l * D, D).noalias() = betac * B;
        }
        const auto x = Eigen::Map<const VectorX<Scalar>>(m_X.data(), D * L);
        m_blocks.noalias() = m_Hs * m_params->S_C;
        m_T.noalias() = m_Bc * m_params->S_B;  // (β ⊙ C) S_B per token
        m_blocks.array() += m_T.array().colwise() * x.array();
        m_blocks.array() += m_params->S_Delta.replicate(L, 1).array().colwise() * m_g.array();
        if (m_options.D_skip.size() != 0) m_diag += m_options.D_skip.replicate(L, 1);
        m_roundoff = Scalar(0);
        for (Eigen::Index l = 0; l < L; ++l) {
            auto J = m_blocks.middleRows(l * D, D);
            J.diagonal() += m_diag.segment(l * D, D);
            if (m_silu.size() != 0) J = m_silu.col(l).asDiagonal() * J;
            m_roundoff = std::max(m_roundoff, J.cwiseAbs().rowwise().sum().maxCoeff() * m_X.col(l).cwiseAbs().maxCoeff());
        }
        m_roundoff *= std::numeric_limits<Scalar>::epsilon();
    }

    /// The forward sweep: Solve: out = (c·I − J)^{−1} in; else out = J·in.
    template <bool Solve, typename K>
    void sweep(K, const State& in, State& out) {
        const Eigen::Index D = dim(), N = m_params->state_dim(), L = tokens();
        m_h.setZero(D * N);
        m_dh.setZero(D * N);
        m_htmp.resize(D * N);
        m_dhtmp.resize(D * N);
        m_zero.setZero(std::max(D, N));
        m_dy.resize(D);
        m_rhs.resize(D);
        for (Eigen::Index l = 0; l < L; ++l) {
            const auto t = token(l);
            // What the earlier tokens' tangents bring to token l through h_{l−1} (the
            // kernel also advances the primal state to h_l and the tangent by the decay).
            m_htmp = m_h;
            const Scalar* zero = m_zero.data();
            detail::tangent_token<K::pattern, K::zoh>(t, zero, zero, zero, zero, m_h.data(), m_dh.data(), m_dy.data());
            gate_row(l, m_dy.data());
            if constexpr (Solve) {
                m_rhs = in.segment(l * D, D) + m_dy;
                out.segment(l * D, D) = m_lu[static_cast<std::size_t>(l)].solve(m_rhs);
                m_rhs = out.segment(l * D, D);
            } else {
                m_rhs = in.segment(l * D, D);
                out.segment(l * D, D).noalias() = block(l) * m_rhs;
                out.segment(l * D, D) += m_dy;
            }
            // Token l's own direction (now in m_rhs) enters the state for the tokens after it.
            if (l + 1 == L) break;
            token_tangents(l, m_rhs.data());
            m_dhtmp.setZero();
            detail::tangent_token<K::pattern, K::zoh>(t, m_dproj.data(), m_rhs.data(), m_dproj.data() + D,
                                                      m_dproj.data() + D + N, m_htmp.data(), m_dhtmp.data(),
                                                      m_dy.data());
            m_dh += m_dhtmp;
        }
    }

    std::shared_ptr<const Params> m_params;
    StepSizeMap m_phi;
    LayerOptions<Scalar> m_options;
    bool m_zoh = false, m_factored = false;
    detail::DecayPattern m_pattern = detail::DecayPattern::General;
    MatrixX<Scalar> m_P;                       // [S_Δ; S_B; S_C]
    MatrixX<Scalar> m_X, m_proj, m_dphi, m_decay0, m_silu;  // the linearisation point
    MatrixX<Scalar> m_blocks, m_shifted;       // J_ll stacked (D·L×D, token l in rows l·D …)
    MatrixX<Scalar> m_H, m_Hs, m_Bc, m_T, m_decay, m_beta, m_dbeta;  // form_blocks' scratch
    VectorX<Scalar> m_g, m_diag, m_delta;
    Scalar m_roundoff = Scalar(0);
    std::vector<Eigen::PartialPivLU<MatrixX<Scalar>>> m_lu;
    VectorX<Scalar> m_h, m_htmp, m_dh, m_dhtmp, m_dproj, m_dy, m_rhs, m_zero;  // scratch
};

/// The structured Jacobian of a SelectiveSystem's right-hand side, sharing its parameters.
/// Defined only for a differentiable step-size map (one with `derivative`).
template <typename Scalar, typename StepSizeMap,
          std::enable_if_t<detail::has_scalar_derivative<StepSizeMap, Scalar>::value, int> = 0>
CausalJacobian<Scalar, StepSizeMap> causal_jacobian(const SelectiveSystem<Scalar, StepSizeMap>& system) {
    return CausalJacobian<Scalar, StepSizeMap>(system.shared_params(), system.step_size_map());
}

/// J(x)·v for a SelectiveSystem's right-hand side at the flat state x, by the tangent scan
/// (selective_scan_jvp): one product costs about 1.2 evaluations of the right-hand side.
template <typename Scalar, typename StepSizeMap,
          std::enable_if_t<detail::has_scalar_derivative<StepSizeMap, Scalar>::value, int> = 0>
void causal_jvp(const SelectiveSystem<Scalar, StepSizeMap>& system, const StateVector<Scalar>& x,
                const StateVector<Scalar>& v, StateVector<Scalar>& out) {
    const Eigen::Index D = system.dim();
    out.resize(x.size());
    auto Y = token_matrix(out, D);
    selective_scan_jvp(system.params(), system.step_size_map(), token_matrix(x, D), token_matrix(v, D), Y,
                       LayerOptions<Scalar>{});
}

}  // namespace ssmdyn
