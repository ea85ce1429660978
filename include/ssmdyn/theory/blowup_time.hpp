#pragma once
/// \file blowup_time.hpp
/// Finite-time blow-up of the first token by quadrature (DESIGN.md §2).
///
/// Token 1 sees only itself: dx_1/dt = μ x_1³ Δ(x_1). With μ > 0 it moves away from 0
/// monotonically and reaches infinity at
/// \f[ T^* = \int_{|x_1(0)|}^{\infty} \frac{du}{\mu\, u^3\, \Delta(\mathrm{sign}(x_1(0))\,u)} \f]
/// when the integral converges.

#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include <boost/math/quadrature/exp_sinh.hpp>

#include "../core/params.hpp"
#include "../core/step_size.hpp"

namespace ssmdyn {

/// ∫_{u0}^∞ du / (u³ Δ(u)) for a positive map Δ of the token's magnitude, by exp-sinh
/// quadrature; empty when the integral diverges, or converges too slowly to be evaluated
/// to a relative accuracy of 1e-9 (e.g. Δ(u) ~ u^{-2+ε} for small ε).
/// \param delta_of_magnitude u ↦ Δ at the token value of magnitude u (u ≥ u0 > 0)
/// \param u0 the starting magnitude, > 0
template <typename Scalar, typename F>
std::optional<Scalar> blowup_integral(F delta_of_magnitude, Scalar u0) {
    if (!(u0 > 0) || !std::isfinite(u0)) throw std::invalid_argument("u0 must be finite and > 0");
    boost::math::quadrature::exp_sinh<Scalar> quadrature;
    auto integrand = [&](Scalar v) {
        const Scalar u = u0 + v;
        return Scalar(1) / (u * u * u * delta_of_magnitude(u));
    };
    try {
        Scalar error = 0;
        const Scalar value = quadrature.integrate(integrand, Scalar(0),
                                                  std::numeric_limits<Scalar>::infinity(),
                                                  Scalar(1e-14), &error);
        if (std::isfinite(value) && error <= Scalar(1e-9) * value) return value;
    } catch (const std::exception&) {
        // exp_sinh throws when the integrand overflows: a divergent integral.
    }
    return std::nullopt;
}

/// The blow-up time T* of token 1 in the 1-D system with step-size map φ: empty when
/// token 1 does not blow up (μ ≤ 0, x_1(0) = 0, or the integral diverges). Token 1 sees
/// only itself, so the decay a plays no part. For softplus the integral converges exactly
/// when s·x_1(0) ≥ 0; it is then evaluated to about 1e-14 relative.
/// \param system μ, s and b of the 1-D system
/// \param x1     the first token's initial value x_1(0)
template <typename Scalar, typename StepSizeMap = Softplus>
std::optional<Scalar> first_token_blowup_time(const OneDimensional<Scalar>& system, Scalar x1,
                                              const StepSizeMap& phi = {}) {
    const Scalar mu = system.mu, s = system.s, b = system.b;
    if (!(mu > 0) || x1 == 0) return std::nullopt;
    if constexpr (std::is_same<StepSizeMap, Softplus>::value) {
        // Δ ~ e^{s·x} → 0 exponentially when s·x_1 < 0: the integrand grows, no blow-up.
        if (s * x1 < 0) return std::nullopt;
    }
    const Scalar sign = x1 > 0 ? Scalar(1) : Scalar(-1);
    const auto integral =
        blowup_integral([&](Scalar u) { return phi(s * sign * u + b); }, std::abs(x1));
    if (!integral) return std::nullopt;
    return *integral / mu;
}

}  // namespace ssmdyn
