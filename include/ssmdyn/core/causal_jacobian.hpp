#pragma once
/// \file causal_jacobian.hpp
/// The exact Jacobian J = ∂S6(X)/∂X of the layer at a state, in the structure causality
/// gives it, and the shifted solve (c·I − J) v = r that a linearly implicit (Rosenbrock)
/// step needs, in O(L·D·(D + N)) per solve instead of a dense (L·D)³ factorisation.
///
/// Token l's output depends on tokens j <= l only, so J is block lower-triangular with
/// D×D blocks J_lj. The off-diagonal part acts through the scan's own recurrence: tokens
/// j < l reach token l only through the state h_{l−1}, so Σ_{j<l} J_lj v_j = (ā_l ⊙ T_{l−1}) C_l
/// with T the tangent of the state (D×N), carried by T_l = ā_l ⊙ T_{l−1} + (∂h_l/∂x_l) v_l.
/// The solve is therefore a forward sweep over tokens,
///   v_l = (c·I − J_ll)^{−1} (r_l + (ā_l ⊙ T_{l−1}) C_l),
/// with the diagonal blocks J_ll formed once per linearisation (in closed form) and
/// factorised once per shift c; per token the sweep is two passes over a D×N array, a
/// small matrix-vector product and an LU solve. Memory: 2·D²·L numbers for the blocks and
/// their factors,
/// and about 5·D·N·L for what the sweep keeps of each token (ā_l, ∂h_l/∂Δ_l, h_l, …).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

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
        m_P.resize(D + 2 * N, D);
        m_P << p.S_Delta, p.S_B, p.S_C;
        m_SCB.resize(2 * N, D);
        m_SCB << p.S_C, p.S_B;
    }

    /// Token dimension D.
    Eigen::Index dim() const { return m_params->dim(); }
    /// Tokens L of the last linearisation.
    Eigen::Index tokens() const { return m_X.cols(); }

    /// Bytes the blocks, their factors and the per-token data of an L-token state take
    /// (what linearize and factorize allocate, dominated by 2·D²·L numbers).
    std::size_t bytes_for(Eigen::Index L) const {
        const auto D = static_cast<std::size_t>(dim()), N = static_cast<std::size_t>(m_params->state_dim());
        const std::size_t per_token = 2 * D * D + (m_zoh ? 5 : 4) * D * N + 6 * D + 2 * N;
        return sizeof(Scalar) * static_cast<std::size_t>(L) * per_token;
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
        m_factors.resize(D * L, D);
        m_pivots.resize(D * L);
        m_reciprocals.resize(D * L);
        m_shifted.resize(D, D);
        for (Eigen::Index l = 0; l < L; ++l) {
            m_shifted = -block(l);
            m_shifted.diagonal().array() += shift;
            m_lu.compute(m_shifted);
            m_factors.middleRows(l * D, D) = m_lu.matrixLU();
            m_reciprocals.segment(l * D, D) = m_lu.matrixLU().diagonal().cwiseInverse();
            // Row i of P·b is b[pivot(i)] (Eigen's P moves row i to indices(i)).
            const auto& to = m_lu.permutationP().indices();
            for (Eigen::Index i = 0; i < D; ++i) m_pivots(l * D + to(i)) = static_cast<int>(i);
        }
        m_factored = true;
    }

    /// Solves (c·I − J) v = r by the forward sweep, c the shift of the last factorize().
    /// A singular block gives non-finite entries (a caller's step then fails and shrinks).
    void solve(const State& r, State& v) {
        if (!m_factored) throw std::logic_error("CausalJacobian::solve: call factorize() after linearize()");
        check_size(r, "solve");
        v.resize(r.size());
        sweep<true>(r, v);
    }

    /// out = J·v by the same sweep (for checks: it equals selective_scan_jvp's tangent).
    void multiply(const State& v, State& out) {
        check_size(v, "multiply");
        out.resize(v.size());
        sweep<false>(v, out);
    }

private:
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

    /// Token l's D×N slice of a per-token store (token l in columns l·N …).
    template <typename M>
    static auto slice(M& m, Eigen::Index l, Eigen::Index N) {
        return m.middleCols(l * N, N);
    }

    /// Everything a sweep needs, in one pass over the tokens with h_{l−1} carried (ā = e^{AΔ},
    /// β = Δ or expm1(AΔ)/A, β' = ∂β/∂Δ = 1 or ā, H the D×N states):
    ///   ā_l, ∂h_l/∂Δ_l = A ⊙ ā ⊙ H_{l−1} + β' ⊙ (x Bᵀ), and β_l (zero-order hold only),
    /// and the diagonal blocks in closed form,
    ///   J_ll = H_l S_C + diag(x) (β ⊙ C) S_B + diag(φ' ⊙ g) S_Δ + diag((β ⊙ B ⊙ C) 1),
    ///   g = (∂h_l/∂Δ_l) C,
    /// the first two for all tokens as one GEMM of [H | diag(x)(β ⊙ C)] (stacked, token l in
    /// rows l·D …) with [S_C; S_B]. Also the bound for roundoff_bound().
    void form_blocks() {
        const Eigen::Index D = dim(), N = m_params->state_dim(), L = tokens();
        const auto& A = m_params->A;
        m_H.setZero(D, N);
        m_decays.resize(D, N * L);
        m_dh_ddelta.resize(D, N * L);
        if (m_zoh) m_betas.resize(D, N * L);
        m_HB.resize(D * L, 2 * N);
        m_g.resize(D * L);
        m_diag.resize(D * L);
        for (Eigen::Index l = 0; l < L; ++l) {
            m_delta = m_proj.col(l).head(D);  // contiguous, so that exp below vectorises
            const auto delta = m_delta.array();
            const auto B = m_proj.col(l).segment(D, N);
            const auto C = m_proj.col(l).segment(D + N, N);
            const auto x = m_X.col(l);
            auto decay = slice(m_decays, l, N);
            auto dh_ddelta = slice(m_dh_ddelta, l, N);
            auto betac = m_HB.block(l * D, N, D, N);
            decay = A.array().colwise() * delta;
            decay.array() = decay.array().exp();
            m_xB.noalias() = x * B.transpose();
            dh_ddelta = (A.array() * decay.array() * m_H.array()).matrix();
            if (m_zoh) {
                auto beta = slice(m_betas, l, N);
                beta = ((A.array().colwise() * delta).unaryExpr([](Scalar v) {
                    using std::expm1;
                    return expm1(v);
                }) / A.array()).matrix();
                dh_ddelta.array() += decay.array() * m_xB.array();
                m_H = (decay.array() * m_H.array() + beta.array() * m_xB.array()).matrix();
                betac = (beta.array().rowwise() * C.transpose().array()).matrix();
            } else {
                dh_ddelta += m_xB;
                m_H = (decay.array() * m_H.array() + m_xB.array().colwise() * delta).matrix();
                betac.noalias() = m_delta * C.transpose();
            }
            m_g.segment(l * D, D).noalias() = dh_ddelta * C;
            m_g.segment(l * D, D).array() *= m_dphi.col(l).array();
            m_diag.segment(l * D, D).noalias() = betac * B;
            betac = x.asDiagonal() * betac;
            m_HB.block(l * D, 0, D, N) = m_H;
        }
        m_blocks.noalias() = m_HB * m_SCB;
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

    /// Solves (c·I − J_ll) v = rhs with token l's factors (P·A = L·U): column-oriented
    /// substitutions over the contiguous columns of the stacked factors, for blocks this
    /// small several times faster than Eigen's general triangular solves.
    void lu_solve(Eigen::Index l, const Scalar* rhs, Scalar* v) const {
        const Eigen::Index D = dim(), stride = m_factors.outerStride();
        const Scalar* lu = m_factors.data() + l * D;
        const int* pivot = m_pivots.data() + l * D;
        const Scalar* reciprocal = m_reciprocals.data() + l * D;
        for (Eigen::Index i = 0; i < D; ++i) v[i] = rhs[pivot[i]];
        for (Eigen::Index j = 0; j < D; ++j) {  // unit lower triangle
            const Scalar vj = v[j], *col = lu + j * stride;
            for (Eigen::Index i = j + 1; i < D; ++i) v[i] -= col[i] * vj;
        }
        for (Eigen::Index j = D - 1; j >= 0; --j) {  // upper triangle (a product, not a
            const Scalar* col = lu + j * stride;       // division, on the critical path)
            const Scalar vj = v[j] *= reciprocal[j];
            for (Eigen::Index i = 0; i < j; ++i) v[i] -= col[i] * vj;
        }
    }

    /// The forward sweep: Solve: out = (c·I − J)^{−1} in; else out = J·in. T (m_T, D×N) is
    /// the tangent of the state: what the tokens before l send to token l. Each token is
    /// two passes over T: decay and read out before token l's solve, its own direction
    /// added after.
    template <bool Solve>
    void sweep(const State& in, State& out) {
        const Eigen::Index D = dim(), N = m_params->state_dim(), L = tokens();
        m_T.setZero(D, N);
        m_dy.resize(D);
        for (Eigen::Index l = 0; l < L; ++l) {
            const auto delta = m_proj.col(l).head(D).array();
            const auto B = m_proj.col(l).segment(D, N);
            const auto C = m_proj.col(l).segment(D + N, N);
            const auto decay = slice(m_decays, l, N);
            // (Σ_{j<l} J_lj v_j) = (ā_l ⊙ T_{l−1}) C_l, gated as the output is.
            m_dy.setZero();
            for (Eigen::Index n = 0; n < N; ++n) {
                auto t = m_T.col(n);
                t.array() *= decay.col(n).array();
                m_dy += C(n) * t;
            }
            if (m_silu.size() != 0) m_dy.array() *= m_silu.col(l).array();
            auto out_l = out.segment(l * D, D);
            if constexpr (Solve) {
                m_rhs = in.segment(l * D, D) + m_dy;
                lu_solve(l, m_rhs.data(), out_l.data());
                m_v = out_l;
            } else {
                m_v = in.segment(l * D, D);
                out_l.noalias() = block(l) * m_v;
                out_l += m_dy;
            }
            if (l + 1 == L) break;
            // Token l's own direction v_l enters the state: T_l += (∂h_l/∂x_l) v_l, with
            // dΔ = φ' ⊙ S_Δ v_l and dB = S_B v_l:  ∂h/∂Δ ⊙ dΔ + β ⊙ (v_l Bᵀ + x_l dBᵀ).
            m_dproj.noalias() = m_P.topRows(D + N) * m_v;
            m_ddelta = m_dproj.head(D).cwiseProduct(m_dphi.col(l));
            const auto dB = m_dproj.segment(D, N);
            const auto x = m_X.col(l).array();
            const auto dh_ddelta = slice(m_dh_ddelta, l, N);
            if (m_zoh) {
                const auto beta = slice(m_betas, l, N);
                for (Eigen::Index n = 0; n < N; ++n)
                    m_T.col(n).array() += dh_ddelta.col(n).array() * m_ddelta.array() +
                                          beta.col(n).array() * (B(n) * m_v.array() + dB(n) * x);
            } else {  // β = Δ
                m_vd = m_v.array() * delta;
                m_xd = x * delta;
                for (Eigen::Index n = 0; n < N; ++n)
                    m_T.col(n).array() +=
                        dh_ddelta.col(n).array() * m_ddelta.array() + B(n) * m_vd.array() + dB(n) * m_xd.array();
            }
        }
    }

    std::shared_ptr<const Params> m_params;
    StepSizeMap m_phi;
    LayerOptions<Scalar> m_options;
    bool m_zoh = false, m_factored = false;
    MatrixX<Scalar> m_P, m_SCB;                // [S_Δ; S_B; S_C] and [S_C; S_B]
    MatrixX<Scalar> m_X, m_proj, m_dphi, m_silu;  // the linearisation point
    MatrixX<Scalar> m_decays, m_dh_ddelta, m_betas;  // ā_l, ∂h_l/∂Δ_l, β_l (D×N per token)
    MatrixX<Scalar> m_blocks, m_factors;       // J_ll and LU of c·I − J_ll (token l in rows l·D …)
    Eigen::VectorXi m_pivots;                  // the factors' row permutations
    VectorX<Scalar> m_reciprocals;             // 1 / the diagonal of U
    MatrixX<Scalar> m_HB, m_H, m_xB, m_shifted, m_T;  // scratch
    VectorX<Scalar> m_g, m_diag, m_delta, m_dproj, m_ddelta, m_dy, m_rhs, m_v, m_vd, m_xd;
    Scalar m_roundoff = Scalar(0);
    Eigen::PartialPivLU<MatrixX<Scalar>> m_lu;
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
