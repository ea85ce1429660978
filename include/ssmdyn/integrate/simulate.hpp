#pragma once
/// \file simulate.hpp
/// Integrate dX/dt = f(X) with an odeint stepper, ending with an explicit status.
///
/// Odeint alone is unsafe for these dynamics (checked with Boost 1.74): integrate_adaptive
/// loops forever on a finite-time blow-up, a NaN error estimate passes the step test, and
/// the infinity norm can skip a NaN. simulate() therefore owns the stepping loop: a step
/// budget, a minimum step, allFinite() on every trial result, and a norm bound.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "odeint.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// How an integration ended.
enum class Status {
    Completed,          ///< reached t_end
    BlowUp,             ///< the norm crossed the blow-up bound, or the step collapsed while it grew
    StepSizeUnderflow,  ///< the step size fell below the minimum with no growth in sight
    MaxSteps,           ///< the step budget ran out before t_end
    NonFinite           ///< the right-hand side produced NaN or Inf at a finite state
};

/// The odeint stepper simulate() uses.
enum class Stepper {
    Dopri5,         ///< Dormand–Prince 5(4), error-controlled (default)
    CashKarp,       ///< Cash–Karp 5(4), error-controlled
    Fehlberg78,     ///< Runge–Kutta–Fehlberg 7(8), error-controlled
    BulirschStoer,  ///< Bulirsch–Stoer extrapolation, error-controlled
    Rk4             ///< classical fourth-order Runge–Kutta with a fixed step
};

/// What simulate() keeps of the trajectory.
enum class Record {
    None,   ///< only the final state
    Steps,  ///< the initial state and every accepted step
    Times   ///< the states at SimulateOptions::output_times exactly
};

/// "completed", "blow_up", "step_size_underflow", "max_steps" or "non_finite".
inline const char* to_string(Status s) {
    switch (s) {
        case Status::Completed: return "completed";
        case Status::BlowUp: return "blow_up";
        case Status::StepSizeUnderflow: return "step_size_underflow";
        case Status::MaxSteps: return "max_steps";
        case Status::NonFinite: return "non_finite";
    }
    return "unknown";
}

/// "dopri5", "cash_karp", "fehlberg78", "bulirsch_stoer" or "rk4".
inline const char* to_string(Stepper s) {
    switch (s) {
        case Stepper::Dopri5: return "dopri5";
        case Stepper::CashKarp: return "cash_karp";
        case Stepper::Fehlberg78: return "fehlberg78";
        case Stepper::BulirschStoer: return "bulirsch_stoer";
        case Stepper::Rk4: return "rk4";
    }
    return "unknown";
}

/// The stepper called `name` (as printed by to_string); throws std::invalid_argument.
inline Stepper parse_stepper(const std::string& name) {
    for (Stepper s : {Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78,
                      Stepper::BulirschStoer, Stepper::Rk4})
        if (name == to_string(s)) return s;
    throw std::invalid_argument("stepper '" + name +
                                "' is unknown; use dopri5, cash_karp, fehlberg78, "
                                "bulirsch_stoer or rk4");
}

/// How the Runge–Kutta pairs (dopri5, cash_karp, fehlberg78) measure a step's error
/// estimate e. Both divide component i by the same scale atol + rtol·(|x_i| + dt·|f_i(x)|)
/// (odeint's); they differ in how the scaled components are combined.
enum class ErrorNorm {
    Max,  ///< the largest scaled component (odeint's default; the stricter)
    Rms   ///< their root mean square, as in Hairer's DOPRI5 and DOP853 and SciPy's solve_ivp
};

/// "max" or "rms".
inline const char* to_string(ErrorNorm n) { return n == ErrorNorm::Rms ? "rms" : "max"; }

/// The norm called `name` ("max" or "rms"); throws std::invalid_argument.
inline ErrorNorm parse_error_norm(const std::string& name) {
    if (name == "max") return ErrorNorm::Max;
    if (name == "rms") return ErrorNorm::Rms;
    throw std::invalid_argument("error norm '" + name + "' is unknown; use max or rms");
}

/// Options of simulate(). Defaults suit the paper's experiments.
template <typename Scalar = double>
struct SimulateOptions {
    /// The stepper.
    Stepper stepper = Stepper::Dopri5;
    /// Relative tolerance of the error-controlled steppers, >= 0.
    Scalar rtol = Scalar(1e-8);
    /// Absolute tolerance of the error-controlled steppers, >= 0 (not both zero).
    Scalar atol = Scalar(1e-10);
    /// How the Runge–Kutta pairs combine the components of the error (Rms: as SciPy and
    /// Hairer's codes do, for like-for-like comparisons). Bulirsch–Stoer has its own
    /// maximum norm and rejects Rms; rk4 has no error control and ignores it.
    ErrorNorm error_norm = ErrorNorm::Max;
    /// Adaptive steppers: the first trial step (0: chosen from |x| / |f(x)|).
    /// Rk4: the fixed step (0: (t_end − t_start) / 1000). Must be >= 0.
    Scalar dt = Scalar(0);
    /// Start time (the system is autonomous; this only shifts the clock).
    Scalar t_start = Scalar(0);
    /// Blow-up is declared once max_l,d |x_l^d| exceeds this bound, > 0.
    Scalar blowup_norm = Scalar(1e8);
    /// A step below min_dt_relative · max(1, |t|) counts as step-size collapse.
    Scalar min_dt_relative = Scalar(64) * std::numeric_limits<Scalar>::epsilon();
    /// Most accepted steps before giving up with Status::MaxSteps.
    std::size_t max_steps = 1000000;
    /// What to keep of the trajectory.
    Record record = Record::Steps;
    /// With Record::Times: increasing times in [t_start, t_end] at which to record.
    std::vector<Scalar> output_times;
};

/// Result of simulate(): an explicit status, the final (always finite) state, and the
/// recorded trajectory.
template <typename Scalar = double>
struct SimulateResult {
    Status status = Status::Completed;
    /// Time of x_final.
    Scalar t_final = Scalar(0);
    /// With Status::BlowUp: the time at which blow-up was detected (= t_final). Past the
    /// bound the remaining time is tiny (for a cubic right-hand side it scales like
    /// 1/|x|²), so the error is set by the integration's own accuracy; for rk4 it is
    /// within one step of the singularity.
    std::optional<Scalar> t_blowup;
    /// The last accepted state; never contains NaN or Inf.
    StateVector<Scalar> x_final;
    /// Recorded times and states (see Record).
    std::vector<Scalar> times;
    std::vector<StateVector<Scalar>> states;
    /// Accepted steps, rejected trial steps, and right-hand-side evaluations.
    std::size_t steps = 0, rejected_steps = 0, rhs_evaluations = 0;
    /// One sentence on why the run ended.
    std::string message;
};

namespace detail {

template <typename T, typename = void>
struct has_validate_state : std::false_type {};
template <typename T>
struct has_validate_state<T, std::void_t<decltype(std::declval<const T&>().validate_state(
                                 std::declval<const typename T::State&>()))>> : std::true_type {};

template <typename T, typename = void>
struct has_reset : std::false_type {};
template <typename T>
struct has_reset<T, std::void_t<decltype(std::declval<T&>().reset())>> : std::true_type {};

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

template <typename Scalar>
void check_options(const SimulateOptions<Scalar>& o, Scalar t_end) {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    using std::isfinite;
    if (!isfinite(o.t_start)) fail("t_start must be finite");
    if (!isfinite(t_end) || t_end < o.t_start) fail("t_end must be finite and >= t_start");
    if (!(o.rtol >= 0) || !(o.atol >= 0) || !isfinite(o.rtol) || !isfinite(o.atol) ||
        o.rtol + o.atol == 0)
        fail("rtol and atol must be finite, >= 0 and not both 0");
    if (!(o.dt >= 0) || !isfinite(o.dt)) fail("dt must be finite and >= 0");
    if (!(o.blowup_norm > 0)) fail("blowup_norm must be > 0");
    if (!(o.min_dt_relative > 0) || !isfinite(o.min_dt_relative))
        fail("min_dt_relative must be finite and > 0");
    if (o.max_steps == 0) fail("max_steps must be >= 1");
    if (o.error_norm == ErrorNorm::Rms && o.stepper == Stepper::BulirschStoer)
        fail("error_norm rms applies to dopri5, cash_karp and fehlberg78, not bulirsch_stoer");
    if (o.record == Record::Times) {
        for (std::size_t i = 0; i < o.output_times.size(); ++i) {
            const Scalar t = o.output_times[i];
            if (!(t >= o.t_start && t <= t_end))
                fail("output_times[" + std::to_string(i) + "] is outside [t_start, t_end]");
            if (i > 0 && !(t > o.output_times[i - 1]))
                fail("output_times must be strictly increasing (at index " + std::to_string(i) + ")");
        }
    }
}

/// The stepping loop shared by every stepper. `try_step(sys, in, t, out, dt)` returns
/// true on an accepted step (advancing t and suggesting the next dt) and false on a
/// rejected one (shrinking dt); `adaptive` says whether dt may be changed.
template <typename Scalar, typename Rhs, typename TryStep, typename Reset>
SimulateResult<Scalar> step_loop(Rhs& rhs, StateVector<Scalar> x, Scalar t_end,
                                 const SimulateOptions<Scalar>& opt, TryStep try_step, Reset reset,
                                 bool adaptive, std::size_t& evaluations) {
    using std::abs;
    using State = StateVector<Scalar>;
    SimulateResult<Scalar> res;
    Scalar t = opt.t_start;
    auto max_norm = [](const State& v) { return v.size() ? v.cwiseAbs().maxCoeff() : Scalar(0); };
    auto record = [&](Scalar time, const State& v) {
        res.times.push_back(time);
        res.states.push_back(v);
    };

    State dxdt(x.size()), x_new(x.size());
    rhs(x, dxdt, t);
    if (!dxdt.allFinite()) {
        res.status = Status::NonFinite;
        res.message = "the right-hand side is not finite at the initial state";
        res.t_final = t;
        res.x_final = std::move(x);
        return res;
    }
    Scalar dt = opt.dt;
    if (dt == 0) {
        if (adaptive) {  // Hairer's first guess, 1% of the time scale |x| / |f(x)|
            const Scalar fx = max_norm(dxdt), nx = max_norm(x);
            dt = (fx > 0 && nx > 0) ? Scalar(0.01) * nx / fx : Scalar(1e-6);
        } else {
            dt = (t_end - t) / 1000;
        }
    }
    if (t_end > t) dt = std::min(dt, t_end - t);

    std::size_t next_output = 0;
    const auto& outs = opt.output_times;
    auto record_reached = [&]() {
        if (opt.record == Record::Steps) record(t, x);
        while (opt.record == Record::Times && next_output < outs.size() && outs[next_output] <= t)
            record(outs[next_output++], x);
    };
    record_reached();

    Scalar norm = max_norm(x), previous_norm = norm;  // of the last two accepted states
    bool nonfinite_trial = false;                     // did the last trial step give NaN/Inf?
    auto finish = [&](Status s, std::string why) {
        res.status = s;
        res.message = std::move(why);
        if (s == Status::BlowUp) res.t_blowup = t;
    };

    for (;;) {
        const Scalar target =
            (opt.record == Record::Times && next_output < outs.size()) ? outs[next_output] : t_end;
        const Scalar tiny = opt.min_dt_relative * std::max(Scalar(1), abs(t));
        if (t_end - t <= tiny) {  // done; a last sliver below the minimum step is not stepped
            if (opt.record == Record::Steps && t != t_end) res.times.back() = t_end;
            t = t_end;
            if (opt.record == Record::Times) record_reached();
            finish(Status::Completed, "reached t_end");
            break;
        }
        if (res.steps >= opt.max_steps) {
            finish(Status::MaxSteps, "the step budget of " + std::to_string(opt.max_steps) +
                                         " accepted steps ran out");
            break;
        }
        // Shorten the step to land on the next output time; the controller's own
        // suggestion is kept for the step after.
        const bool clipped = dt >= target - t;
        Scalar dt_try = clipped ? target - t : dt;
        if (dt_try < tiny && !(clipped && target - t > 0)) {
            if (nonfinite_trial)
                finish(Status::NonFinite, "the right-hand side is not finite just past t = " +
                                              std::to_string(static_cast<double>(t)));
            else if (norm > previous_norm)
                finish(Status::BlowUp, "the step size collapsed while the state grew");
            else
                finish(Status::StepSizeUnderflow, "the step size fell below the minimum");
            break;
        }
        const Scalar dt_before = dt_try;
        Scalar t_try = t;
        const bool accepted = try_step(rhs, x, t_try, x_new, dt_try);
        nonfinite_trial = accepted && !x_new.allFinite();
        if (!accepted) {
            ++res.rejected_steps;
            dt = dt_try;
            continue;
        }
        if (nonfinite_trial) {  // odeint accepts a NaN error estimate: reject the step here
            ++res.rejected_steps;
            reset();
            rhs(x, dxdt, t);
            if (!dxdt.allFinite()) {
                finish(Status::NonFinite, "the right-hand side is not finite at t = " +
                                              std::to_string(static_cast<double>(t)));
                break;
            }
            if (!adaptive) {
                if (norm > previous_norm)
                    finish(Status::BlowUp, "the state overflowed within one fixed step");
                else
                    finish(Status::NonFinite, "a fixed step produced a non-finite state");
                break;
            }
            dt = dt_before / 10;
            continue;
        }
        ++res.steps;
        x.swap(x_new);
        t = (clipped && abs(t_try - target) <= tiny) ? target : t_try;
        dt = clipped ? std::max(dt, dt_try) : dt_try;
        record_reached();
        previous_norm = norm;
        norm = max_norm(x);
        if (norm > opt.blowup_norm) {
            finish(Status::BlowUp, "the norm exceeded the blow-up bound");
            break;
        }
    }
    res.t_final = t;
    res.x_final = std::move(x);
    res.rhs_evaluations = evaluations;
    return res;
}

}  // namespace detail

/// Integrate dx/dt = system(x) from options.t_start to t_end.
///
/// Never hangs (step budget and minimum step), never returns NaN or Inf as a result
/// (every trial state is checked), and says how it ended in SimulateResult::status.
///
/// \param system an odeint System, `void operator()(const State&, State&, Scalar) const`,
///               with State = Eigen::Matrix<Scalar, Dynamic, 1>; taken by reference,
///               never copied. If it has validate_state(x), x0 is checked with it.
/// \param x0     the initial state (finite, non-empty)
/// \param t_end  the final time, >= options.t_start
/// \param options stepper, tolerances, blow-up bound, budget and recording
/// \throws std::invalid_argument for invalid options or initial state
template <typename System, typename Scalar>
SimulateResult<Scalar> simulate(const System& system, const StateVector<Scalar>& x0,
                                std::enable_if_t<true, Scalar> t_end,  // Scalar deduced from x0 only
                                const SimulateOptions<Scalar>& options = {}) {
    static_assert(std::is_floating_point<Scalar>::value,
                  "simulate needs a floating-point Scalar such as double.");
    detail::check_options(options, t_end);
    if constexpr (detail::has_validate_state<System>::value) {
        system.validate_state(x0);
    } else {
        if (x0.size() == 0) throw std::invalid_argument("x0 is empty");
        if (!x0.allFinite()) throw std::invalid_argument("x0 has a non-finite entry");
    }

    using namespace boost::numeric::odeint;
    using Types = odeint_steppers<Scalar>;
    using State = StateVector<Scalar>;

    std::size_t evaluations = 0;
    auto rhs = [&system, &evaluations](const State& x, State& dxdt, Scalar t) {
        ++evaluations;
        system(x, dxdt, t);
    };
    auto controlled = [&](auto stepper) {
        auto try_step = [&stepper](auto& f, const State& in, Scalar& t, State& out, Scalar& dt) {
            return stepper.try_step(f, in, t, out, dt) == success;
        };
        auto reset = [&stepper] {  // forget derivatives cached from a rejected state
            if constexpr (detail::has_reset<decltype(stepper)>::value) stepper.reset();
        };
        return detail::step_loop<Scalar>(rhs, x0, t_end, options, try_step, reset, true,
                                         evaluations);
    };
    const Scalar atol = options.atol, rtol = options.rtol;
    // Runs `run` on the error-controlled form of `error_stepper`, with the norm asked for.
    auto with_norm = [&](auto error_stepper, auto&& run) {
        if (options.error_norm == ErrorNorm::Rms) {
            using Checker = detail::RmsErrorChecker<Scalar>;
            return run(controlled_runge_kutta<decltype(error_stepper), Checker>(Checker{atol, rtol}));
        }
        return run(make_controlled(atol, rtol, error_stepper));
    };
    switch (options.stepper) {
        case Stepper::Dopri5:
            // Dopri5 is first-same-as-last: it reuses f(x) of the accepted step. Boost 1.74's
            // in/out try_step for it does not compile, so we keep the derivative ourselves.
            return with_norm(typename Types::dopri5(), [&](auto stepper) {
                State dxdt_in, dxdt_out;
                bool dxdt_valid = false;
                auto try_step = [&](auto& f, const State& in, Scalar& t, State& out, Scalar& dt) {
                    if (!dxdt_valid) {
                        dxdt_in.resize(in.size());
                        f(in, dxdt_in, t);
                        dxdt_valid = true;
                    }
                    if (stepper.try_step(f, in, dxdt_in, t, out, dxdt_out, dt) != success) return false;
                    dxdt_in.swap(dxdt_out);
                    return true;
                };
                auto reset = [&dxdt_valid] { dxdt_valid = false; };
                return detail::step_loop<Scalar>(rhs, x0, t_end, options, try_step, reset, true,
                                                 evaluations);
            });
        case Stepper::CashKarp:
            return with_norm(typename Types::cash_karp(), controlled);
        case Stepper::Fehlberg78:
            return with_norm(typename Types::fehlberg78(), controlled);
        case Stepper::BulirschStoer:
            return controlled(typename Types::bulirsch_stoer(atol, rtol));
        case Stepper::Rk4: {
            typename Types::rk4 stepper;
            auto try_step = [&stepper](auto& f, const State& in, Scalar& t, State& out, Scalar& dt) {
                stepper.do_step(f, in, t, out, dt);
                t += dt;
                return true;
            };
            return detail::step_loop<Scalar>(rhs, x0, t_end, options, try_step, [] {}, false,
                                             evaluations);
        }
    }
    throw std::invalid_argument("stepper is not one of the Stepper values");
}

}  // namespace ssmdyn
