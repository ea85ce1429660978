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

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

namespace ssmdyn {

/// Mamba's step-size map, softplus(z) = ln(1 + e^z), computed as
/// \f$ \max(z, 0) + \mathrm{log1p}(e^{-|z|}) \f$: no overflow for large z, and full
/// relative precision for very negative z (where it equals e^z).
struct Softplus {
    template <typename Scalar>
    Scalar operator()(Scalar z) const {
        using std::abs;
        using std::exp;
        using std::log1p;
        return (z > Scalar(0) ? z : Scalar(0)) + log1p(exp(-abs(z)));
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

namespace detail {

/// Softplus as an Eigen functor with a packet form, so that `z.unaryExpr(softplus_op)`
/// runs in SIMD registers in one pass with no temporaries. Eigen has no vectorised log1p,
/// so log1p(t), t = e^{-|z|}, is taken as log(u)·t/(u − 1) with u = 1 + t (Goldberg's
/// identity: the rounding of u cancels between log(u) and u − 1). Where u rounds to 1
/// both factors are clamped to the smallest normal number, their ratio is 1 and the
/// result is t, which then equals log1p(t) to full precision. e^{-|z|} is squared from
/// e^{-|z|/2} because Eigen's exp stops at the normal range; this way it stays accurate
/// down to the subnormal numbers. Error: a few ulp (the scalar tail uses Softplus itself).
template <typename Scalar>
struct softplus_op {
    Scalar operator()(const Scalar& z) const { return Softplus{}(z); }

    template <typename Packet>
    Packet packetOp(const Packet& z) const {
        using namespace Eigen::internal;
        const Packet one = pset1<Packet>(Scalar(1));
        const Packet tiny = pset1<Packet>(std::numeric_limits<Scalar>::min());
        const Packet root = pexp(pmul(pabs(z), pset1<Packet>(Scalar(-0.5))));
        const Packet t = pmul(root, root), u = padd(t, one);
        const Packet log1p_t = pmul(t, pdiv(pmax(plog(u), tiny), pmax(psub(u, one), tiny)));
        return padd(pmax(z, pzero(z)), log1p_t);
    }
};

}  // namespace detail

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

namespace Eigen {
namespace internal {
template <typename Scalar>
struct functor_traits<ssmdyn::detail::softplus_op<Scalar>> {
    enum {
        Cost = 4 * NumTraits<Scalar>::AddCost + 4 * NumTraits<Scalar>::MulCost + 30,
        PacketAccess = packet_traits<Scalar>::HasExp && packet_traits<Scalar>::HasLog &&
                       packet_traits<Scalar>::HasDiv && packet_traits<Scalar>::HasAbs
    };
};
}  // namespace internal
}  // namespace Eigen
