#pragma once
/// \file driver.hpp
/// integrate_guarded(): runs any odeint stepper on dx/dt = f(x) inside the guards odeint
/// lacks, and ends with an explicit status.
///
/// Why a driver of our own (checked with Boost 1.74): odeint's integrate_adaptive loops
/// forever on a finite-time blow-up; a NaN error estimate passes the step test (NaN > 1 is
/// false), so a NaN state comes back looking normal; the infinity norm can skip a NaN; and
/// a dense-output stepper throws odeint_error when it cannot find a step. The guards live
/// here, once, for every kind of stepper.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "odeint.hpp"
#include "status.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// Thrown by a stepper (RosenbrockStepper) that finds the state beyond what its precision
/// resolves: the right-hand side is smaller than its own rounding error there, and the
/// step a millionth of the solution's time scale |x|/|f(x)|. integrate_guarded() ends the
/// run on the last accepted state: Status::BlowUp when the state was growing (the norm
/// rose across the last accepted steps and f points outward), else StepSizeUnderflow.
struct PrecisionExhausted : boost::numeric::odeint::odeint_error {
    using boost::numeric::odeint::odeint_error::odeint_error;
};

namespace detail {

template <typename T, typename = void>
struct has_validate_state : std::false_type {};
template <typename T>
struct has_validate_state<T, std::void_t<decltype(std::declval<const T&>().validate_state(
                                 std::declval<const typename T::State&>()))>> : std::true_type {};

template <typename T, typename = void>
struct system_has_dim : std::false_type {};
template <typename T>
struct system_has_dim<T, std::void_t<decltype(Eigen::Index(std::declval<const T&>().dim()))>>
    : std::true_type {};

template <typename T, typename = void>
struct reports_stiffness : std::false_type {};
template <typename T>
struct reports_stiffness<T, std::void_t<decltype(std::size_t(std::declval<const T&>().stiff_steps())),
                                        decltype(std::declval<const T&>().stiff_switches())>> : std::true_type {};

template <typename T, typename = void>
struct has_reset : std::false_type {};
template <typename T>
struct has_reset<T, std::void_t<decltype(std::declval<T&>().reset())>> : std::true_type {};

/// Makes a stepper that has reset() forget what it cached (a multistep history, a
/// Bulirsch–Stoer order estimate) after a rejected non-finite trial.
template <typename S>
void reset_stepper(S& stepper) {
    if constexpr (has_reset<S>::value) stepper.reset();
    (void)stepper;
}

// The stepper's odeint category, or void for a type that is not an odeint stepper (so
// that integrate_guarded's static_assert, not a missing typedef, reports it).
template <typename T, typename = void>
struct stepper_category_of {
    using type = void;
};
template <typename T>
struct stepper_category_of<T, std::void_t<typename T::stepper_category>> {
    using type = typename T::stepper_category;
};

template <typename T, typename = void>
struct has_state_type : std::false_type {};
template <typename T>
struct has_state_type<T, std::void_t<typename T::state_type>> : std::true_type {};

// The step forms the driver prefers, most derivative sharing first. Rhs is what the driver
// hands odeint: a std::reference_wrapper to its counting right-hand side.

// try_step(sys, in, dxdt_in, t, out, dxdt_out, dt): an FSAL controlled stepper (dopri5).
template <typename S, typename Rhs, typename State, typename Time, typename = void>
struct has_fsal_try_step : std::false_type {};
template <typename S, typename Rhs, typename State, typename Time>
struct has_fsal_try_step<
    S, Rhs, State, Time,
    std::void_t<decltype(std::declval<S&>().try_step(
        std::declval<Rhs>(), std::declval<const State&>(), std::declval<const State&>(),
        std::declval<Time&>(), std::declval<State&>(), std::declval<State&>(), std::declval<Time&>()))>>
    : std::true_type {};

// try_step(sys, in, dxdt, t, out, dt): a controlled stepper that takes f(in).
template <typename S, typename Rhs, typename State, typename Time, typename = void>
struct has_deriv_try_step : std::false_type {};
template <typename S, typename Rhs, typename State, typename Time>
struct has_deriv_try_step<
    S, Rhs, State, Time,
    std::void_t<decltype(std::declval<S&>().try_step(std::declval<Rhs>(), std::declval<const State&>(),
                                                     std::declval<const State&>(), std::declval<Time&>(),
                                                     std::declval<State&>(), std::declval<Time&>()))>>
    : std::true_type {};

// try_step(sys, in, t, out, dt): any controlled stepper (odeint's ControlledStepper concept).
template <typename S, typename Rhs, typename State, typename Time, typename = void>
struct has_plain_try_step : std::false_type {};
template <typename S, typename Rhs, typename State, typename Time>
struct has_plain_try_step<
    S, Rhs, State, Time,
    std::void_t<decltype(std::declval<S&>().try_step(std::declval<Rhs>(), std::declval<const State&>(),
                                                     std::declval<Time&>(), std::declval<State&>(),
                                                     std::declval<Time&>()))>> : std::true_type {};

// do_step(sys, in, dxdt_in, t, out, dxdt_out, dt): an FSAL stepper used with a fixed step.
template <typename S, typename Rhs, typename State, typename Time, typename = void>
struct has_fsal_do_step : std::false_type {};
template <typename S, typename Rhs, typename State, typename Time>
struct has_fsal_do_step<
    S, Rhs, State, Time,
    std::void_t<decltype(std::declval<S&>().do_step(
        std::declval<Rhs>(), std::declval<const State&>(), std::declval<const State&>(), std::declval<Time>(),
        std::declval<State&>(), std::declval<State&>(), std::declval<Time>()))>> : std::true_type {};

// do_step(sys, in, dxdt, t, out, dt): an explicit stepper that takes f(in) (rk4, euler).
template <typename S, typename Rhs, typename State, typename Time, typename = void>
struct has_deriv_do_step : std::false_type {};
template <typename S, typename Rhs, typename State, typename Time>
struct has_deriv_do_step<
    S, Rhs, State, Time,
    std::void_t<decltype(std::declval<S&>().do_step(std::declval<Rhs>(), std::declval<const State&>(),
                                                    std::declval<const State&>(), std::declval<Time>(),
                                                    std::declval<State&>(), std::declval<Time>()))>>
    : std::true_type {};

/// Throws std::invalid_argument naming the first option integrate_guarded() cannot use.
template <typename Scalar>
void check_driver_options(const SimulateOptions<Scalar>& o, Scalar t_end) {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    using std::isfinite;
    if (!isfinite(o.t_start)) fail("t_start must be finite");
    if (!isfinite(t_end) || t_end < o.t_start) fail("t_end must be finite and >= t_start");
    if (!(o.dt >= 0) || !isfinite(o.dt)) fail("dt must be finite and >= 0");
    if (!(o.blowup_norm > 0)) fail("blowup_norm must be > 0");
    if (!(o.min_dt_relative > 0) || !isfinite(o.min_dt_relative))
        fail("min_dt_relative must be finite and > 0");
    if (o.max_steps == 0) fail("max_steps must be >= 1");
    if (!(o.max_wall_seconds >= 0) || !std::isfinite(o.max_wall_seconds))
        fail("max_wall_seconds must be finite and >= 0 (0: no limit)");
    if (o.record == Record::Times || (o.observer && o.observe == Record::Times)) {
        for (std::size_t i = 0; i < o.output_times.size(); ++i) {
            const Scalar t = o.output_times[i];
            if (!(t >= o.t_start && t <= t_end))
                fail("output_times[" + std::to_string(i) + "] is outside [t_start, t_end]");
            if (i > 0 && !(t > o.output_times[i - 1]))
                fail("output_times must be strictly increasing (at index " + std::to_string(i) + ")");
        }
    }
}

/// The state of one guarded run: the last accepted state, its derivative and time, the
/// guards, and the recording. The loops below (one for controlled and fixed-step steppers,
/// one for dense output) share it; x and t change only when a step is accepted, so a
/// run that stops for any reason, an odeint exception included, ends on a good state.
template <typename Scalar, typename Rhs>
class GuardedRun {
public:
    using State = StateVector<Scalar>;

    GuardedRun(Rhs& rhs, const SimulateOptions<Scalar>& options, Scalar t_end, const State& x0)
        : m_rhs(rhs), m_opt(options), m_t_end(t_end), m_x(x0), m_dxdt(x0.size()), m_t(options.t_start),
          m_started(std::chrono::steady_clock::now()) {
        m_res.x_initial = x0;
    }

    /// Evaluates f(x0) (for the checks and the first step, and shared with the stepper),
    /// chooses the first step, records the initial state. False when f(x0) is not finite.
    bool start(bool adaptive) {
        m_rhs(m_x, m_dxdt, m_t);
        if (!m_dxdt.allFinite()) {
            finish(Status::NonFinite, "the right-hand side is not finite at the initial state");
            return false;
        }
        m_dt = m_opt.dt;
        if (m_dt == 0) {
            if (adaptive) {  // Hairer's first guess, 1% of the time scale |x| / |f(x)|
                const Scalar fx = max_norm(m_dxdt), nx = max_norm(m_x);
                m_dt = (fx > 0 && nx > 0) ? Scalar(0.01) * nx / fx : Scalar(1e-6);
            } else {
                m_dt = (m_t_end - m_t) / 1000;
            }
        }
        if (m_t_end > m_t) m_dt = std::min(m_dt, m_t_end - m_t);
        m_norm = m_previous_norm = max_norm(m_x);
        remember_norm();
        reached(m_t, m_x, [this](Scalar, State& out) { out = m_x; });
        return true;
    }

    /// Steps a controlled (adaptive) or fixed-step stepper, shortening steps to land on
    /// output times exactly. `trial(in, dxdt_in, t, out, dxdt_out, dt)` returns whether the
    /// stepper accepted the step (advancing t and suggesting the next dt) or rejected it
    /// (shrinking dt); with `keeps_deriv` it also leaves f(out) in dxdt_out when out is
    /// finite. `reset()` makes the stepper forget what it cached from a rejected trial.
    template <typename Trial, typename Reset>
    void step_loop(Trial trial, Reset reset, bool adaptive, bool keeps_deriv) {
        using std::abs;
        State x_new(m_x.size()), dxdt_new(m_x.size());
        try {
            for (;;) {
                const Scalar target = output_pending() ? next_output() : m_t_end;
                const Scalar tiny = min_step();
                if (m_t_end - m_t <= tiny) {
                    complete();
                    return;
                }
                if (budget_spent()) return;
                // Shorten the step to land on the next output time; the controller's own
                // suggestion is kept for the step after.
                const bool clipped = m_dt >= target - m_t;
                Scalar dt_try = clipped ? target - m_t : m_dt;
                if (dt_try < tiny && !(clipped && target - m_t > 0)) {
                    collapse();
                    return;
                }
                const Scalar dt_before = dt_try;
                Scalar t_try = m_t;
                if (!trial(m_x, m_dxdt, t_try, x_new, dxdt_new, dt_try)) {
                    ++m_res.rejected_steps;
                    // A stepper that rejects without shrinking the step (odeint's
                    // bulirsch_stoer can, at a tight tolerance) would retry the same step
                    // forever: make it forget its state and halve the step.
                    if (!(dt_try < dt_before)) {
                        reset();
                        dt_try = dt_before / 2;
                    }
                    m_dt = dt_try;
                    continue;
                }
                // odeint accepts a NaN error estimate: reject a non-finite state here, and a
                // state whose derivative is not finite (a FSAL stepper's error estimate used
                // it; and no step could start from there).
                if (!x_new.allFinite() || (keeps_deriv && !dxdt_new.allFinite())) {
                    ++m_res.rejected_steps;
                    // Blame the right-hand side only for a step that should have stayed near
                    // x (dt·|f(x)| <= |x|): a far larger one can overflow on its own (a
                    // decaying solution at a huge t whose steps outgrow their stability).
                    if (!keeps_deriv || !m_dxdt_current || dt_before * max_norm(m_dxdt) <= max_norm(m_x))
                        m_nonfinite_trial = true;
                    reset();
                    if (!adaptive) {
                        if (m_norm > m_previous_norm && points_outward())
                            finish(Status::BlowUp, "the state overflowed within one fixed step");
                        else
                            finish(Status::NonFinite, "a fixed step produced a non-finite state or derivative");
                        return;
                    }
                    m_dt = dt_before / 10;
                    continue;
                }
                m_t = (clipped && abs(t_try - target) <= tiny) ? target : t_try;
                m_dt = clipped ? std::max(m_dt, dt_try) : dt_try;
                m_x.swap(x_new);
                if (keeps_deriv) m_dxdt.swap(dxdt_new);
                m_dxdt_current = keeps_deriv;
                if (accept([this](Scalar, State& out) { out = m_x; })) return;
            }
        } catch (const boost::numeric::odeint::odeint_error& e) {
            odeint_failed(e);
        }
    }

    /// Steps a dense-output stepper with its own step sizes; output times are filled in
    /// with calc_state, and the last step is shortened to end on t_end exactly.
    template <typename Dense>
    void dense_loop(Dense& st) {
        const auto system = std::ref(m_rhs);
        bool initialize = true;          // (re)start the stepper from (m_x, m_t) with m_dt
        bool derivative_checked = true;  // f(m_x) is known to be finite (start() checked f(x0))
        try {
            for (;;) {
                const Scalar tiny = min_step();
                if (m_t_end - m_t <= tiny) {
                    complete();
                    return;
                }
                if (budget_spent()) return;
                Scalar dt = initialize ? m_dt : static_cast<Scalar>(st.current_time_step());
                if (dt < tiny) {
                    collapse();
                    return;
                }
                if (dt > m_t_end - m_t) {  // odeint's own integrate functions end the same way
                    dt = m_t_end - m_t;
                    initialize = true;
                }
                if (initialize) {  // costs the stepper one evaluation of f at m_x
                    st.initialize(m_x, m_t, dt);
                    initialize = false;
                }
                st.do_step(system);  // retries internally until its error test passes
                if (!st.current_state().allFinite()) {
                    // Roll back to the last good state with a tenth of the step. A FSAL
                    // stepper's derivative there is hidden inside it: check f(m_x) once, as a
                    // NaN there would make every retry fail.
                    ++m_res.rejected_steps;
                    m_nonfinite_trial = true;
                    if (!derivative_checked) {
                        m_rhs(m_x, m_dxdt, m_t);
                        m_dxdt_current = true;
                        derivative_checked = true;
                        if (!m_dxdt.allFinite()) {
                            finish(Status::NonFinite, "the right-hand side is not finite at t = " + time_text(m_t));
                            return;
                        }
                    }
                    m_dt = (static_cast<Scalar>(st.current_time()) - m_t) / 10;
                    initialize = true;
                    continue;
                }
                m_x = st.current_state();
                m_t = st.current_time();
                m_dxdt_current = false;
                derivative_checked = false;
                if (accept([&](Scalar time, State& out) {
                        if (time == m_t)
                            out = m_x;
                        else
                            st.calc_state(time, out);
                    }))
                    return;
            }
        } catch (const boost::numeric::odeint::odeint_error& e) {
            odeint_failed(e);
        }
    }

    /// The result; call once, after a loop.
    SimulateResult<Scalar> result(std::size_t evaluations, Eigen::Index dim) {
        // With a cap on the kept steps, the last accepted state may have been skipped.
        if (m_opt.record == Record::Steps && !m_last_kept_is_current) store_step(m_t, m_x, true);
        if (m_res.status != Status::Completed && m_opt.record == Record::Times) {
            // The tail: accepted states after the last recorded output time, oldest first.
            for (std::size_t k = 0; k < m_tail_count; ++k) {
                auto& entry = m_tail[(m_tail_first + k) % m_tail.size()];
                push(entry.first, std::move(entry.second));
            }
        }
        m_res.t_final = m_t;
        m_res.x_final = std::move(m_x);
        m_res.rhs_evaluations = evaluations;
        m_res.dim = dim;
        return std::move(m_res);
    }

private:
    static Scalar max_norm(const State& v) { return v.size() ? v.cwiseAbs().maxCoeff() : Scalar(0); }
    static std::string time_text(Scalar t) { return std::to_string(static_cast<double>(t)); }

    Scalar min_step() const {
        using std::abs;
        return m_opt.min_dt_relative * std::max(Scalar(1), abs(m_t));
    }
    bool output_pending() const {
        return m_opt.record == Record::Times && m_next_output < m_opt.output_times.size();
    }
    Scalar next_output() const { return m_opt.output_times[m_next_output]; }

    void push(Scalar t, State x) {
        m_res.times.push_back(t);
        m_res.states.push_back(std::move(x));
    }

    /// Records and reports what there is to once the run has reached time t with state x,
    /// for the two sinks: memory (mode options.record) and the observer (options.observe).
    /// Record::Steps: the state. Record::Times: every output time <= t, the state there
    /// given by `state_at(time, out)`; in memory also x in the tail when t is past the
    /// last output time recorded. `step`: x is a new accepted state (not t_end's copy).
    template <typename StateAt>
    void reached(Scalar t, const State& x, StateAt&& state_at, bool step = true) {
        const bool observing = static_cast<bool>(m_opt.observer);
        if (step && m_opt.record == Record::Steps) store_step(t, x);
        if (step && observing && m_opt.observe == Record::Steps) m_opt.observer(t, x);
        if (m_opt.record == Record::Times) {
            bool recorded = false;
            Scalar last = t;
            while (output_pending() && next_output() <= t) {
                last = next_output();
                State out(x.size());
                state_at(last, out);
                push(last, std::move(out));
                ++m_next_output;
                recorded = true;
            }
            if (recorded) m_tail_first = m_tail_count = 0;  // the tail starts after the last output
            if (!recorded || last < t) keep_in_tail(t, x);  // a dense stepper's step ends past it
        }
        if (observing && m_opt.observe == Record::Times) {
            while (m_next_observed < m_opt.output_times.size() && m_opt.output_times[m_next_observed] <= t) {
                const Scalar time = m_opt.output_times[m_next_observed++];
                m_observed.resize(x.size());
                state_at(time, m_observed);
                m_opt.observer(time, m_observed);
            }
        }
    }

    /// Keeps an accepted state in memory (Record::Steps) within max_recorded_states: once
    /// the cap is reached every second kept state is dropped and the stride doubles.
    /// `always`: keep it whatever the stride (the final state).
    void store_step(Scalar t, const State& x, bool always = false) {
        const std::size_t cap = m_opt.max_recorded_states;
        const bool keep = m_step_index++ % m_stride == 0 || always;
        m_last_kept_is_current = keep;
        if (!keep) return;
        if (cap != 0 && m_res.times.size() >= std::max<std::size_t>(cap, 2)) {
            std::size_t kept = 0;
            for (std::size_t i = 0; i < m_res.times.size(); i += 2, ++kept) {
                m_res.times[kept] = m_res.times[i];
                m_res.states[kept].swap(m_res.states[i]);
            }
            m_res.times.resize(kept);
            m_res.states.resize(kept);
            m_stride *= 2;
        }
        push(t, x);
    }

    /// A ring of the last max_tail_states states, reusing its storage once warm.
    void keep_in_tail(Scalar t, const State& x) {
        const std::size_t capacity = m_opt.max_tail_states;
        if (capacity == 0) return;
        std::size_t slot;
        if (m_tail_count < capacity) {
            slot = (m_tail_first + m_tail_count++) % capacity;
        } else {
            slot = m_tail_first;
            m_tail_first = (m_tail_first + 1) % capacity;
        }
        if (slot == m_tail.size()) {
            m_tail.emplace_back(t, x);
        } else {
            m_tail[slot].first = t;
            m_tail[slot].second = x;
        }
    }

    /// Counts, records and checks a step that took the run to (m_x, m_t); true when the
    /// run must end (blow-up).
    template <typename StateAt>
    bool accept(StateAt&& state_at) {
        ++m_res.steps;
        m_nonfinite_trial = false;
        reached(m_t, m_x, state_at);
        m_previous_norm = m_norm;
        m_norm = max_norm(m_x);
        remember_norm();
        if (m_norm > m_opt.blowup_norm) {
            finish(Status::BlowUp, "the norm exceeded the blow-up bound");
            return true;
        }
        return false;
    }

    void complete() {
        // A last sliver below the minimum step is not stepped: the last state stands for t_end.
        if (m_t != m_t_end) {
            if (m_opt.record == Record::Steps) {
                if (m_last_kept_is_current) m_res.times.back() = m_t_end;
                else store_step(m_t_end, m_x, true);
            }
            if (m_opt.observer && m_opt.observe == Record::Steps) m_opt.observer(m_t_end, m_x);
        }
        m_t = m_t_end;
        reached(m_t, m_x, [this](Scalar, State& out) { out = m_x; }, false);
        finish(Status::Completed, "reached t_end");
    }

    bool budget_spent() {
        if (m_opt.max_wall_seconds > 0) {
            const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - m_started;
            if (elapsed.count() > m_opt.max_wall_seconds) {
                finish(Status::TimeLimit, "the time budget of " + std::to_string(m_opt.max_wall_seconds) +
                                              " s ran out at t = " + time_text(m_t));
                return true;
            }
        }
        if (m_res.steps < m_opt.max_steps) return false;
        finish(Status::MaxSteps,
               "the step budget of " + std::to_string(m_opt.max_steps) + " accepted steps ran out");
        return true;
    }

    void remember_norm() {
        m_norms[m_history_count % history] = m_norm;
        m_times[m_history_count % history] = m_t;
        ++m_history_count;
    }

    /// Whether the vector field at the last accepted state points outward, <x, f(x)> > 0,
    /// so that the norm grows by the dynamics and not by the integration's own error.
    /// Costs one evaluation of f.
    bool points_outward() {
        if (!m_dxdt_current) {
            m_rhs(m_x, m_dxdt, m_t);
            m_dxdt_current = true;
        }
        return m_dxdt.allFinite() && m_x.dot(m_dxdt) > 0;
    }

    /// Whether a collapse of the step size is a blow-up: the norm rose at each of the last
    /// history − 1 accepted steps, the rise does not slow down (the last step's rate of
    /// growth of log|x| is at least that of the earliest, as near a singularity
    /// (T − t)^(−α), where it grows like α/(T − t); exponential growth keeps it constant,
    /// slow divergence lowers it), and the vector field itself points outward. A step
    /// that collapses on a decaying solution (loose absolute tolerance, huge t) fails all
    /// three.
    bool growing() {
        using std::log;
        if (m_history_count < history) return false;
        auto at = [this](std::size_t back) { return (m_history_count - 1 - back) % history; };
        for (std::size_t k = 0; k + 1 < history; ++k)
            if (!(m_norms[at(k)] > m_norms[at(k + 1)]) || !(m_norms[at(k + 1)] > 0)) return false;
        for (std::size_t k = 0; k + 1 < history; ++k)
            if (!(m_times[at(k)] > m_times[at(k + 1)])) return false;
        auto rate = [&](std::size_t back) {
            return log(m_norms[at(back)] / m_norms[at(back + 1)]) / (m_times[at(back)] - m_times[at(back + 1)]);
        };
        if (!(rate(0) >= Scalar(0.999) * rate(history - 2))) return false;
        return points_outward();
    }

    /// The step size collapsed: a non-finite right-hand side if a trial since the last
    /// accepted step was not finite, else a blow-up if the state was growing, else underflow.
    /// `cause` (optional) replaces the message's account of the collapse.
    void collapse(const std::string& cause = {}) {
        if (m_nonfinite_trial)
            finish(Status::NonFinite, cause.empty() ? "the right-hand side is not finite just past t = " + time_text(m_t)
                                                    : cause + ", after a non-finite trial step");
        else if (growing())
            finish(Status::BlowUp, cause.empty() ? "the step size collapsed while the state grew"
                                                 : cause + ", while the state grew");
        else
            finish(Status::StepSizeUnderflow, cause.empty() ? "the step size fell below the minimum" : cause);
    }

    /// odeint gave up inside a step (a dense-output stepper after 500 failed trials, or a
    /// user stepper's own check): the run ends on the last accepted state.
    void odeint_failed(const boost::numeric::odeint::odeint_error& e) {
        if (dynamic_cast<const PrecisionExhausted*>(&e)) {
            const std::size_t window = std::min(m_history_count, history);
            const Scalar oldest = m_norms[(m_history_count - window) % history];
            if (window > 1 && m_norm > oldest && points_outward())
                finish(Status::BlowUp, std::string(e.what()) + ", while the state grew");
            else
                finish(Status::StepSizeUnderflow, e.what());
        } else if (dynamic_cast<const boost::numeric::odeint::no_progress_error*>(&e))
            finish(Status::MaxSteps, std::string("odeint made no progress: ") + e.what());
        else
            collapse(std::string("odeint found no acceptable step: ") + e.what());
    }

    void finish(Status s, std::string why) {
        m_res.status = s;
        m_res.message = std::move(why);
        if (s == Status::BlowUp) m_res.t_blowup = m_t;
    }

    Rhs& m_rhs;
    const SimulateOptions<Scalar>& m_opt;
    Scalar m_t_end;
    SimulateResult<Scalar> m_res;
    State m_x, m_dxdt;  // the last accepted state and, while kept, f(m_x)
    Scalar m_t, m_dt = Scalar(0);
    Scalar m_norm = Scalar(0), m_previous_norm = Scalar(0);  // of the last two accepted states
    bool m_nonfinite_trial = false;
    bool m_dxdt_current = true;      // does m_dxdt hold f(m_x)? (start() evaluates it)  // was a trial since the last accepted step not finite?
    std::size_t m_next_output = 0;    // memory's next output time (Record::Times)
    std::size_t m_next_observed = 0;  // the observer's next output time
    State m_observed;                 // the state handed to the observer at an output time
    std::size_t m_step_index = 0, m_stride = 1;  // Record::Steps under max_recorded_states
    bool m_last_kept_is_current = false;         // is the last kept state m_x?
    std::chrono::steady_clock::time_point m_started;
    // The norms and times of the last accepted states, a ring (see growing()).
    static constexpr std::size_t history = 6;
    std::array<Scalar, history> m_norms{}, m_times{};
    std::size_t m_history_count = 0;
    std::vector<std::pair<Scalar, State>> m_tail;  // ring buffer, see keep_in_tail
    std::size_t m_tail_first = 0, m_tail_count = 0;
};

}  // namespace detail

/// Integrate dx/dt = system(x) from options.t_start to t_end with a stepper the caller
/// built, inside guards odeint lacks, ending with an explicit status.
///
/// Never hangs (step budget, minimum step), never returns NaN or Inf (every trial state
/// is checked with allFinite(); a non-finite one is rejected and the step shrunk, since
/// odeint accepts a NaN error estimate), stops at the blow-up bound, and says how it
/// ended in SimulateResult::status; an odeint_error thrown inside a step ends the run
/// with a status too (StepSizeUnderflow, BlowUp or NonFinite as for a collapsed step;
/// MaxSteps for no_progress_error).
///
/// Any odeint stepper for the flat state works, by its category:
/// - controlled (controlled_stepper_tag: `make_controlled(atol, rtol, dopri5)`,
///   `bulirsch_stoer`): try_step; steps are shortened to land on output times;
/// - dense output (dense_output_stepper_tag: `make_dense_output(atol, rtol, dopri5)`):
///   do_step with the stepper's own step sizes, output times by calc_state (its
///   interpolant), the last step shortened to end on t_end;
/// - fixed step (stepper_tag: `runge_kutta4`, and odeint's error steppers used without
///   control, as odeint's integrate_const does): do_step with options.dt.
///
/// f(x0) is evaluated once, by the driver, and handed to the stepper wherever odeint
/// takes a derivative: a FSAL controlled stepper (dopri5) then costs 1 + 6 evaluations
/// per trial step; a controlled stepper that takes f(in) (cash_karp, fehlberg78,
/// bulirsch_stoer) gets f once per accepted state, shared by all trials from it
/// (cash_karp: 1 + 6 per accepted step + 5 per rejected one); rk4 costs 1 + 4 per step.
/// A dense-output stepper evaluates f at its start itself (odeint 1.74 offers no way to
/// hand it in): one more evaluation, and one more at each restart (the shortened last
/// step, a rollback). Its rejected trials happen inside do_step and are not counted in
/// rejected_steps, which then counts only the driver's rollbacks of non-finite steps.
///
/// \code
/// namespace odeint = boost::numeric::odeint;
/// using Steppers = ssmdyn::odeint_steppers<double>;
/// const ssmdyn::SelectiveSystem<double> system(params);
/// auto stepper = odeint::make_dense_output(1e-10, 1e-10, Steppers::dopri5());
/// ssmdyn::SimulateOptions<double> options;
/// options.record = ssmdyn::Record::Times;
/// options.output_times = {0.0, 0.5, 1.0, 2.0};
/// const auto r = ssmdyn::integrate_guarded(stepper, system, x0, 2.0, options);
/// if (r.status == ssmdyn::Status::BlowUp) std::cout << "blow-up at t = " << *r.t_blowup << '\n';
/// \endcode
///
/// \param stepper an odeint stepper (or a std::ref to one) for the state
///                StateVector<Scalar>, built with its method and tolerances; used in
///                place, so an lvalue is left as the run left it
/// \param system  an odeint System, `void operator()(const State& x, State& dxdt, Scalar t)
///                const`; taken by reference and never copied (odeint gets a std::ref to
///                a counting wrapper). If it has validate_state(x), x0 is checked with it;
///                if it has dim(), that is the result's token dimension.
/// \param x0      the initial state (flat, finite, non-empty)
/// \param t_end   the final time, >= options.t_start
/// \param options the guards, the first or fixed step, and the recording; stepper, rtol,
///                atol and error_norm are ignored (the stepper carries its own)
/// \return the status, the initial and final states, the recorded trajectory and the work
/// \throws std::invalid_argument for invalid options or initial state
template <typename Stepper, typename System, typename Scalar>
SimulateResult<Scalar> integrate_guarded(Stepper&& stepper, const System& system, const StateVector<Scalar>& x0,
                                         typename StateVector<Scalar>::Scalar t_end,  // Scalar from x0 only
                                         const SimulateOptions<Scalar>& options = {}) {
    namespace odeint = boost::numeric::odeint;
    using State = StateVector<Scalar>;
    using Unwrapped = typename odeint::unwrap_reference<std::remove_cv_t<std::remove_reference_t<Stepper>>>::type;
    static_assert(std::is_floating_point<Scalar>::value,
                  "integrate_guarded needs a floating-point Scalar such as double.");
    static_assert(std::is_invocable<const System&, const State&, State&, Scalar>::value,
                  "The system must be callable as system(const State& x, State& dxdt, Scalar t) const, "
                  "with State = Eigen::Matrix<Scalar, Eigen::Dynamic, 1> (odeint's System concept).");

    detail::check_driver_options(options, t_end);
    if constexpr (detail::has_validate_state<System>::value) {
        system.validate_state(x0);
    } else {
        if (x0.size() == 0) throw std::invalid_argument("x0 is empty");
        if (!x0.allFinite()) throw std::invalid_argument("x0 has a non-finite entry");
    }
    Eigen::Index dim = 1;
    if constexpr (detail::system_has_dim<System>::value) dim = static_cast<Eigen::Index>(system.dim());

    std::size_t evaluations = 0;
    auto rhs = [&system, &evaluations](const State& x, State& dxdt, Scalar t) {
        ++evaluations;
        system(x, dxdt, t);
    };
    using Rhs = decltype(std::ref(rhs));
    Unwrapped& st = stepper;

    using Category = typename detail::stepper_category_of<Unwrapped>::type;
    constexpr bool controlled = std::is_base_of<odeint::controlled_stepper_tag, Category>::value;
    constexpr bool dense = std::is_base_of<odeint::dense_output_stepper_tag, Category>::value;
    constexpr bool fixed = std::is_base_of<odeint::stepper_tag, Category>::value;
    static_assert(controlled || dense || fixed,
                  "integrate_guarded takes an odeint stepper whose stepper_category derives from "
                  "controlled_stepper_tag, dense_output_stepper_tag or stepper_tag.");
    if constexpr (detail::has_state_type<Unwrapped>::value)
        static_assert(std::is_same<typename Unwrapped::state_type, State>::value,
                      "The stepper's state_type must be the flat state Eigen::Matrix<Scalar, "
                      "Eigen::Dynamic, 1> of x0 (see odeint_steppers in odeint.hpp).");

    detail::GuardedRun<Scalar, decltype(rhs)> run(rhs, options, t_end, x0);
    if constexpr (controlled) {
        constexpr bool fsal = detail::has_fsal_try_step<Unwrapped, Rhs, State, Scalar>::value;
        constexpr bool takes_deriv = detail::has_deriv_try_step<Unwrapped, Rhs, State, Scalar>::value;
        static_assert(fsal || takes_deriv || detail::has_plain_try_step<Unwrapped, Rhs, State, Scalar>::value,
                      "A controlled stepper must offer try_step(system, in, t, out, dt) "
                      "(odeint's ControlledStepper concept).");
        if (run.start(true)) {
            auto trial = [&](const State& in, const State& dxdt_in, Scalar& t, State& out, State& dxdt_out,
                             Scalar& dt) {
                if constexpr (fsal) {  // f(out) comes with the step
                    return st.try_step(std::ref(rhs), in, dxdt_in, t, out, dxdt_out, dt) == odeint::success;
                } else if constexpr (takes_deriv) {
                    if (st.try_step(std::ref(rhs), in, dxdt_in, t, out, dt) != odeint::success) return false;
                    if (out.allFinite()) rhs(out, dxdt_out, t);  // the next step's first stage
                    return true;
                } else {
                    (void)dxdt_in;
                    (void)dxdt_out;
                    return st.try_step(std::ref(rhs), in, t, out, dt) == odeint::success;
                }
            };
            auto reset = [&st] { detail::reset_stepper(st); };
            run.step_loop(trial, reset, true, fsal || takes_deriv);
        }
    } else if constexpr (dense) {
        if (run.start(true)) run.dense_loop(st);
    } else if constexpr (fixed) {
        constexpr bool fsal = detail::has_fsal_do_step<Unwrapped, Rhs, State, Scalar>::value;
        constexpr bool takes_deriv = detail::has_deriv_do_step<Unwrapped, Rhs, State, Scalar>::value;
        if (run.start(false)) {
            auto trial = [&](const State& in, const State& dxdt_in, Scalar& t, State& out, State& dxdt_out,
                             Scalar& dt) {
                if constexpr (fsal) {
                    st.do_step(std::ref(rhs), in, dxdt_in, t, out, dxdt_out, dt);
                    t += dt;
                } else if constexpr (takes_deriv) {
                    st.do_step(std::ref(rhs), in, dxdt_in, t, out, dt);
                    t += dt;
                    if (out.allFinite()) rhs(out, dxdt_out, t);  // the next step's first stage
                } else {
                    (void)dxdt_in;
                    (void)dxdt_out;
                    st.do_step(std::ref(rhs), in, t, out, dt);
                    t += dt;
                }
                return true;
            };
            auto reset = [&st] { detail::reset_stepper(st); };
            run.step_loop(trial, reset, false, fsal || takes_deriv);
        }
    }
    auto result = run.result(evaluations, dim);
    if constexpr (detail::reports_stiffness<Unwrapped>::value) {  // the stiff method and its switches
        result.stiff_steps = st.stiff_steps();
        const auto& switches = st.stiff_switches();
        result.stiff_switches.assign(switches.begin(), switches.end());
    }
    return result;
}

}  // namespace ssmdyn
