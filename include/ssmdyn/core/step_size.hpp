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
