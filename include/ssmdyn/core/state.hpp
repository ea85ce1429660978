#pragma once
/// \file state.hpp
/// The state of the token dynamics: the D×L token matrix X (column l is token l),
/// stored column by column in a flat Eigen vector of length D·L.
///
/// Why a flat vector: odeint 1.74's error-controlled steppers do not compile with a
/// dynamic Eigen *matrix* state, while a vector state works with all of them.

#include <Eigen/Core>

namespace ssmdyn {

/// Flat state: the D×L token matrix, column by column (token l = entries l·D … l·D+D−1).
template <typename Scalar>
using StateVector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// A dense dynamic matrix (parameters, token matrices).
template <typename Scalar>
using MatrixX = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// A dense dynamic column vector.
template <typename Scalar>
using VectorX = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// View a flat state as the D×L token matrix, without copying.
/// \param x flat state of length D·L
/// \param dim the token dimension D (must divide x.size())
/// \return a writable D×L map whose column l is token l
template <typename Derived>
Eigen::Map<MatrixX<typename Derived::Scalar>> token_matrix(Eigen::PlainObjectBase<Derived>& x,
                                                           Eigen::Index dim) {
    static_assert(Derived::ColsAtCompileTime == 1, "token_matrix expects a flat state vector.");
    eigen_assert(dim > 0 && x.size() % dim == 0);
    return {x.data(), dim, x.size() / dim};
}

/// Read-only view of a flat state as the D×L token matrix.
template <typename Derived>
Eigen::Map<const MatrixX<typename Derived::Scalar>> token_matrix(
    const Eigen::PlainObjectBase<Derived>& x, Eigen::Index dim) {
    static_assert(Derived::ColsAtCompileTime == 1, "token_matrix expects a flat state vector.");
    eigen_assert(dim > 0 && x.size() % dim == 0);
    return {x.data(), dim, x.size() / dim};
}

/// Flatten a D×L token matrix (column l = token l) into a state vector.
template <typename Derived>
StateVector<typename Derived::Scalar> to_state(const Eigen::MatrixBase<Derived>& tokens) {
    StateVector<typename Derived::Scalar> x(tokens.size());
    Eigen::Map<MatrixX<typename Derived::Scalar>>(x.data(), tokens.rows(), tokens.cols()) = tokens;
    return x;
}

}  // namespace ssmdyn
