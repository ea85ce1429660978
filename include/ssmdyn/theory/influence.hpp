#pragma once
/// \file influence.hpp
/// How much each input token moves each output token of dX/dt = S6(X): the token
/// influence matrix I(l, j) = ‖∂x_l(T)/∂x_j(0)‖_F, and the share of a loss gradient that
/// each input token carries — the measurable form of the paper's remark that tokens
/// "contribute unequally to the updates during training".

#include <stdexcept>
#include <string>
#include <type_traits>

#include "../core/state.hpp"
#include "../core/system.hpp"
#include "../integrate/sensitivity.hpp"
#include "../integrate/status.hpp"

namespace ssmdyn {

/// What token_influence() returns.
template <typename Scalar = double>
struct TokenInfluence {
    /// How the run ended; with anything but Completed, everything below is at t_final.
    Status status = Status::Completed;
    /// The time of `tokens`, `jacobian` and `influence`: t_end, or where the run stopped
    /// (the blow-up detection time for a blow-up).
    Scalar t_final = Scalar(0);
    /// The final tokens X(t_final), D×L (column l = token l).
    MatrixX<Scalar> tokens;
    /// I(l, j) = ‖∂x_l(t_final)/∂x_j(0)‖_F, L×L, 0-based l (output token, row) and j
    /// (input token, column). Zero above the diagonal (causality), exactly.
    MatrixX<Scalar> influence;
    /// The whole Jacobian ∂x(t_final)/∂x(0) of the flat state, (D·L)×(D·L): block (l, j),
    /// rows l·D…, columns j·D…, is ∂x_l/∂x_j(0). Block lower triangular. What
    /// gradient_shares() needs.
    MatrixX<Scalar> jacobian;
    /// The run of x (steps, evaluations, t_blowup, message) as simulate() reports it.
    SimulateResult<Scalar> simulation;
};

/// The token influence matrix I(l, j) = ‖∂x_l(T)/∂x_j(0)‖_F of dX/dt = S6(X), from
/// forward sensitivities (simulate_sensitivities) of all D·L input directions.
///
/// Cost, and how causality is used. Token l sees only tokens j <= l, so ∂x_l/∂x_j = 0 for
/// j > l; the tangent scan of a direction in token j multiplies exact zeros until token j,
/// so those blocks come out exactly zero without being imposed. All L·D directions are
/// integrated in one augmented run, S(0) = I: each right-hand side is one scan and L·D
/// JVPs, O(L²·D²·(D+N)), and the state has (1+L·D)·L·D entries. Integrating block by
/// block (the D directions of token j, for j = 0 … L−1) does the same JVP work (a JVP
/// costs O(L) whichever token its direction starts at, since it rebuilds the primal scan
/// state up to that token), repeats the integration of x L times and gives L different
/// step sequences and x(T)s; one run shares x and its steps, and its error control covers
/// every block at once. The price is memory: about ten augmented states for a Runge–Kutta
/// stepper, so (D·L)² doubles each (D·L = 512: 2 MB each). A tangent scan started at
/// token j from stored primal states would halve the work; selective_scan_jvp does not
/// offer one.
///
/// \param system  the dynamics
/// \param x0      the initial tokens: flat (length D·L) or the D×L matrix
/// \param t_end   the horizon T, >= options.t_start
/// \param options as for simulate() (the blow-up bound is tested on x alone; see
///                simulate_sensitivities); record what you need of x (Record::None is cheapest)
/// \param threads threads over the JVPs of each right-hand side (1: serial, 0: all cores)
/// \return status, final time and tokens, the L×L influence and the Jacobian
/// \throws std::invalid_argument for invalid options or x0 (the message names it)
template <typename Scalar, typename StepSizeMap, typename Derived>
TokenInfluence<Scalar> token_influence(const SelectiveSystem<Scalar, StepSizeMap>& system,
                                       const Eigen::MatrixBase<Derived>& x0,
                                       typename SelectiveSystem<Scalar, StepSizeMap>::Scalar t_end,
                                       const SimulateOptions<Scalar>& options = {}, int threads = 1) {
    static_assert(std::is_same<typename Derived::Scalar, Scalar>::value,
                  "x0 must have the system's Scalar type (e.g. an Eigen::VectorXd for a double system).");
    const Eigen::Index D = system.dim();
    const StateVector<Scalar> x = to_state(x0, D, "x0");
    const Eigen::Index n = x.size(), L = n / D;
    const MatrixX<Scalar> identity = MatrixX<Scalar>::Identity(n, n);
    SensitivityResult<Scalar> r = simulate_sensitivities(system, x, identity, t_end, options, threads);

    TokenInfluence<Scalar> out;
    out.status = r.status;
    out.t_final = r.simulation.t_final;
    out.tokens = token_matrix(r.simulation.x_final, D);
    out.influence.resize(L, L);
    using Wide = std::conditional_t<(sizeof(Scalar) < sizeof(double)), double, Scalar>;
    for (Eigen::Index j = 0; j < L; ++j)
        for (Eigen::Index l = 0; l < L; ++l)  // float's own sum of squares would overflow from 1.8e19
            out.influence(l, j) = static_cast<Scalar>(r.S.block(l * D, j * D, D, D).template cast<Wide>().norm());
    out.jacobian = std::move(r.S);
    out.simulation = std::move(r.simulation);
    return out;
}

/// The gradient of a loss with respect to the initial tokens, token by token, and each
/// token's share of it: what one gradient step on X(0) (or on whatever produced X(0))
/// receives from each input token.
template <typename Scalar = double>
struct GradientShares {
    /// ∂ℓ/∂X(0), D×L (column j = ∂ℓ/∂x_j(0)).
    MatrixX<Scalar> gradient;
    /// ‖∂ℓ/∂x_j(0)‖₂, length L.
    VectorX<Scalar> norms;
    /// norms / Σ norms, length L, summing to 1 (all zero when the gradient vanishes).
    VectorX<Scalar> shares;
};

/// The per-token share of a loss gradient pulled back through the flow: for a loss
/// ℓ(X(T)) with gradient G = ∂ℓ/∂X(T),
/// \f[ g_j = \frac{\partial \ell}{\partial x_j(0)} = \sum_{l \ge j}
///     \Big(\frac{\partial x_l(T)}{\partial x_j(0)}\Big)^{\!\top} G_l
///     \quad (g = J^\top \operatorname{vec} G),\qquad
///     \text{share}_j = \frac{\|g_j\|_2}{\sum_k \|g_k\|_2}. \f]
/// The influence matrix alone bounds ‖g_j‖ by Σ_l I(l, j)‖G_l‖ but cannot give it (the
/// directions matter), hence the Jacobian. E.g. ℓ = ½‖X(T)‖² has G = X(T).
///
/// \param jacobian     ∂x(T)/∂x(0), (D·L)×(D·L) (TokenInfluence::jacobian)
/// \param loss_gradient G = ∂ℓ/∂X(T): D×L or flat (length D·L)
/// \param dim          the token dimension D, >= 1
/// \return ∂ℓ/∂X(0), its per-token norms and shares
/// \throws std::invalid_argument naming `jacobian` or `loss_gradient` when a size is wrong
template <typename JDerived, typename GDerived>
GradientShares<typename JDerived::Scalar> gradient_shares(const Eigen::MatrixBase<JDerived>& jacobian,
                                                          const Eigen::MatrixBase<GDerived>& loss_gradient,
                                                          Eigen::Index dim) {
    using Scalar = typename JDerived::Scalar;
    static_assert(std::is_same<typename GDerived::Scalar, Scalar>::value,
                  "jacobian and loss_gradient must have the same Scalar type.");
    const MatrixX<Scalar> G = to_token_matrix(loss_gradient, dim, "loss_gradient");
    const Eigen::Index n = G.size(), L = G.cols();
    if (jacobian.rows() != n || jacobian.cols() != n)
        throw std::invalid_argument("jacobian is " + std::to_string(jacobian.rows()) + "x" +
                                    std::to_string(jacobian.cols()) + "; expected D*L x D*L = " + std::to_string(n) +
                                    "x" + std::to_string(n) + " to match loss_gradient");
    GradientShares<Scalar> out;
    const VectorX<Scalar> g = jacobian.transpose() * Eigen::Map<const VectorX<Scalar>>(G.data(), n);
    out.gradient = Eigen::Map<const MatrixX<Scalar>>(g.data(), dim, L);
    out.norms = out.gradient.colwise().norm().transpose();
    const Scalar total = out.norms.sum();
    out.shares = total > 0 ? VectorX<Scalar>(out.norms / total) : VectorX<Scalar>::Zero(L);
    return out;
}

/// gradient_shares() with the Jacobian of a token_influence() result (taken at its
/// t_final: G must be the loss gradient at X(t_final), i.e. at `influence.tokens`).
/// \throws std::invalid_argument naming `loss_gradient` when it is not D×L (or flat)
template <typename Scalar, typename GDerived>
GradientShares<Scalar> gradient_shares(const TokenInfluence<Scalar>& influence,
                                       const Eigen::MatrixBase<GDerived>& loss_gradient) {
    return gradient_shares(influence.jacobian, loss_gradient, influence.tokens.rows());
}

}  // namespace ssmdyn
