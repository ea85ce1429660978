#pragma once
/// \file parameterization.hpp
/// The paper's first refinement: parameterise S_B and S_C so that μ = S_Cᵀ S_B cannot be
/// negative, which excludes the convergent scenario (DESIGN.md §3):
/// \f[ S_C = U,\quad S_B = W U,\quad W = \mathrm{diag}(\mathrm{softplus}(w) + \theta),
///     \quad \mu = U^\top W U \succeq 0 . \f]
/// The negative (W → −W) and mixed (half of W's diagonal negated) variants are the
/// paper's controls.

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <Eigen/Core>

#include "../core/state.hpp"
#include "../core/detail/enum_names.hpp"
#include "../core/step_size.hpp"

namespace ssmdyn {

/// The sign structure a parameterisation imposes on μ = Uᵀ W U.
enum class MuSign {
    PositiveSemidefinite,  ///< W = diag(softplus(w) + θ): the refinement
    NegativeSemidefinite,  ///< W → −W: the convergent control
    Mixed                  ///< the second half of W's diagonal negated: the indefinite control
};

/// "positive_semidefinite", "negative_semidefinite", "mixed".
inline const char* to_string(MuSign s) {
    switch (s) {
        case MuSign::PositiveSemidefinite: return "positive_semidefinite";
        case MuSign::NegativeSemidefinite: return "negative_semidefinite";
        case MuSign::Mixed: return "mixed";
    }
    return "unknown";
}

/// The MuSign called `name` (as printed by to_string); throws std::invalid_argument.
inline MuSign parse_mu_sign(const std::string& name) {
    static constexpr MuSign all[] = {MuSign::PositiveSemidefinite, MuSign::NegativeSemidefinite, MuSign::Mixed};
    return detail::parse_enum(name, all, "mu sign");
}

/// The authors' U: the upper-triangular part of a free N×D matrix with a unit diagonal
/// (entries below the diagonal are zero, entries (i, i) are 1, those above are kept).
template <typename Derived>
MatrixX<typename Derived::Scalar> unit_upper_triangular(const Eigen::MatrixBase<Derived>& free) {
    using Scalar = typename Derived::Scalar;
    MatrixX<Scalar> U = free.template triangularView<Eigen::StrictlyUpper>();
    U.diagonal().setOnes();
    return U;
}

/// S_B and S_C of one parameterisation.
template <typename Scalar = double>
struct InputOutputMatrices {
    MatrixX<Scalar> S_B;  ///< W U, N×D
    MatrixX<Scalar> S_C;  ///< U, N×D
};

/// Build S_C = U and S_B = ±diag(softplus(w) + θ)·U with the sign pattern of `sign`.
/// \param U     N×D (e.g. unit_upper_triangular(free))
/// \param w     length N, free
/// \param theta > 0: keeps every |W_nn| ≥ θ, so μ's sign structure is strict on U's row space
/// \throws std::invalid_argument for mismatched sizes, θ ≤ 0 or non-finite entries
template <typename UDerived, typename WDerived>
InputOutputMatrices<typename UDerived::Scalar> input_output_matrices(
    const Eigen::MatrixBase<UDerived>& U, const Eigen::MatrixBase<WDerived>& w,
    typename UDerived::Scalar theta, MuSign sign = MuSign::PositiveSemidefinite) {
    using Scalar = typename UDerived::Scalar;
    static_assert(std::is_same<Scalar, typename WDerived::Scalar>::value,
                  "input_output_matrices: U and w must have the same scalar type.");
    if (w.rows() != 1 && w.cols() != 1)
        throw std::invalid_argument("w is " + std::to_string(w.rows()) + "x" + std::to_string(w.cols()) +
                                    ", expected a vector of N entries");
    if (w.size() != U.rows())
        throw std::invalid_argument("w has " + std::to_string(w.size()) + " entries, expected N = " +
                                    std::to_string(U.rows()) + " (the rows of U)");
    if (!(theta > 0) || !std::isfinite(theta)) throw std::invalid_argument("theta must be finite and > 0");
    if (!U.allFinite()) throw std::invalid_argument("U has a non-finite entry");
    if (!w.allFinite()) throw std::invalid_argument("w has a non-finite entry");
    VectorX<Scalar> W(w.size());
    for (Eigen::Index n = 0; n < w.size(); ++n) W(n) = softplus(Scalar(w(n))) + theta;  // w: row or column
    if (sign == MuSign::NegativeSemidefinite) W = -W;
    if (sign == MuSign::Mixed) W.tail(W.size() / 2) *= Scalar(-1);
    return {W.asDiagonal() * U, U};
}

}  // namespace ssmdyn
