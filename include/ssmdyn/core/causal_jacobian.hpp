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
/// c·I − J_ll inverted once per shift c; per token the sweep is one pass over a D×N array
/// and two small matrix-vector products. Memory: 2·D²·L numbers for the blocks and their
/// inverses, and about 5·D·N·L for what the sweep keeps of each token (ā_l, ∂h_l/∂Δ_l,
/// h_l, …).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

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
        m_P << p.step_matrix(), p.S_B, p.S_C;  // the blocks are dense D×D anyway
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

    /// Inverts c·I − J_ll for every token (Gauss-Jordan with partial pivoting), for solve().
    void factorize(Scalar shift) {
        const Eigen::Index D = dim(), L = tokens();
        m_factors.resize(D, D * L);
        for (Eigen::Index l = 0; l < L; ++l) {
            auto F = m_factors.middleCols(l * D, D);
            F = -block(l);
            F.diagonal().array() += shift;
            invert_block(l);
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
        m_decays.resize(D, N * L);
        m_dh_ddelta.resize(D, N * L);
        if (m_zoh) m_betas.resize(D, N * L);
        m_HB.resize(D * L, 2 * N);
        m_g.resize(D * L);
        m_diag.resize(D * L);
        m_H.setZero(D, 1);  // h_{−1} = 0, one column at a time
        for (Eigen::Index l = 0; l < L; ++l) {
            m_delta = m_proj.col(l).head(D);  // contiguous, so that exp below vectorises
            const auto delta = m_delta.array();
            const auto B = m_proj.col(l).segment(D, N);
            const auto C = m_proj.col(l).segment(D + N, N);
            const auto x = m_X.col(l).array();
            auto decay = slice(m_decays, l, N);
            auto dh_ddelta = slice(m_dh_ddelta, l, N);
            if (m_pattern == detail::DecayPattern::General) {
                decay = A.array().colwise() * delta;  // ā = e^{AΔ}, in one long vectorised loop
                decay.array() = decay.array().exp();
            } else {  // one exponential per channel, its powers as the scan takes them
                decay.col(0).array() = (A.col(0).array() * delta).exp();
                for (Eigen::Index n = 1; n < N; ++n) {
                    if (m_pattern == detail::DecayPattern::Equal)
                        decay.col(n) = decay.col(0);
                    else
                        decay.col(n) = decay.col(n - 1).cwiseProduct(decay.col(0));
                }
            }
            if (m_zoh) {
                auto beta = slice(m_betas, l, N);
                beta = ((A.array().colwise() * delta).unaryExpr([](Scalar v) {
                    using std::expm1;
                    return expm1(v);
                }) / A.array()).matrix();
            }
            // Then one pass per state n down the D channels: ∂h/∂Δ, h_l (into [H | …]), g
            // and the diagonal, with h_{l−1} read from the previous token's rows.
            auto g = m_g.segment(l * D, D).array();
            auto diag = m_diag.segment(l * D, D).array();
            g.setZero();
            diag.setZero();
            m_xd = x * delta;
            for (Eigen::Index n = 0; n < N; ++n) {
                const Scalar* prev = l == 0 ? m_H.data() : m_HB.col(n).data() + (l - 1) * D;
                const auto h_prev = Eigen::Map<const VectorX<Scalar>>(prev, D).array();
                auto h = m_HB.col(n).segment(l * D, D).array();
                auto dh = dh_ddelta.col(n).array();
                const auto e = decay.col(n).array();
                if (m_zoh) {  // β = expm1(AΔ)/A, β' = ā
                    const auto beta = slice(m_betas, l, N).col(n).array();
                    dh = A.col(n).array() * e * h_prev + e * x * B(n);
                    h = e * h_prev + beta * x * B(n);
                    m_HB.col(N + n).segment(l * D, D).array() = beta * x * C(n);
                    diag += beta * (B(n) * C(n));
                } else {  // β = Δ, β' = 1
                    dh = A.col(n).array() * e * h_prev + x * B(n);
                    h = e * h_prev + m_xd.array() * B(n);
                    m_HB.col(N + n).segment(l * D, D).array() = m_xd.array() * C(n);
                    diag += delta * (B(n) * C(n));
                }
                g += dh * C(n);
            }
            g *= m_dphi.col(l).array();
        }
        m_blocks.noalias() = m_HB * m_SCB;
        m_roundoff = Scalar(0);
        for (Eigen::Index l = 0; l < L; ++l) {
            auto J = m_blocks.middleRows(l * D, D);
            J.noalias() += m_g.segment(l * D, D).asDiagonal() * m_P.topRows(D);
            J.diagonal() += m_diag.segment(l * D, D);
            if (m_options.D_skip.size() != 0) J.diagonal() += m_options.D_skip;
            if (m_silu.size() != 0) J = m_silu.col(l).asDiagonal() * J;
            m_roundoff = std::max(m_roundoff, J.cwiseAbs().rowwise().sum().maxCoeff() * m_X.col(l).cwiseAbs().maxCoeff());
        }
        m_roundoff *= std::numeric_limits<Scalar>::epsilon();
    }

    /// Inverts token l's block in place by Gauss-Jordan elimination with partial pivoting
    /// (column-oriented, so every inner loop runs down a contiguous column). The solves then
    /// are matrix-vector products: for blocks this small (D = 16), a triangular
    /// substitution is a chain of D dependent steps through memory, while the product runs
    /// at full vector width, and a solve happens six times per inversion. The row swap and
    /// the pivot row's entry are written after each column's vector update, never just
    /// before it (a narrow store followed by a wide load of the same bytes stalls the
    /// pipeline). A zero pivot gives non-finite entries, so the solve's result is
    /// non-finite and a caller's step fails and shrinks.
    void invert_block(Eigen::Index l) {
        const Eigen::Index D = dim();
        auto F = m_factors.middleCols(l * D, D);
        m_column.resize(D);
        m_swaps.resize(D);
        auto m = m_column.array();
        for (Eigen::Index k = 0; k < D; ++k) {
            Eigen::Index p = 0;
            F.col(k).tail(D - k).cwiseAbs().maxCoeff(&p);
            p += k;
            m_swaps[k] = p;
            // m: the pivot column with rows k and p swapped and the pivot itself zeroed.
            m_column = F.col(k);
            const Scalar r = Scalar(1) / F(p, k);
            m[p] = F(k, k);
            m[k] = Scalar(0);
            for (Eigen::Index j = 0; j < D; ++j) {  // rows k and p swapped, row k scaled by r
                if (j == k) continue;                // and eliminated from the others
                auto cj = F.col(j).array();
                const Scalar row_k = cj[k], f = cj[p] * r;
                cj -= f * m;
                cj[p] = row_k - m[p] * f;
                cj[k] = f;
            }
            F.col(k).array() = -r * m;
            F(k, k) = r;
        }
        for (Eigen::Index k = D - 1; k >= 0; --k)  // the row swaps undone on the columns
            if (m_swaps[k] != k) F.col(k).swap(F.col(m_swaps[k]));
    }

    /// (c·I − J_ll)^{−1}, token l's block of the factors.
    auto inverse(Eigen::Index l) const { return m_factors.middleCols(l * dim(), dim()); }

    /// The forward sweep: Solve: out = (c·I − J)^{−1} in; else out = J·in. T (m_T, D×N) is
    /// the tangent of the state: what the tokens before l send to token l. One pass over T
    /// per token: token l's own direction is added and token l+1's decay and read-out done
    /// in the same loop, so that T stays in registers or L1.
    template <bool Solve>
    void sweep(const State& in, State& out) {
        const Eigen::Index D = dim(), N = m_params->state_dim(), L = tokens();
        m_T.setZero(D, N);
        m_dy.setZero(D);  // (Σ_{j<l} J_lj v_j) = (ā_l ⊙ T_{l−1}) C_l, before the gate
        for (Eigen::Index l = 0; l < L; ++l) {
            if (m_silu.size() != 0) m_dy.array() *= m_silu.col(l).array();
            auto out_l = out.segment(l * D, D);
            if constexpr (Solve) {
                m_rhs = in.segment(l * D, D) + m_dy;
                out_l.noalias() = inverse(l) * m_rhs;
                m_v = out_l;
            } else {
                m_v = in.segment(l * D, D);
                out_l.noalias() = block(l) * m_v;
                out_l += m_dy;
            }
            if (l + 1 == L) break;
            // Token l's own direction v_l enters the state, then token l+1 decays it and
            // reads it out: T ← ā_{l+1} ⊙ (T + (∂h_l/∂x_l) v_l), dy = T C_{l+1}, where
            // (∂h_l/∂x_l) v_l = ∂h/∂Δ ⊙ dΔ + β ⊙ (v_l Bᵀ + x_l dBᵀ), dΔ = φ' ⊙ S_Δ v_l, dB = S_B v_l.
            m_dproj.noalias() = m_P.topRows(D + N) * m_v;
            m_ddelta = m_dproj.head(D).cwiseProduct(m_dphi.col(l));
            const auto B = m_proj.col(l).segment(D, N);
            const auto dB = m_dproj.segment(D, N);
            const auto C_next = m_proj.col(l + 1).segment(D + N, N);
            const auto x = m_X.col(l).array();
            const auto dh_ddelta = slice(m_dh_ddelta, l, N);
            const auto decay_next = slice(m_decays, l + 1, N);
            m_dy.setZero();
            if (m_zoh) {
                const auto beta = slice(m_betas, l, N);
                for (Eigen::Index n = 0; n < N; ++n) {
                    auto t = m_T.col(n).array();
                    t = decay_next.col(n).array() * (t + dh_ddelta.col(n).array() * m_ddelta.array() +
                                                      beta.col(n).array() * (B(n) * m_v.array() + dB(n) * x));
                    m_dy += C_next(n) * m_T.col(n);
                }
            } else {  // β = Δ
                const auto delta = m_proj.col(l).head(D).array();
                m_vd = m_v.array() * delta;
                m_xd = x * delta;
                for (Eigen::Index n = 0; n < N; ++n) {
                    auto t = m_T.col(n).array();
                    t = decay_next.col(n).array() *
                        (t + dh_ddelta.col(n).array() * m_ddelta.array() + B(n) * m_vd.array() + dB(n) * m_xd.array());
                    m_dy += C_next(n) * m_T.col(n);
                }
            }
        }
    }

    std::shared_ptr<const Params> m_params;
    StepSizeMap m_phi;
    LayerOptions<Scalar> m_options;
    bool m_zoh = false, m_factored = false;
    detail::DecayPattern m_pattern = detail::DecayPattern::General;  // A's layout, as the scan uses it
    MatrixX<Scalar> m_P, m_SCB;                // [S_Δ; S_B; S_C] and [S_C; S_B]
    MatrixX<Scalar> m_X, m_proj, m_dphi, m_silu;  // the linearisation point
    MatrixX<Scalar> m_decays, m_dh_ddelta, m_betas;  // ā_l, ∂h_l/∂Δ_l, β_l (D×N per token)
    MatrixX<Scalar> m_blocks;                  // J_ll (token l in rows l·D …)
    MatrixX<Scalar> m_factors;                 // (c·I − J_ll)^{−1} (token l in columns l·D …)
    Eigen::Matrix<Eigen::Index, Eigen::Dynamic, 1> m_swaps;  // scratch of invert_block
    VectorX<Scalar> m_column;                  // scratch of invert_block
    MatrixX<Scalar> m_HB, m_H, m_T;           // scratch
    VectorX<Scalar> m_g, m_diag, m_delta, m_dproj, m_ddelta, m_dy, m_rhs, m_v, m_vd, m_xd;
    Scalar m_roundoff = Scalar(0);
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
