#pragma once
/// \file status.hpp
/// The vocabulary of the integrate component: how a run ended (Status), which stepper
/// simulate() builds (Stepper), what it keeps (Record), how errors are measured
/// (ErrorNorm), and the options and result structs. Every enum has `to_string` and a
/// `parse_*` inverse, so that it travels as a name (JSON, CSV, command line), never as a
/// number. Needs only core: code that just reads results does not pay for odeint.

#include <algorithm>
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../core/detail/enum_names.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// How an integration ended.
enum class Status {
    Completed,          ///< reached t_end
    BlowUp,             ///< the norm crossed the blow-up bound, or the step collapsed while it grew
    StepSizeUnderflow,  ///< the step size fell below the minimum with no growth in sight
    MaxSteps,           ///< the step budget ran out before t_end
    NonFinite,          ///< the right-hand side produced NaN or Inf at a finite state
    TimeLimit           ///< the wall-clock budget (SimulateOptions::max_wall_seconds) ran out
};

/// The odeint stepper simulate() builds (integrate_guarded() takes any stepper instead).
enum class Stepper {
    Dopri5,         ///< Dormand–Prince 5(4), error-controlled (default)
    CashKarp,       ///< Cash–Karp 5(4), error-controlled
    Fehlberg78,     ///< Runge–Kutta–Fehlberg 7(8), error-controlled
    BulirschStoer,  ///< Bulirsch–Stoer extrapolation, error-controlled
    Rk4,            ///< classical fourth-order Runge–Kutta with a fixed step
    Rosenbrock4     ///< L-stable linearly implicit Rosenbrock 4(3) with the exact Jacobian (stiff)
};

/// What a run keeps of the trajectory.
enum class Record {
    None,   ///< only the final state
    Steps,  ///< the initial state and every accepted step
    Times   ///< the states at SimulateOptions::output_times exactly (and the tail of an early end)
};

/// How the Runge–Kutta pairs (dopri5, cash_karp, fehlberg78) measure a step's error
/// estimate e. Both divide component i by the same scale atol + rtol·(|x_i| + dt·|f_i(x)|)
/// (odeint's); they differ in how the scaled components are combined.
enum class ErrorNorm {
    Max,  ///< the largest scaled component (odeint's default; the stricter)
    Rms   ///< their root mean square, as in Hairer's DOPRI5 and DOP853 and SciPy's solve_ivp
};

/// The name of a status.
/// \return "completed", "blow_up", "step_size_underflow", "max_steps", "non_finite" or "time_limit"
inline const char* to_string(Status s) {
    switch (s) {
        case Status::Completed: return "completed";
        case Status::BlowUp: return "blow_up";
        case Status::StepSizeUnderflow: return "step_size_underflow";
        case Status::MaxSteps: return "max_steps";
        case Status::NonFinite: return "non_finite";
        case Status::TimeLimit: return "time_limit";
    }
    return "unknown";
}

/// The name of a stepper.
/// \return "dopri5", "cash_karp", "fehlberg78", "bulirsch_stoer", "rk4" or "rosenbrock4"
inline const char* to_string(Stepper s) {
    switch (s) {
        case Stepper::Dopri5: return "dopri5";
        case Stepper::CashKarp: return "cash_karp";
        case Stepper::Fehlberg78: return "fehlberg78";
        case Stepper::BulirschStoer: return "bulirsch_stoer";
        case Stepper::Rk4: return "rk4";
        case Stepper::Rosenbrock4: return "rosenbrock4";
    }
    return "unknown";
}

/// The name of a recording mode.
/// \return "none", "steps" or "times"
inline const char* to_string(Record r) {
    switch (r) {
        case Record::None: return "none";
        case Record::Steps: return "steps";
        case Record::Times: return "times";
    }
    return "unknown";
}

/// The name of an error norm.
/// \return "max" or "rms"
inline const char* to_string(ErrorNorm n) {
    switch (n) {
        case ErrorNorm::Max: return "max";
        case ErrorNorm::Rms: return "rms";
    }
    return "unknown";
}

/// The status called `name`, as printed by to_string.
/// \param name e.g. "blow_up"
/// \return the status
/// \throws std::invalid_argument listing the valid names
inline Status parse_status(const std::string& name) {
    static constexpr Status all[] = {Status::Completed, Status::BlowUp, Status::StepSizeUnderflow,
                                     Status::MaxSteps, Status::NonFinite, Status::TimeLimit};
    return detail::parse_enum(name, all, "status");
}

/// The stepper called `name`, as printed by to_string.
/// \param name e.g. "dopri5"
/// \return the stepper
/// \throws std::invalid_argument listing the valid names
inline Stepper parse_stepper(const std::string& name) {
    static constexpr Stepper all[] = {Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78,
                                      Stepper::BulirschStoer, Stepper::Rk4, Stepper::Rosenbrock4};
    return detail::parse_enum(name, all, "stepper");
}

/// The recording mode called `name`, as printed by to_string.
/// \param name "none", "steps" or "times"
/// \return the recording mode
/// \throws std::invalid_argument listing the valid names
inline Record parse_record(const std::string& name) {
    static constexpr Record all[] = {Record::None, Record::Steps, Record::Times};
    return detail::parse_enum(name, all, "record");
}

/// The error norm called `name`, as printed by to_string.
/// \param name "max" or "rms"
/// \return the norm
/// \throws std::invalid_argument listing the valid names
inline ErrorNorm parse_error_norm(const std::string& name) {
    static constexpr ErrorNorm all[] = {ErrorNorm::Max, ErrorNorm::Rms};
    return detail::parse_enum(name, all, "error norm");
}

/// Options of simulate() and integrate_guarded(). Defaults suit the paper's experiments.
///
/// integrate_guarded() runs a stepper the caller built, which carries its own method and
/// tolerances: it reads everything here except `stepper`, `rtol`, `atol` and `error_norm`.
template <typename Scalar = double>
struct SimulateOptions {
    /// The stepper simulate() builds.
    Stepper stepper = Stepper::Dopri5;
    /// Relative tolerance of the error-controlled steppers simulate() builds: 0, or at
    /// least 4 ε of Scalar. Default 1e-8, or 100 ε where that is larger (float: 1.2e-5).
    Scalar rtol = std::max(Scalar(1e-8), Scalar(100) * std::numeric_limits<Scalar>::epsilon());
    /// Absolute tolerance of the error-controlled steppers simulate() builds, >= 0 (not
    /// both zero). Default rtol / 100 (double: 1e-10).
    Scalar atol = std::max(Scalar(1e-8), Scalar(100) * std::numeric_limits<Scalar>::epsilon()) / Scalar(100);
    /// How the Runge–Kutta pairs combine the components of the error (Rms: as SciPy and
    /// Hairer's codes do, for like-for-like comparisons). Bulirsch–Stoer has its own
    /// maximum norm and rejects Rms; rk4 has no error control and ignores it.
    ErrorNorm error_norm = ErrorNorm::Max;
    /// Adaptive and dense-output steppers: the first trial step (0: 1% of the time scale
    /// |x| / |f(x)| at the start). Fixed-step steppers: the step (0: (t_end − t_start) / 1000).
    /// Must be >= 0.
    Scalar dt = Scalar(0);
    /// Start time (the system is autonomous; this only shifts the clock).
    Scalar t_start = Scalar(0);
    /// Blow-up is declared once max_l,d |x_l^d| exceeds this bound, > 0.
    Scalar blowup_norm = Scalar(1e8);
    /// A step below min_dt_relative · max(1, |t|) counts as step-size collapse, > 0.
    Scalar min_dt_relative = Scalar(64) * std::numeric_limits<Scalar>::epsilon();
    /// Most accepted steps before giving up with Status::MaxSteps, >= 1.
    std::size_t max_steps = 1000000;
    /// What to keep of the trajectory.
    Record record = Record::Steps;
    /// With Record::Times: increasing times in [t_start, t_end] at which to record.
    std::vector<Scalar> output_times;
    /// With Record::Times and a run that ends before t_end (blow-up or any other early
    /// end): at most this many of the last accepted states after the last recorded output
    /// time are appended, so that the approach to a blow-up whose time was not known in
    /// advance can still be fitted. Bounds the memory kept (0: none).
    std::size_t max_tail_states = 256;
    /// With Record::Steps: at most this many states are kept in memory (0: no cap). When
    /// the cap is reached every second kept state is dropped and from then on only every
    /// second one is kept (then every fourth, …), so that the kept states still cover the
    /// whole run evenly; the final state is always kept. The observer sees every state.
    std::size_t max_recorded_states = 0;
    /// Called with (t, x) at every state the run would record (see Record), in time order,
    /// while the run goes on: stream a trajectory to a file this way in O(state) memory
    /// (then Record::None keeps nothing in memory, but the observer still sees the
    /// states of Record::Steps; set `observe` to choose). Exceptions it throws end the
    /// run and propagate to the caller.
    std::function<void(Scalar, const StateVector<Scalar>&)> observer;
    /// Which states the observer sees: those of this mode (default: every accepted step).
    Record observe = Record::Steps;
    /// Wall-clock budget in seconds (0: none); past it the run ends with Status::TimeLimit
    /// on the last accepted state. Checked once per step, >= 0.
    double max_wall_seconds = 0;
    /// Switch automatically between the explicit stepper (dopri5, cash_karp, fehlberg78)
    /// and the stiff one (Stepper::Rosenbrock4) when the system has an exact structured
    /// Jacobian (SelectiveSystem): a step whose h·ρ (ρ the secant estimate of the
    /// Jacobian's spectral radius along the step) sits at the explicit method's stability
    /// boundary 15 times in a row switches to the stiff method, and 15 steps well inside
    /// it switch back (Hairer's DOPRI5 test, there used only to stop). Reported in
    /// SimulateResult::stiff_steps and stiff_switches.
    bool stiff_switching = true;
};

/// Result of a run: an explicit status, the initial and final (always finite) states, and
/// the recorded trajectory. Self-contained: the token dimension comes with it, so that
/// analyses (theory/rates.hpp) can take the result alone.
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
    /// The initial state (flat, at options.t_start).
    StateVector<Scalar> x_initial;
    /// The last accepted state; never contains NaN or Inf.
    StateVector<Scalar> x_final;
    /// The token dimension D of the flat states (the system's dim(), or 1 when it has none).
    Eigen::Index dim = 1;
    /// Recorded times and states (see Record), times strictly increasing.
    std::vector<Scalar> times;
    std::vector<StateVector<Scalar>> states;
    /// Accepted steps, rejected trial steps, and right-hand-side evaluations (all of them,
    /// the stepper's and the driver's).
    std::size_t steps = 0, rejected_steps = 0, rhs_evaluations = 0;
    /// Accepted steps taken by the stiff method (Stepper::Rosenbrock4, or the automatic
    /// switch to it), and the times of the switches: the first from the explicit stepper
    /// to the stiff one, then alternating.
    std::size_t stiff_steps = 0;
    std::vector<Scalar> stiff_switches;
    /// One sentence on why the run ended.
    std::string message;
};

}  // namespace ssmdyn
