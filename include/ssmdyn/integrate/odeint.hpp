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
/// but prefer ssmdyn::integrate_guarded (driver.hpp) or ssmdyn::simulate (simulate.hpp),
/// which also detect blow-up, NaN and step-size collapse — odeint's integrate_* functions
/// do none of these.
///
/// Only the odeint headers the library uses are included, not all of
/// <boost/numeric/odeint.hpp> (which also pulls in uBLAS, Boost.MultiArray, the implicit
/// and multistep steppers and the iterators, and doubles the time to compile a file that
/// includes ssmdyn). Code that wants more of odeint, e.g. integrate_const, includes that
/// header itself, after this one.

// The steppers and their error-controlled and dense-output forms.
#include <boost/numeric/odeint/stepper/bulirsch_stoer.hpp>
#include <boost/numeric/odeint/stepper/controlled_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/dense_output_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta4.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_cash_karp54.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_dopri5.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_fehlberg78.hpp>
#include <boost/numeric/odeint/stepper/stepper_categories.hpp>
// make_controlled / make_dense_output, with the specialisations that make them work for
// these three pairs (without them make_controlled does not compile).
#include <boost/numeric/odeint/stepper/generation/generation_controlled_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_dense_output_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_runge_kutta_cash_karp54.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_runge_kutta_dopri5.hpp>
#include <boost/numeric/odeint/stepper/generation/generation_runge_kutta_fehlberg78.hpp>
#include <boost/numeric/odeint/stepper/generation/make_controlled.hpp>
#include <boost/numeric/odeint/stepper/generation/make_dense_output.hpp>
// The algebra the Eigen adaptor plugs into, std::ref support, and odeint's exceptions.
#include <boost/numeric/odeint/algebra/algebra_dispatcher.hpp>
#include <boost/numeric/odeint/algebra/vector_space_algebra.hpp>
#include <boost/numeric/odeint/util/odeint_error.hpp>
#include <boost/numeric/odeint/util/unwrap_reference.hpp>

// Order matters (Boost 1.74): the Eigen adaptor specialises templates the headers above
// declare (algebra_dispatcher_sfinae, is_resizeable_sfinae, ...) without including them,
// so it must come last.
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
    /// The dense-output form of a controlled FSAL stepper (controlled<dopri5>).
    template <typename ControlledStepper>
    using dense_output = boost::numeric::odeint::dense_output_runge_kutta<ControlledStepper>;
};

}  // namespace ssmdyn
