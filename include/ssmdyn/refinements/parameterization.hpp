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

/// The vector-Jacobian product of unit_upper_triangular: ∂ℓ/∂free given ∂ℓ/∂U, i.e. grad_U
/// with the entries on and below the diagonal set to 0 (U does not depend on them).
/// \param grad_U ∂ℓ/∂U, shaped like the free matrix
template <typename Derived>
MatrixX<typename Derived::Scalar> unit_upper_triangular_vjp(const Eigen::MatrixBase<Derived>& grad_U) {
    using Scalar = typename Derived::Scalar;
    return MatrixX<Scalar>(grad_U.template triangularView<Eigen::StrictlyUpper>());
}

/// S_B and S_C of one parameterisation.
template <typename Scalar = double>
struct InputOutputMatrices {
    MatrixX<Scalar> S_B;  ///< W U, N×D
    MatrixX<Scalar> S_C;  ///< U, N×D
};

namespace detail {

/// The sign `sign` gives W_nn, entry n of W's N diagonal entries: ±1.
template <typename Scalar>
Scalar diagonal_sign(MuSign sign, Eigen::Index n, Eigen::Index N) {
    if (sign == MuSign::NegativeSemidefinite) return Scalar(-1);
    if (sign == MuSign::Mixed && n >= N - N / 2) return Scalar(-1);  // the second half
    return Scalar(1);
}

/// The checks of input_output_matrices on U, w and θ.
template <typename UDerived, typename WDerived>
void check_input_output_args(const Eigen::MatrixBase<UDerived>& U, const Eigen::MatrixBase<WDerived>& w,
                             typename UDerived::Scalar theta) {
    if (w.rows() != 1 && w.cols() != 1)
        throw std::invalid_argument("w is " + std::to_string(w.rows()) + "x" + std::to_string(w.cols()) +
                                    ", expected a vector of N entries");
    if (w.size() != U.rows())
        throw std::invalid_argument("w has " + std::to_string(w.size()) + " entries, expected N = " +
                                    std::to_string(U.rows()) + " (the rows of U)");
    if (!(theta > 0) || !std::isfinite(theta)) throw std::invalid_argument("theta must be finite and > 0");
    if (!U.allFinite()) throw std::invalid_argument("U has a non-finite entry");
    if (!w.allFinite()) throw std::invalid_argument("w has a non-finite entry");
}

}  // namespace detail

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
    detail::check_input_output_args(U, w, theta);
    const Eigen::Index N = w.size();
    VectorX<Scalar> W(N);
    for (Eigen::Index n = 0; n < N; ++n)  // w: row or column
        W(n) = detail::diagonal_sign<Scalar>(sign, n, N) * (softplus(Scalar(w(n))) + theta);
    return {W.asDiagonal() * U, U};
}

/// Gradients of a scalar loss through input_output_matrices, written by
/// input_output_matrices_vjp.
template <typename Scalar = double>
struct InputOutputGradients {
    MatrixX<Scalar> U;  ///< ∂ℓ/∂U, N×D (for the free matrix: unit_upper_triangular_vjp)
    VectorX<Scalar> w;  ///< ∂ℓ/∂w, length N
};

/// The vector-Jacobian product of input_output_matrices: with W = diag(σ_n (softplus(w_n) + θ))
/// (σ_n = ±1 from `sign`), ∂ℓ/∂U = G_C + W G_B and ∂ℓ/∂w_n = σ_n softplus'(w_n) Σ_d (G_B)_nd U_nd.
/// θ is a constant of the parameterisation, not differentiated.
/// \param U, w, theta, sign as for input_output_matrices
/// \param grad_S_B G_B = ∂ℓ/∂S_B, N×D;  \param grad_S_C G_C = ∂ℓ/∂S_C, N×D
/// \throws std::invalid_argument as input_output_matrices does, and for a gradient not N×D
template <typename UDerived, typename WDerived, typename GBDerived, typename GCDerived>
InputOutputGradients<typename UDerived::Scalar> input_output_matrices_vjp(
    const Eigen::MatrixBase<UDerived>& U, const Eigen::MatrixBase<WDerived>& w, typename UDerived::Scalar theta,
    MuSign sign, const Eigen::MatrixBase<GBDerived>& grad_S_B, const Eigen::MatrixBase<GCDerived>& grad_S_C) {
    using Scalar = typename UDerived::Scalar;
    static_assert(std::is_same<Scalar, typename WDerived::Scalar>::value &&
                      std::is_same<Scalar, typename GBDerived::Scalar>::value &&
                      std::is_same<Scalar, typename GCDerived::Scalar>::value,
                  "input_output_matrices_vjp: U, w and the gradients must have the same scalar type.");
    detail::check_input_output_args(U, w, theta);
    const auto check_shape = [&](const char* name, Eigen::Index rows, Eigen::Index cols) {
        if (rows != U.rows() || cols != U.cols())
            throw std::invalid_argument(std::string(name) + " is " + std::to_string(rows) + "x" +
                                        std::to_string(cols) + ", expected N x D = " + std::to_string(U.rows()) +
                                        "x" + std::to_string(U.cols()) + " (the shape of U)");
    };
    check_shape("grad_S_B", grad_S_B.rows(), grad_S_B.cols());
    check_shape("grad_S_C", grad_S_C.rows(), grad_S_C.cols());
    const Eigen::Index N = w.size();
    InputOutputGradients<Scalar> out{grad_S_C, VectorX<Scalar>(N)};
    for (Eigen::Index n = 0; n < N; ++n) {
        const Scalar wn = w(n);  // w: row or column
        const Scalar s = detail::diagonal_sign<Scalar>(sign, n, N);
        out.U.row(n) += s * (softplus(wn) + theta) * grad_S_B.row(n);
        out.w(n) = s * Softplus{}.derivative(wn) * grad_S_B.row(n).dot(U.row(n));
    }
    return out;
}

}  // namespace ssmdyn
