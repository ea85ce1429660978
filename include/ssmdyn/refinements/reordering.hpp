#pragma once
/// \file reordering.hpp
/// The paper's second refinement: reorder tokens by a learned importance score
/// score_l = kᵀ(S_Δ x_l + b_Δ) into increasing order, so that the most important token
/// comes last, where the scan accumulates most (DESIGN.md §3). The hard permutation, its
/// inverse, and the differentiable SoftSort used for training.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../core/params.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// A permutation of L tokens: position i of the reordered sequence holds token order[i].
using TokenOrder = std::vector<Eigen::Index>;

namespace detail {

/// k (row or column) as a column, after checking that it has D entries.
template <typename Scalar, typename KDerived>
VectorX<Scalar> score_weights(const S6Params<Scalar>& params, const Eigen::MatrixBase<KDerived>& k) {
    if ((k.rows() != 1 && k.cols() != 1) || k.size() != params.dim())
        throw std::invalid_argument("k is " + std::to_string(k.rows()) + "x" + std::to_string(k.cols()) +
                                    ", expected a vector of D = " + std::to_string(params.dim()) + " entries");
    VectorX<Scalar> weights(k.size());
    for (Eigen::Index d = 0; d < k.size(); ++d) weights(d) = k(d);  // k: row or column
    return weights;
}

}  // namespace detail

/// Importance scores score_l = kᵀ(S_Δ x_l + b_Δ), one per token (l = 0 … L−1).
/// \param k a vector of D weights (row or column)
/// \param X the tokens, D×L or flat (see to_token_matrix)
template <typename Scalar, typename KDerived, typename Derived>
VectorX<Scalar> importance_scores(const S6Params<Scalar>& params, const Eigen::MatrixBase<KDerived>& k,
                                  const Eigen::MatrixBase<Derived>& X) {
    const VectorX<Scalar> weights = detail::score_weights(params, k);
    const MatrixX<Scalar> tokens = to_token_matrix(X, params.dim());
    return (params.step_projection(tokens).colwise() + params.delta_bias).transpose() * weights;
}

/// Gradients of a scalar loss through importance_scores, written by importance_scores_vjp:
/// each field has the shape of what it differentiates.
template <typename Scalar = double>
struct ImportanceScoreGradients {
    /// Length D, ∂ℓ/∂k.
    VectorX<Scalar> k;
    /// D×L, ∂ℓ/∂X (also when X was given flat: to_state flattens it the same way).
    MatrixX<Scalar> X;
    /// Length D, ∂ℓ/∂b_Δ.
    VectorX<Scalar> delta_bias;
    /// D×D, ∂ℓ/∂S_Δ; empty when S_Δ is low rank.
    MatrixX<Scalar> S_Delta;
    /// D×R and R×D, ∂ℓ/∂ of S_Δ's low-rank factors; empty when S_Δ is dense.
    MatrixX<Scalar> S_Delta_up, S_Delta_down;
};

/// The vector-Jacobian product of importance_scores: the gradients of ℓ given
/// g = ∂ℓ/∂scores. With Z = S_Δ X + b_Δ 1ᵀ the scores are Zᵀk, so ∂ℓ/∂k = Z g,
/// ∂ℓ/∂X = S_Δᵀ k gᵀ, ∂ℓ/∂b_Δ = k Σ_l g_l and ∂ℓ/∂S_Δ = k (X g)ᵀ; a low-rank S_Δ = S_up S_down
/// gets its factors' gradients without being multiplied out.
/// \param params the layer, as for importance_scores (assumed valid: see S6Params::validate)
/// \param k, X   as for importance_scores
/// \param grad_scores g, a vector of L entries (row or column), one per token
/// \throws std::invalid_argument as importance_scores does, and for a grad_scores of the wrong shape
template <typename Scalar, typename KDerived, typename Derived, typename GDerived>
ImportanceScoreGradients<Scalar> importance_scores_vjp(const S6Params<Scalar>& params,
                                                       const Eigen::MatrixBase<KDerived>& k,
                                                       const Eigen::MatrixBase<Derived>& X,
                                                       const Eigen::MatrixBase<GDerived>& grad_scores) {
    const VectorX<Scalar> weights = detail::score_weights(params, k);
    const MatrixX<Scalar> tokens = to_token_matrix(X, params.dim());
    const Eigen::Index L = tokens.cols();
    if ((grad_scores.rows() != 1 && grad_scores.cols() != 1) || grad_scores.size() != L)
        throw std::invalid_argument("grad_scores is " + std::to_string(grad_scores.rows()) + "x" +
                                    std::to_string(grad_scores.cols()) + ", expected a vector of L = " +
                                    std::to_string(L) + " entries (one per token)");
    VectorX<Scalar> g(L);
    for (Eigen::Index l = 0; l < L; ++l) g(l) = grad_scores(l);  // row or column
    const Scalar g_sum = g.sum();
    const VectorX<Scalar> Xg = tokens * g;
    ImportanceScoreGradients<Scalar> out;
    out.k = params.step_projection(Xg) + params.delta_bias * g_sum;  // Z g = S_Δ X g + b_Δ Σ g
    out.delta_bias = weights * g_sum;
    if (params.low_rank_step()) {
        const VectorX<Scalar> up_k = params.S_Delta_up.transpose() * weights;  // S_upᵀ k, length R
        out.X = (params.S_Delta_down.transpose() * up_k) * g.transpose();
        out.S_Delta_up = weights * (params.S_Delta_down * Xg).transpose();
        out.S_Delta_down = up_k * Xg.transpose();
    } else {
        out.X = (params.S_Delta.transpose() * weights) * g.transpose();
        out.S_Delta = weights * Xg.transpose();
    }
    return out;
}

/// The order that sorts `scores` increasingly; equal scores keep their original order.
template <typename Derived>
TokenOrder increasing_order(const Eigen::MatrixBase<Derived>& scores) {
    if (scores.rows() != 1 && scores.cols() != 1) throw std::invalid_argument("scores must be a vector");
    const typename Derived::PlainObject values = scores;  // an expression is evaluated once
    TokenOrder order(static_cast<std::size_t>(values.size()));
    std::iota(order.begin(), order.end(), Eigen::Index(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](Eigen::Index a, Eigen::Index b) { return values(a) < values(b); });
    return order;
}

/// The inverse permutation: inverse(order)[order[i]] = i.
inline TokenOrder inverse(const TokenOrder& order) {
    TokenOrder inv(order.size());
    for (std::size_t i = 0; i < order.size(); ++i) inv[static_cast<std::size_t>(order[i])] = Eigen::Index(i);
    return inv;
}

/// The tokens reordered: token i of the result is token order[i] of X. X is the D×L
/// matrix (column l = token l) or the flat state, and the result has the same form: a
/// matrix with L = order.size() columns is a token matrix, a column vector of length
/// D·L a flat state (D = its length / L).
/// \throws std::invalid_argument unless order is a permutation of 0 … L−1 matching X
template <typename Derived>
typename Derived::PlainObject reorder(const Eigen::MatrixBase<Derived>& X, const TokenOrder& order) {
    using Scalar = typename Derived::Scalar;
    const auto L = static_cast<Eigen::Index>(order.size());
    const bool flat = X.cols() != L && X.cols() == 1 && L > 0 && X.rows() % L == 0;
    if (X.cols() != L && !flat)
        throw std::invalid_argument("order has " + std::to_string(order.size()) + " entries, but the tokens are " +
                                    std::to_string(X.rows()) + "x" + std::to_string(X.cols()) +
                                    " (neither D x L nor a flat vector of D*L entries)");
    const Eigen::Index D = flat ? X.rows() / L : X.rows();
    const MatrixX<Scalar> tokens = to_token_matrix(X, D);
    std::vector<bool> seen(order.size(), false);
    MatrixX<Scalar> out(D, L);
    for (std::size_t i = 0; i < order.size(); ++i) {
        const Eigen::Index j = order[i];
        if (j < 0 || j >= L || seen[static_cast<std::size_t>(j)])
            throw std::invalid_argument("order is not a permutation of 0 .. L-1 (at position " +
                                        std::to_string(i) + ")");
        seen[static_cast<std::size_t>(j)] = true;
        out.col(Eigen::Index(i)) = tokens.col(j);
    }
    if (flat) return Eigen::Map<const VectorX<Scalar>>(out.data(), out.size());
    return out;
}

/// The L×L permutation matrix P of `order` (P(i, order[i]) = 1), so that reorder(X, order)
/// = X·Pᵀ for D×L tokens X.
template <typename Scalar = double>
MatrixX<Scalar> permutation_matrix(const TokenOrder& order) {
    const auto L = static_cast<Eigen::Index>(order.size());
    MatrixX<Scalar> P = MatrixX<Scalar>::Zero(L, L);
    for (Eigen::Index i = 0; i < L; ++i) P(i, order[static_cast<std::size_t>(i)]) = Scalar(1);
    return P;
}

namespace detail {

/// The scores of soft_sort as a column, after soft_sort's checks of them, tau and p.
template <typename Derived>
VectorX<typename Derived::Scalar> soft_sort_scores(const Eigen::MatrixBase<Derived>& scores_in,
                                                   typename Derived::Scalar tau, typename Derived::Scalar p) {
    using Scalar = typename Derived::Scalar;
    if (scores_in.rows() != 1 && scores_in.cols() != 1)
        throw std::invalid_argument("scores must be a vector");
    const VectorX<Scalar> scores = scores_in.rows() == 1 ? VectorX<Scalar>(scores_in.transpose()) : VectorX<Scalar>(scores_in);
    if (!(tau > 0) || !std::isfinite(tau)) throw std::invalid_argument("tau must be finite and > 0");
    if (!(p > 0) || !std::isfinite(p)) throw std::invalid_argument("p must be finite and > 0");
    if (!scores.allFinite()) throw std::invalid_argument("scores must be finite");
    return scores;
}

}  // namespace detail

/// SoftSort (Prillo & Eisenschlos 2020): the row-stochastic L×L relaxation of the
/// permutation that sorts `scores` in decreasing order,
/// \f[ \hat P_{ij} = \mathrm{softmax}_j\big(-|s_j - s^{\downarrow}_i|^p / \tau\big), \f]
/// which tends to the exact permutation matrix as τ → 0 (for distinct scores). With
/// `hard`, the straight-through forward value: each row's argmax set to 1, the rest 0.
/// Sort −scores to get the increasing order of the refinement.
/// \param tau temperature, > 0;  \param p power, > 0 (1 in the SoftSort paper)
template <typename Derived>
MatrixX<typename Derived::Scalar> soft_sort(const Eigen::MatrixBase<Derived>& scores_in,
                                            typename Derived::Scalar tau,
                                            typename Derived::Scalar p = typename Derived::Scalar(1),
                                            bool hard = false) {
    using Scalar = typename Derived::Scalar;
    const VectorX<Scalar> scores = detail::soft_sort_scores(scores_in, tau, p);
    const Eigen::Index L = scores.size();
    VectorX<Scalar> sorted = scores;
    std::sort(sorted.data(), sorted.data() + L, [](Scalar a, Scalar b) { return a > b; });
    MatrixX<Scalar> P(L, L);
    for (Eigen::Index i = 0; i < L; ++i) {
        auto row = P.row(i).array();
        row = -(scores.transpose().array() - sorted(i)).abs().pow(p) / tau;
        row = (row - row.maxCoeff()).exp();  // shifted: no overflow at small τ
        row /= row.sum();
        if (hard) {
            Eigen::Index j;
            P.row(i).maxCoeff(&j);
            P.row(i).setZero();
            P(i, j) = Scalar(1);
        }
    }
    return P;
}

/// The vector-Jacobian product of the soft (hard = false) soft_sort: ∂ℓ/∂scores given
/// G = ∂ℓ/∂P̂. It is also the backward pass of the straight-through estimator (forward
/// with `hard`, backward through the soft P̂). With z_ij = −|s_j − s↓_i|^p / τ, the softmax
/// gives ∂ℓ/∂z_ij = P̂_ij (G_ij − Σ_k G_ik P̂_ik); z_ij depends on s_j and, since sorting is
/// locally a permutation σ (s↓_i = s_σ(i)), on s_σ(i) too.
///
/// Where s_j = s↓_i the derivative of |d|^p is taken as 0: exact for p > 1, the
/// subgradient sign(0) = 0 for p = 1, a choice for p < 1 (unbounded there). On the
/// diagonal j = σ(i) this is exact for every p (z_iσ(i) ≡ 0); elsewhere it happens only at
/// tied scores, where P̂ is not differentiable: σ then keeps tied scores in index order
/// (as increasing_order does), so the result is the gradient of that branch.
/// \param tau, p as for soft_sort
/// \param grad_P G, L×L for L scores
/// \throws std::invalid_argument as soft_sort does, and for a grad_P that is not L×L
template <typename Derived, typename GDerived>
VectorX<typename Derived::Scalar> soft_sort_vjp(const Eigen::MatrixBase<Derived>& scores_in,
                                                typename Derived::Scalar tau, typename Derived::Scalar p,
                                                const Eigen::MatrixBase<GDerived>& grad_P) {
    using Scalar = typename Derived::Scalar;
    static_assert(std::is_same<Scalar, typename GDerived::Scalar>::value,
                  "soft_sort_vjp: scores and grad_P must have the same scalar type.");
    using std::abs;
    using std::pow;
    const VectorX<Scalar> scores = detail::soft_sort_scores(scores_in, tau, p);
    const Eigen::Index L = scores.size();
    if (grad_P.rows() != L || grad_P.cols() != L)
        throw std::invalid_argument("grad_P is " + std::to_string(grad_P.rows()) + "x" +
                                    std::to_string(grad_P.cols()) + ", expected L x L = " + std::to_string(L) +
                                    "x" + std::to_string(L) + " (L = the number of scores)");
    const MatrixX<Scalar> G = grad_P;
    const MatrixX<Scalar> P = soft_sort(scores, tau, p);
    const TokenOrder sigma = increasing_order(-scores);  // decreasing, ties in index order
    VectorX<Scalar> grad = VectorX<Scalar>::Zero(L);
    for (Eigen::Index i = 0; i < L; ++i) {
        const Eigen::Index top = sigma[static_cast<std::size_t>(i)];
        const Scalar row_dot = P.row(i).dot(G.row(i));
        Scalar through_sorted(0);  // ∂ℓ/∂s↓_i
        for (Eigen::Index j = 0; j < L; ++j) {
            const Scalar d = scores(j) - scores(top);
            if (d == Scalar(0)) continue;  // ∂|d|^p/∂d taken as 0 (see above)
            const Scalar grad_z = P(i, j) * (G(i, j) - row_dot);
            // ∂z_ij/∂d = −p |d|^{p−1} sign(d) / τ, and ∂d/∂s_j = −∂d/∂s↓_i = 1.
            const Scalar sign_d = d > Scalar(0) ? Scalar(1) : Scalar(-1);
            const Scalar grad_d = -grad_z * p * pow(abs(d), p - Scalar(1)) * sign_d / tau;
            grad(j) += grad_d;
            through_sorted -= grad_d;
        }
        grad(top) += through_sorted;
    }
    return grad;
}

}  // namespace ssmdyn
