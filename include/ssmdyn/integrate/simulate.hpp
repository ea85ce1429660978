#pragma once
/// \file simulate.hpp
/// simulate(): integrate dX/dt = f(X) with a stepper named by options.stepper, through
/// the guarded driver (driver.hpp), ending with an explicit status.
///
/// The convenience layer over integrate_guarded(): it builds the odeint stepper from
/// SimulateOptions (method, tolerances, error norm) and takes the initial tokens in either
/// of the library's forms. For a stepper of your own, call integrate_guarded() directly.

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "driver.hpp"
#include "odeint.hpp"
#include "rosenbrock.hpp"
#include "status.hpp"
#include "stiff_switching.hpp"
#include "../core/causal_jacobian.hpp"
#include "../core/state.hpp"

namespace ssmdyn {
namespace detail {

/// odeint error checker for both norms, chosen at run time (one stepper type per method
/// instead of two): odeint's per-component scale atol + rtol·(|x_i| + dt·|f_i(x)|), then the
/// largest scaled component (ErrorNorm::Max, as odeint's default_error_checker) or their
/// root mean square (ErrorNorm::Rms).
template <typename Scalar>
struct NormErrorChecker {
    using value_type = Scalar;
    Scalar atol = Scalar(1e-10), rtol = Scalar(1e-8);
    ErrorNorm norm = ErrorNorm::Max;

    template <typename Algebra, typename State, typename Deriv, typename Err, typename Time>
    Scalar error(Algebra&, const State& x, const Deriv& dxdt, Err& err, Time dt) const {
        using std::abs;
        using std::sqrt;
        const auto scaled = err.array().abs() / (atol + rtol * (x.array().abs() + abs(dt) * dxdt.array().abs()));
        return norm == ErrorNorm::Rms ? Scalar(sqrt(scaled.square().mean())) : Scalar(scaled.maxCoeff());
    }
};

/// The error-controlled form of an odeint error stepper with the tolerances and norm asked for.
template <typename ErrorStepper, typename Scalar>
auto make_controlled(ErrorStepper stepper, const SimulateOptions<Scalar>& o) {
    using Checker = NormErrorChecker<Scalar>;
    using Controlled = boost::numeric::odeint::controlled_runge_kutta<ErrorStepper, Checker>;
    return Controlled(Checker{o.atol, o.rtol, o.error_norm}, typename Controlled::step_adjuster_type(), stepper);
}

/// Whether causal_jacobian(system) gives the system's exact structured Jacobian (a
/// SelectiveSystem), which the stiff method needs.
template <typename System, typename = void>
struct has_causal_jacobian : std::false_type {};
template <typename System>
struct has_causal_jacobian<System, std::void_t<decltype(causal_jacobian(std::declval<const System&>()))>>
    : std::true_type {};

/// The structured Jacobian's memory above which the automatic switch stays off (the stiff
/// method keeps 2·D²·L numbers: 512 MB is D = 256 at L = 512).
constexpr std::size_t stiff_switching_max_bytes = std::size_t(512) << 20;

/// Throws std::invalid_argument for the options only simulate() reads (the stepper's).
template <typename Scalar>
void check_stepper_options(const SimulateOptions<Scalar>& o) {
    using std::isfinite;
    if (!(o.rtol >= 0) || !(o.atol >= 0) || !isfinite(o.rtol) || !isfinite(o.atol) || o.rtol + o.atol == 0)
        throw std::invalid_argument("rtol and atol must be finite, >= 0 and not both 0");
    const Scalar eps = std::numeric_limits<Scalar>::epsilon();
    if (o.rtol != 0 && o.rtol < 4 * eps) {
        std::ostringstream os;
        os << "rtol = " << double(o.rtol) << " is below what this precision resolves (epsilon "
           << double(eps) << "): use rtol >= " << double(4 * eps) << " or 0";
        throw std::invalid_argument(os.str());
    }
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


/// simulate() on the flat state, after its checks: one instantiation per system and
/// scalar, whatever expression x0 was (see SSMDYN_EXTERN_TEMPLATES in instances.hpp).
template <typename System, typename Scalar>
SimulateResult<Scalar> simulate_state(const System& system, const StateVector<Scalar>& x, Scalar t_end,
                                      const SimulateOptions<Scalar>& options) {
    using Types = odeint_steppers<Scalar>;
    auto run = [&](auto&& stepper) { return integrate_guarded(stepper, system, x, t_end, options); };
    const Scalar atol = options.atol, rtol = options.rtol;
    constexpr bool structured = detail::has_causal_jacobian<System>::value;
    // dopri5, paired with the stiff method when the switch is on and the system has the
    // structured Jacobian (the other explicit steppers run as asked: one switching pair
    // keeps the instantiations, and the compile time, in check).
    auto dopri5 = [&] {
        auto controlled = detail::make_controlled(typename Types::dopri5(), options);
        if constexpr (structured) {
            auto jacobian = causal_jacobian(system);
            if (options.stiff_switching &&
                jacobian.bytes_for(x.size() / jacobian.dim()) <= detail::stiff_switching_max_bytes) {
                RosenbrockStepper<decltype(jacobian)> stiff(std::move(jacobian), atol, rtol, options.error_norm);
                auto jvp = [&system](const StateVector<Scalar>& at, const StateVector<Scalar>& v,
                                     StateVector<Scalar>& out) { causal_jvp(system, at, v, out); };
                return run(StiffSwitchingStepper<decltype(controlled), decltype(stiff), decltype(jvp)>(
                    std::move(controlled), std::move(stiff), jvp, StiffnessTest{}));
            }
        }
        return run(std::move(controlled));
    };
    switch (options.stepper) {
        case Stepper::Dopri5: return dopri5();
        case Stepper::CashKarp: return run(detail::make_controlled(typename Types::cash_karp(), options));
        case Stepper::Fehlberg78: return run(detail::make_controlled(typename Types::fehlberg78(), options));
        case Stepper::BulirschStoer: return run(typename Types::bulirsch_stoer(atol, rtol));
        case Stepper::Rk4: return run(typename Types::rk4());
        case Stepper::Rosenbrock4:
            if constexpr (structured) {
                auto jacobian = causal_jacobian(system);
                return run(RosenbrockStepper<decltype(jacobian)>(std::move(jacobian), atol, rtol, options.error_norm));
            } else {
                throw std::invalid_argument(
                    "stepper rosenbrock4 needs the exact structured Jacobian of a SelectiveSystem; this system "
                    "has none (causal_jacobian(system) is not defined for it)");
            }
    }
    throw std::invalid_argument("stepper is not one of the Stepper values");
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
    detail::check_stepper_options(options);
    return detail::simulate_state(system, detail::initial_state(system, x0), t_end, options);
}

}  // namespace ssmdyn

#ifdef SSMDYN_EXTERN_TEMPLATES
// The project's own programs (tests, examples, the CLI) are built with this defined and
// link src/instances.cpp, which instantiates these once: each heavy instantiation (every
// stepper, the stiff pair, the driver) is then compiled once, not once per program.
namespace ssmdyn::detail {
extern template SimulateResult<double> simulate_state<SelectiveSystem<double, Softplus>, double>(
    const SelectiveSystem<double, Softplus>&, const StateVector<double>&, double, const SimulateOptions<double>&);
}  // namespace ssmdyn::detail
#endif
