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
#include <vector>

#include <Eigen/Core>

#include "../core/params.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// A permutation of L tokens: position i of the reordered sequence holds token order[i].
using TokenOrder = std::vector<Eigen::Index>;

/// Importance scores score_l = kᵀ(S_Δ x_l + b_Δ), one per token (l = 0 … L−1).
/// \param k a vector of D weights (row or column)
/// \param X the tokens, D×L or flat (see to_token_matrix)
template <typename Scalar, typename KDerived, typename Derived>
VectorX<Scalar> importance_scores(const S6Params<Scalar>& params, const Eigen::MatrixBase<KDerived>& k,
                                  const Eigen::MatrixBase<Derived>& X) {
    if ((k.rows() != 1 && k.cols() != 1) || k.size() != params.dim())
        throw std::invalid_argument("k is " + std::to_string(k.rows()) + "x" + std::to_string(k.cols()) +
                                    ", expected a vector of D = " + std::to_string(params.dim()) + " entries");
    const MatrixX<Scalar> tokens = to_token_matrix(X, params.dim());
    VectorX<Scalar> weights(k.size());
    for (Eigen::Index d = 0; d < k.size(); ++d) weights(d) = k(d);  // k: row or column
    return (params.step_projection(tokens).colwise() + params.delta_bias).transpose() * weights;
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
    if (scores_in.rows() != 1 && scores_in.cols() != 1)
        throw std::invalid_argument("scores must be a vector");
    const VectorX<Scalar> scores = scores_in.rows() == 1 ? VectorX<Scalar>(scores_in.transpose()) : VectorX<Scalar>(scores_in);
    if (!(tau > 0) || !std::isfinite(tau)) throw std::invalid_argument("tau must be finite and > 0");
    if (!(p > 0) || !std::isfinite(p)) throw std::invalid_argument("p must be finite and > 0");
    if (!scores.allFinite()) throw std::invalid_argument("scores must be finite");
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

}  // namespace ssmdyn
