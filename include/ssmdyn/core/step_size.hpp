#pragma once
/// \file step_size.hpp
/// Step-size maps Δ = φ(S_Δ x + b_Δ), applied per channel.
///
/// A step-size map is any copyable type with `Scalar operator()(Scalar z) const` that
/// returns a positive, finite number for finite z. It may also provide an array form,
/// `template <class Derived> auto vectorized(const Eigen::ArrayBase<Derived>& z) const`,
/// which the scan uses when present so that Eigen can vectorise the map:
///
/// \code
/// struct Exponential {  // Δ = exp(z)
///     template <class S> S operator()(S z) const { using std::exp; return exp(z); }
/// };
/// ssmdyn::SelectiveSystem<double, Exponential> sys(params);
/// \endcode
///
/// The derivatives of the scan (selective_scan_jvp, selective_scan_vjp) also need
/// `Scalar derivative(Scalar z) const` = φ'(z), and use an array form
/// `vectorized_derivative` the same way when the map has one (Softplus has both).

#include <cmath>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "detail/simd.hpp"

namespace ssmdyn {

/// Mamba's step-size map, softplus(z) = ln(1 + e^z), computed as
/// \f$ \max(z, 0) + \mathrm{log1p}(e^{-|z|}) \f$: no overflow for large z, and full
/// relative precision for very negative z (where it equals e^z).
struct Softplus {
    template <typename Scalar>
    Scalar operator()(Scalar z) const {
        return detail::softplus_scalar(z);
    }

    /// Entrywise softplus of an Eigen array expression, vectorised (see detail::softplus_op).
    template <typename Derived>
    auto vectorized(const Eigen::ArrayBase<Derived>& z) const;

    /// The derivative softplus'(z) = sigmoid(z) = 1 / (1 + e^{−z}), computed with
    /// t = e^{−|z|} ≤ 1 as \f$ t/(1+t) \f$ for z < 0 and \f$ 1/(1+t) \f$ for z ≥ 0: no
    /// overflow, and full relative precision for very negative z (where it equals e^z).
    /// The derivatives of the scan need it (scan_derivatives.hpp).
    template <typename Scalar>
    Scalar derivative(Scalar z) const {
        using std::exp;
        const Scalar t = exp(z < Scalar(0) ? z : -z);
        return (z < Scalar(0) ? t : Scalar(1)) / (Scalar(1) + t);
    }

    /// Entrywise sigmoid of an Eigen array expression, vectorised: 1 / (1 + e^{−z}) with one
    /// SIMD exponential. In double it equals derivative() to a few ulp for z ≥ −708; below
    /// that both are under 1e-307 (Eigen's exp saturates at the largest finite double, so this form gives
    /// at most 6e-309 where the scalar form gives e^z).
    template <typename Derived>
    auto vectorized_derivative(const Eigen::ArrayBase<Derived>& z) const {
        using Scalar = typename Derived::Scalar;
        return (Scalar(1) + (-z).exp()).inverse();
    }
};

/// Free function form of Softplus.
template <typename Scalar>
Scalar softplus(Scalar z) {
    return Softplus{}(z);
}


template <typename Derived>
auto Softplus::vectorized(const Eigen::ArrayBase<Derived>& z) const {
    return z.unaryExpr(detail::softplus_op<typename Derived::Scalar>{});
}

namespace detail {

template <typename Map, typename Array, typename = void>
struct has_array_form : std::false_type {};

template <typename Map, typename Array>
struct has_array_form<Map, Array,
                      std::void_t<decltype(std::declval<const Map&>().vectorized(
                          std::declval<const Eigen::ArrayBase<Array>&>()))>> : std::true_type {};

/// out = φ(z) entrywise, through the map's array form when it has one.
template <typename StepSizeMap, typename In, typename Out>
void apply_step_size(const StepSizeMap& phi, const Eigen::ArrayBase<In>& z,
                     Eigen::ArrayBase<Out>& out) {
    if constexpr (has_array_form<StepSizeMap, In>::value) {
        out = phi.vectorized(z);
    } else {
        using Scalar = typename In::Scalar;
        out = z.unaryExpr([&phi](Scalar v) { return phi(v); });
    }
}

}  // namespace detail
}  // namespace ssmdyn
