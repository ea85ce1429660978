#pragma once
/// \file state.hpp
/// The state of the token dynamics: the D×L token matrix X (column l is token l),
/// stored column by column in a flat Eigen vector of length D·L.
///
/// Why a flat vector: odeint 1.74's error-controlled steppers do not compile with a
/// dynamic Eigen *matrix* state, while a vector state works with all of them.

#include <stdexcept>
#include <string>

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

/// Tokens given in either of the library's two forms, as the D×L token matrix (a copy):
/// a matrix with D rows is taken as it is (column l = token l), a column vector whose
/// length is a multiple of D as the flat state (token l = entries l·D … l·D+D−1). Any Eigen
/// expression will do.
/// \param x    the tokens, D×L or flat (length D·L)
/// \param dim  the token dimension D, >= 1
/// \param what how error messages name x (e.g. "tokens", "x0")
/// \throws std::invalid_argument naming `what` when x is in neither form, or empty
template <typename Derived>
MatrixX<typename Derived::Scalar> to_token_matrix(const Eigen::MatrixBase<Derived>& x, Eigen::Index dim,
                                                  const std::string& what = "tokens") {
    using Scalar = typename Derived::Scalar;
    if (dim < 1) throw std::invalid_argument(what + ": the token dimension D = " + std::to_string(dim) + " must be >= 1");
    if (x.size() == 0) throw std::invalid_argument(what + " is empty; need at least one token");
    if (x.rows() == dim) return x;
    if (x.cols() == 1 && x.rows() % dim == 0) {
        const StateVector<Scalar> flat = x;
        return Eigen::Map<const MatrixX<Scalar>>(flat.data(), dim, flat.size() / dim);
    }
    throw std::invalid_argument(what + " is " + std::to_string(x.rows()) + "x" + std::to_string(x.cols()) +
                                "; expected D x L (D = " + std::to_string(dim) +
                                " rows, column l = token l) or a flat vector of D*L entries");
}

/// Tokens given in either form (see to_token_matrix) as the flat state (a copy).
template <typename Derived>
StateVector<typename Derived::Scalar> to_state(const Eigen::MatrixBase<Derived>& x, Eigen::Index dim,
                                               const std::string& what = "tokens") {
    const MatrixX<typename Derived::Scalar> X = to_token_matrix(x, dim, what);
    return Eigen::Map<const StateVector<typename Derived::Scalar>>(X.data(), X.size());
}

}  // namespace ssmdyn
