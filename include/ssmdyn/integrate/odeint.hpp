#pragma once
/// \file odeint.hpp
/// The one place that wires Boost.Odeint to Eigen: the flat Eigen state with odeint's
/// vector_space_algebra, and the steppers ssmdyn offers by name.
///
/// Any odeint stepper works with SelectiveSystem directly, e.g.
/// \code
/// ssmdyn::odeint_steppers<double>::rk4 stepper;
/// stepper.do_step(system, x, 0.0, 0.01);
/// \endcode
/// but prefer ssmdyn::simulate (simulate.hpp), which also detects blow-up, NaN and
/// step-size collapse — odeint's integrate_* functions do none of these.

// Order matters (Boost 1.74): odeint's Eigen adaptor specialises templates that
// <boost/numeric/odeint.hpp> declares, so the adaptor must come second.
#include <boost/numeric/odeint.hpp>
#include <boost/numeric/odeint/external/eigen/eigen.hpp>

#include "../core/state.hpp"

namespace ssmdyn {

/// Odeint stepper types for the flat Eigen state of scalar type Scalar.
template <typename Scalar>
struct odeint_steppers {
    using State = StateVector<Scalar>;
    using algebra = boost::numeric::odeint::vector_space_algebra;

    using dopri5 = boost::numeric::odeint::runge_kutta_dopri5<State, Scalar, State, Scalar, algebra>;
    using cash_karp =
        boost::numeric::odeint::runge_kutta_cash_karp54<State, Scalar, State, Scalar, algebra>;
    using fehlberg78 =
        boost::numeric::odeint::runge_kutta_fehlberg78<State, Scalar, State, Scalar, algebra>;
    using rk4 = boost::numeric::odeint::runge_kutta4<State, Scalar, State, Scalar, algebra>;
    using bulirsch_stoer =
        boost::numeric::odeint::bulirsch_stoer<State, Scalar, State, Scalar, algebra>;

    /// The error-controlled form of an explicit error stepper (dopri5, cash_karp, fehlberg78).
    template <typename ErrorStepper>
    using controlled = boost::numeric::odeint::controlled_runge_kutta<ErrorStepper>;
};

}  // namespace ssmdyn
