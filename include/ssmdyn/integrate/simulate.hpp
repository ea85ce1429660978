#pragma once
/// \file simulate.hpp
/// simulate(): integrate dX/dt = f(X) with a stepper named by options.stepper, through
/// the guarded driver (driver.hpp), ending with an explicit status.
///
/// The convenience layer over integrate_guarded(): it builds the odeint stepper from
/// SimulateOptions (method, tolerances, error norm) and takes the initial tokens in either
/// of the library's forms. For a stepper of your own, call integrate_guarded() directly.

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "driver.hpp"
#include "odeint.hpp"
#include "status.hpp"
#include "../core/state.hpp"

namespace ssmdyn {
namespace detail {

/// odeint error checker with ErrorNorm::Rms: odeint's per-component scale, then the root
/// mean square (odeint's own default_error_checker takes the maximum).
template <typename Scalar>
struct RmsErrorChecker {
    using value_type = Scalar;
    Scalar atol = Scalar(1e-10), rtol = Scalar(1e-8);

    template <typename Algebra, typename State, typename Deriv, typename Err, typename Time>
    Scalar error(Algebra&, const State& x, const Deriv& dxdt, Err& err, Time dt) const {
        using std::abs;
        using std::sqrt;
        const auto scale = atol + rtol * (x.array().abs() + abs(dt) * dxdt.array().abs());
        return sqrt((err.array() / scale).square().mean());
    }
};

/// Throws std::invalid_argument for the options only simulate() reads (the stepper's).
template <typename Scalar>
void check_stepper_options(const SimulateOptions<Scalar>& o) {
    using std::isfinite;
    if (!(o.rtol >= 0) || !(o.atol >= 0) || !isfinite(o.rtol) || !isfinite(o.atol) || o.rtol + o.atol == 0)
        throw std::invalid_argument("rtol and atol must be finite, >= 0 and not both 0");
    if (o.error_norm == ErrorNorm::Rms && o.stepper == Stepper::BulirschStoer)
        throw std::invalid_argument("error_norm rms applies to dopri5, cash_karp and fehlberg78, not bulirsch_stoer");
}

/// x0 as the flat state: a column vector as it is; with a system that has dim(), also the
/// D×L token matrix (column l = token l).
template <typename System, typename Derived>
StateVector<typename Derived::Scalar> initial_state(const System& system, const Eigen::MatrixBase<Derived>& x0) {
    if constexpr (system_has_dim<System>::value) {
        return to_state(x0, static_cast<Eigen::Index>(system.dim()), "x0");
    } else {
        (void)system;
        if (x0.cols() != 1)
            throw std::invalid_argument("x0 is " + std::to_string(x0.rows()) + "x" + std::to_string(x0.cols()) +
                                        "; expected a flat column vector (this system has no dim() "
                                        "to read a D x L token matrix with)");
        return x0;
    }
}

}  // namespace detail

/// Integrate dx/dt = system(x) from options.t_start to t_end with the stepper named by
/// options.stepper, inside the guards of integrate_guarded().
///
/// Never hangs (step budget and minimum step), never returns NaN or Inf as a result
/// (every trial state is checked), and says how it ended in SimulateResult::status.
///
/// \code
/// const ssmdyn::SelectiveSystem<double> system(ssmdyn::S6Params<double>::one_dimensional({1.0, 0.5, 1.0}));
/// Eigen::RowVector3d tokens(1.0, -0.5, 0.25);   // 1×L: D = 1 row, column l = token l
/// const auto r = ssmdyn::simulate(system, tokens, 10.0);
/// \endcode
///
/// \param system  an odeint System, `void operator()(const State&, State&, Scalar) const`,
///                with State = Eigen::Matrix<Scalar, Dynamic, 1>; taken by reference,
///                never copied. If it has validate_state(x), x0 is checked with it.
/// \param x0      the initial tokens, any Eigen expression with a floating-point Scalar:
///                the flat state (a column vector of length D·L) or, when the system has
///                dim(), the D×L token matrix (column l = token l)
/// \param t_end   the final time, >= options.t_start
/// \param options stepper, tolerances, blow-up bound, budget and recording
/// \return the status, the initial and final states, the recorded trajectory and the work
/// \throws std::invalid_argument for invalid options, or an initial state that is in
///         neither form, empty or not finite (the message names the field)
template <typename System, typename Derived>
SimulateResult<typename Derived::Scalar> simulate(const System& system, const Eigen::MatrixBase<Derived>& x0,
                                                  typename Derived::Scalar t_end,  // a double literal works
                                                  const SimulateOptions<typename Derived::Scalar>& options = {}) {
    using Scalar = typename Derived::Scalar;
    static_assert(std::is_floating_point<Scalar>::value, "simulate needs a floating-point Scalar such as double.");
    namespace odeint = boost::numeric::odeint;
    using Types = odeint_steppers<Scalar>;

    detail::check_stepper_options(options);
    const StateVector<Scalar> x = detail::initial_state(system, x0);

    auto run = [&](auto&& stepper) { return integrate_guarded(stepper, system, x, t_end, options); };
    const Scalar atol = options.atol, rtol = options.rtol;
    // The error-controlled form of `error_stepper`, with the norm asked for.
    auto controlled = [&](auto error_stepper) {
        if (options.error_norm == ErrorNorm::Rms) {
            using Checker = detail::RmsErrorChecker<Scalar>;
            return run(odeint::controlled_runge_kutta<decltype(error_stepper), Checker>(Checker{atol, rtol}));
        }
        return run(odeint::make_controlled(atol, rtol, error_stepper));
    };
    switch (options.stepper) {
        case Stepper::Dopri5: return controlled(typename Types::dopri5());
        case Stepper::CashKarp: return controlled(typename Types::cash_karp());
        case Stepper::Fehlberg78: return controlled(typename Types::fehlberg78());
        case Stepper::BulirschStoer: return run(typename Types::bulirsch_stoer(atol, rtol));
        case Stepper::Rk4: return run(typename Types::rk4());
    }
    throw std::invalid_argument("stepper is not one of the Stepper values");
}

}  // namespace ssmdyn
