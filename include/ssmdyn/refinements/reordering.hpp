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

/// Importance scores score_l = kᵀ(S_Δ x_l + b_Δ) of the D×L tokens X (one per column).
template <typename Scalar, typename Derived>
VectorX<Scalar> importance_scores(const S6Params<Scalar>& params, const VectorX<Scalar>& k,
                                  const Eigen::MatrixBase<Derived>& X) {
    if (k.size() != params.dim())
        throw std::invalid_argument("k has " + std::to_string(k.size()) + " entries, expected D = " +
                                    std::to_string(params.dim()));
    if (X.rows() != params.dim())
        throw std::invalid_argument("tokens have " + std::to_string(X.rows()) + " rows, expected D = " +
                                    std::to_string(params.dim()));
    return ((params.S_Delta * X).colwise() + params.delta_bias).transpose() * k;
}

/// The order that sorts `scores` increasingly; equal scores keep their original order.
template <typename Scalar>
TokenOrder increasing_order(const VectorX<Scalar>& scores) {
    TokenOrder order(static_cast<std::size_t>(scores.size()));
    std::iota(order.begin(), order.end(), Eigen::Index(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](Eigen::Index a, Eigen::Index b) { return scores(a) < scores(b); });
    return order;
}

/// The inverse permutation: inverse(order)[order[i]] = i.
inline TokenOrder inverse(const TokenOrder& order) {
    TokenOrder inv(order.size());
    for (std::size_t i = 0; i < order.size(); ++i) inv[static_cast<std::size_t>(order[i])] = Eigen::Index(i);
    return inv;
}

/// The D×L tokens reordered: column i of the result is column order[i] of X.
/// \throws std::invalid_argument unless order is a permutation of 0 … L−1
template <typename Derived>
MatrixX<typename Derived::Scalar> reorder(const Eigen::MatrixBase<Derived>& X, const TokenOrder& order) {
    if (static_cast<Eigen::Index>(order.size()) != X.cols())
        throw std::invalid_argument("order has " + std::to_string(order.size()) + " entries, expected L = " +
                                    std::to_string(X.cols()));
    std::vector<bool> seen(order.size(), false);
    MatrixX<typename Derived::Scalar> out(X.rows(), X.cols());
    for (std::size_t i = 0; i < order.size(); ++i) {
        const Eigen::Index j = order[i];
        if (j < 0 || j >= X.cols() || seen[static_cast<std::size_t>(j)])
            throw std::invalid_argument("order is not a permutation of 0 .. L-1 (at position " +
                                        std::to_string(i) + ")");
        seen[static_cast<std::size_t>(j)] = true;
        out.col(Eigen::Index(i)) = X.col(j);
    }
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
template <typename Scalar>
MatrixX<Scalar> soft_sort(const VectorX<Scalar>& scores, Scalar tau, Scalar p = Scalar(1), bool hard = false) {
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
