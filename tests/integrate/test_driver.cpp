#include "support.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/driver.hpp>
#include <ssmdyn/integrate/simulate.hpp>

namespace odeint = boost::numeric::odeint;
using ssmdyn::Status;
using System = ssmdyn::SelectiveSystem<double>;
using State = System::State;
using Options = ssmdyn::SimulateOptions<double>;
using Steppers = ssmdyn::odeint_steppers<double>;
using test::tokens;

namespace {

/// Counts its own evaluations. Not copyable: the driver must take it by reference (a copy
/// inside odeint would not even compile), so `calls` sees every evaluation there is.
template <typename Inner>
struct Counting {
    using State = typename Inner::State;
    explicit Counting(const Inner& inner) : m_inner(inner) {}
    Counting(const Counting&) = delete;
    Counting& operator=(const Counting&) = delete;
    void operator()(const State& x, State& dxdt, double t) const {
        ++calls;
        m_inner(x, dxdt, t);
    }
    Eigen::Index dim() const { return m_inner.dim(); }
    mutable std::size_t calls = 0;

private:
    const Inner& m_inner;
};

// Token 1 of the 1-D system sees only itself, so its solution is known in implicit form
// (test::token1_time) and its blow-up time by quadrature (test::token1_blowup_time).
const double conv_mu = -0.8, conv_s = 0.7, conv_b = 0.3;
System converging() { return System(ssmdyn::S6Params<double>::one_dimensional({conv_mu, conv_s, 1.0, conv_b})); }
System blowing_up() { return System(ssmdyn::S6Params<double>::one_dimensional({1.0, 0.5, 1.0})); }
State blowup_tokens() { return tokens({1.0, -0.5, 0.25}); }

/// Every recorded state's token 1 is where the quadrature says it is at that time.
void check_token1_times(const ssmdyn::SimulateResult<double>& r, double mu, double s, double b, double tol) {
    const double x1 = r.x_initial(0);
    for (std::size_t k = 1; k < r.times.size(); ++k) {
        CAPTURE(k, r.times[k]);
        CHECK(test::rel_err(test::token1_time(mu, s, b, x1, r.states[k](0)), r.times[k]) < tol);
    }
}

/// Output times 10^(-3 + 4k/30), k = 0..30: 31 log-spaced times from 1e-3 to 10.
std::vector<double> log_times() {
    std::vector<double> t;
    for (int k = 0; k <= 30; ++k) t.push_back(std::pow(10.0, -3.0 + 4.0 * k / 30.0));
    t.back() = 10.0;
    return t;
}

}  // namespace

TEST_CASE("driver: a user-built controlled stepper solves to its tolerance") {
    const System sys = converging();
    const State x0 = tokens({1.3, 0.5, -2.0});
    Options o;
    SECTION("make_controlled(dopri5)") {
        auto stepper = odeint::make_controlled(1e-12, 1e-12, Steppers::dopri5());
        const auto r = ssmdyn::integrate_guarded(stepper, sys, x0, 20.0, o);
        REQUIRE(r.status == Status::Completed);
        CHECK(r.t_final == 20.0);
        REQUIRE(r.times.size() == r.steps + 1);
        check_token1_times(r, conv_mu, conv_s, conv_b, 1e-8);
    }
    SECTION("bulirsch_stoer, through std::ref") {
        Steppers::bulirsch_stoer stepper(1e-12, 1e-12);
        const auto r = ssmdyn::integrate_guarded(std::ref(stepper), sys, x0, 20.0, o);
        REQUIRE(r.status == Status::Completed);
        CHECK(r.t_final == 20.0);
        check_token1_times(r, conv_mu, conv_s, conv_b, 1e-8);
    }
    SECTION("a temporary stepper, landing on output times") {
        o.record = ssmdyn::Record::Times;
        o.output_times = {0.0, 0.3, 2.0, 20.0};
        const auto r = ssmdyn::integrate_guarded(odeint::make_controlled(1e-12, 1e-12, Steppers::cash_karp()), sys,
                                                 x0, 20.0, o);
        REQUIRE(r.status == Status::Completed);
        REQUIRE(r.times == o.output_times);
        CHECK(r.states.front() == x0);
        CHECK(r.states.back() == r.x_final);
        check_token1_times(r, conv_mu, conv_s, conv_b, 1e-8);
    }
}

TEST_CASE("driver: a dense-output stepper hits output times exactly with its interpolant") {
    const System sys = converging();
    const State x0 = tokens({1.3, 0.5, -2.0});
    Options o;
    o.record = ssmdyn::Record::Times;
    o.output_times = {0.0, 0.01, 0.1, 0.5, 1.0, 2.5, 7.0, 20.0};
    auto dense = odeint::make_dense_output(1e-12, 1e-12, Steppers::dopri5());
    const auto r = ssmdyn::integrate_guarded(dense, sys, x0, 20.0, o);
    REQUIRE(r.status == Status::Completed);
    CHECK(r.t_final == 20.0);
    REQUIRE(r.times == o.output_times);
    CHECK(r.states.front() == x0);
    CHECK(r.states.back() == r.x_final);
    CHECK(r.steps > 0);
    check_token1_times(r, conv_mu, conv_s, conv_b, 1e-8);

    // Every token, against a different method landing on the same times at tight tolerance.
    Options ref_options = o;
    ref_options.stepper = ssmdyn::Stepper::Fehlberg78;
    ref_options.rtol = 1e-13;
    ref_options.atol = 1e-15;
    const auto ref = ssmdyn::simulate(sys, x0, 20.0, ref_options);
    REQUIRE(ref.times == r.times);
    for (std::size_t k = 0; k < r.times.size(); ++k) CHECK(test::max_rel_err(r.states[k], ref.states[k]) < 1e-9);

    SECTION("Record::Steps: the stepper's own steps, increasing, ending at t_end once") {
        Options s;
        auto stepper = odeint::make_dense_output(1e-10, 1e-10, Steppers::dopri5());
        const auto rs = ssmdyn::integrate_guarded(stepper, sys, x0, 3.0, s);
        REQUIRE(rs.status == Status::Completed);
        REQUIRE(rs.times.size() == rs.steps + 1);
        CHECK(rs.times.front() == 0.0);
        CHECK(rs.times.back() == 3.0);
        for (std::size_t k = 1; k < rs.times.size(); ++k) CHECK(rs.times[k] > rs.times[k - 1]);
        CHECK(rs.states.back() == rs.x_final);
    }
}

TEST_CASE("driver: fixed-step steppers take options.dt and have their order") {
    // x'' = -x as a first-order system: x(t) = cos t, x'(t) = -sin t from (1, 0). (The S6
    // systems are still pre-asymptotic for dopri5 at affordable steps; this one is not.)
    struct Oscillator {
        using State = Eigen::VectorXd;
        void operator()(const State& x, State& dxdt, double) const {
            dxdt.resize(2);
            dxdt << x(1), -x(0);
        }
    };
    const double T = 2.0;
    const State x0 = tokens({1.0, 0.0}), exact = tokens({std::cos(T), -std::sin(T)});

    // error(h) / error(h/2) = 2^order for a method of that order.
    auto order = [&](auto make_stepper, std::size_t evaluations_per_step, double dt) {
        auto error = [&](double h) {
            auto stepper = make_stepper();
            Options o;
            o.dt = h;
            const auto r = ssmdyn::integrate_guarded(stepper, Oscillator{}, x0, T, o);
            REQUIRE(r.status == Status::Completed);
            CHECK(r.t_final == T);
            REQUIRE(r.steps == static_cast<std::size_t>(std::lround(T / h)));
            CHECK(r.rhs_evaluations == 1 + evaluations_per_step * r.steps);
            return (r.x_final - exact).cwiseAbs().maxCoeff();
        };
        const double coarse = error(2 * dt), fine = error(dt);
        CAPTURE(coarse, fine);
        REQUIRE(fine > 1e-12);  // well above rounding
        return std::log2(coarse / fine);
    };
    SECTION("runge_kutta4: fourth order") {
        // Four stages; the first, f(x_n), is evaluated once per state by the driver (for
        // x0 before the first step, for x_{n+1} after each step) and handed to do_step.
        const double p = order([] { return Steppers::rk4(); }, 4, 0.05);
        CHECK(p > 3.8);
        CHECK(p < 4.2);
    }
    SECTION("runge_kutta_dopri5 without error control: fifth order, first same as last") {
        // Seven stages; the seventh is f(x_{n+1}), the next step's first: six a step.
        const double p = order([] { return Steppers::dopri5(); }, 6, 0.05);
        CHECK(p > 4.8);
        CHECK(p < 5.2);
    }
}

TEST_CASE("driver: right-hand-side evaluations, counted exactly") {
    // A blow-up run at moderate tolerances: rejected steps happen, so the counts tell apart
    // a derivative shared by all trials from one recomputed on every trial.
    const System sys = blowing_up();
    const State x0 = blowup_tokens();
    Counting<System> counted(sys);
    Options o;
    SECTION("dopri5 (FSAL): f(x0) once, then six per trial") {
        // Dormand–Prince has seven stages; the seventh is f at the new state, which is the
        // next step's first (first same as last). A rejected trial also evaluated all six.
        auto stepper = odeint::make_controlled(1e-8, 1e-8, Steppers::dopri5());
        const auto r = ssmdyn::integrate_guarded(stepper, counted, x0, 10.0, o);
        REQUIRE(r.status == Status::BlowUp);
        REQUIRE(r.rejected_steps > 0);
        CHECK(counted.calls == r.rhs_evaluations);
        CHECK(r.rhs_evaluations == 1 + 6 * (r.steps + r.rejected_steps));
    }
    SECTION("cash_karp: f(x_n) once per accepted state, five more per trial") {
        // Cash–Karp has six stages, the first f(x_n); every trial from x_n (rejected ones
        // included) shares the one f(x_n), evaluated at x0 and after each accepted step.
        auto stepper = odeint::make_controlled(1e-8, 1e-8, Steppers::cash_karp());
        const auto r = ssmdyn::integrate_guarded(stepper, counted, x0, 10.0, o);
        REQUIRE(r.status == Status::BlowUp);
        REQUIRE(r.rejected_steps > 0);
        CHECK(counted.calls == r.rhs_evaluations);
        CHECK(r.rhs_evaluations == 1 + 6 * r.steps + 5 * r.rejected_steps);
    }
    SECTION("rk4: f(x0), then four per step") {
        Steppers::rk4 stepper;
        o.dt = 1e-3;
        const auto r = ssmdyn::integrate_guarded(stepper, counted, x0, 0.3, o);
        REQUIRE(r.status == Status::Completed);
        CHECK(r.steps == 300);
        CHECK(counted.calls == r.rhs_evaluations);
        CHECK(r.rhs_evaluations == 1 + 4 * r.steps);
    }
    SECTION("simulate() builds the same steppers and pays the same") {
        for (auto st : {ssmdyn::Stepper::Dopri5, ssmdyn::Stepper::CashKarp}) {
            CAPTURE(ssmdyn::to_string(st));
            o.stepper = st;
            const auto r = ssmdyn::simulate(sys, x0, 10.0, o);
            REQUIRE(r.status == Status::BlowUp);
            REQUIRE(r.rejected_steps > 0);
            const std::size_t trials = r.steps + r.rejected_steps;
            CHECK(r.rhs_evaluations == (st == ssmdyn::Stepper::Dopri5 ? 1 + 6 * trials : 1 + 5 * trials + r.steps));
        }
    }
    SECTION("dense output: the stepper's own start costs one more") {
        // odeint's dense output evaluates f at its start itself; its rejected trials stay
        // inside do_step, so only a lower bound and the count's integrity are exact here.
        auto stepper = odeint::make_dense_output(1e-8, 1e-8, Steppers::dopri5());
        const auto r = ssmdyn::integrate_guarded(stepper, counted, x0, 10.0, o);
        REQUIRE(r.status == Status::BlowUp);
        CHECK(counted.calls == r.rhs_evaluations);
        CHECK(r.rhs_evaluations >= 2 + 6 * r.steps);
    }
}

TEST_CASE("driver: Record::Times keeps the tail of a run that blows up between output times") {
    const System sys = blowing_up();
    const State x0 = blowup_tokens();
    const double T_star = test::token1_blowup_time(1.0, 0.5, 0.0, 1.0);  // ≈ 0.41923
    Options o;
    o.rtol = 1e-12;
    o.atol = 1e-14;
    o.record = ssmdyn::Record::Times;
    o.output_times = log_times();
    const auto n_before = static_cast<std::size_t>(
        std::count_if(o.output_times.begin(), o.output_times.end(), [&](double t) { return t < T_star; }));
    REQUIRE(n_before > 10);
    REQUIRE(n_before < o.output_times.size());

    auto check_tail = [&](const ssmdyn::SimulateResult<double>& r, std::size_t max_tail) {
        REQUIRE(r.status == Status::BlowUp);
        REQUIRE(r.t_blowup.has_value());
        CHECK(test::rel_err(*r.t_blowup, T_star) < 1e-6);
        // The output times before the blow-up, exactly, then the tail.
        REQUIRE(r.times.size() > n_before);
        for (std::size_t k = 0; k < n_before; ++k) CHECK(r.times[k] == o.output_times[k]);
        const std::size_t tail = r.times.size() - n_before;
        CHECK(tail <= max_tail);
        CHECK(r.times.back() == *r.t_blowup);
        CHECK(r.states.back() == r.x_final);
        for (std::size_t k = 1; k < r.times.size(); ++k) CHECK(r.times[k] > r.times[k - 1]);
        for (std::size_t k = n_before + 1; k < r.times.size(); ++k)  // token 1 grows towards T*
            CHECK(r.states[k](0) > r.states[k - 1](0));
        check_token1_times(r, 1.0, 0.5, 0.0, 1e-6);  // and every tail state is the solution there
        return tail;
    };

    const auto r = ssmdyn::simulate(sys, x0, 10.0, o);
    const std::size_t tail = check_tail(r, o.max_tail_states);
    CHECK(tail > 20);
    // Close enough to T* to fit a rate on: the tail spans the last decade of T* − t.
    CHECK(*r.t_blowup - r.times[r.times.size() - tail] > 10 * (*r.t_blowup - r.times[r.times.size() - 2]));

    SECTION("at most max_tail_states, the last ones") {
        Options few = o;
        few.max_tail_states = 3;
        const auto r3 = ssmdyn::simulate(sys, x0, 10.0, few);
        REQUIRE(check_tail(r3, 3) == 3);
        for (std::size_t k = 1; k <= 3; ++k) CHECK(r3.times[r3.times.size() - k] == r.times[r.times.size() - k]);
        few.max_tail_states = 0;
        const auto r0 = ssmdyn::simulate(sys, x0, 10.0, few);
        CHECK(r0.times.size() == n_before);
    }
    SECTION("a dense-output stepper keeps its tail too") {
        auto dense = odeint::make_dense_output(1e-12, 1e-14, Steppers::dopri5());
        check_tail(ssmdyn::integrate_guarded(dense, sys, x0, 10.0, o), o.max_tail_states);
    }
    SECTION("a completed run has no tail") {
        const auto rc = ssmdyn::simulate(sys, x0, 0.3, [&] {
            Options c = o;
            c.output_times.resize(static_cast<std::size_t>(
                std::count_if(o.output_times.begin(), o.output_times.end(), [](double t) { return t <= 0.3; })));
            return c;
        }());
        REQUIRE(rc.status == Status::Completed);
        CHECK(rc.times.back() <= 0.3);
        CHECK(rc.times.size() < n_before);
    }
}

namespace {
/// Δ(z) = softplus(z), but NaN past z = 2: with μ > 0, s > 0 the tokens grow into it.
struct NanPast2 {
    double operator()(double z) const { return z > 2 ? std::numeric_limits<double>::quiet_NaN() : ssmdyn::softplus(z); }
};
/// Δ(z) = softplus(z), but NaN below z = 0.5: with μ < 0, s > 0 token 1 shrinks into it.
struct NanBelowHalf {
    double operator()(double z) const { return z < 0.5 ? std::numeric_limits<double>::quiet_NaN() : ssmdyn::softplus(z); }
};
}  // namespace

TEST_CASE("driver: a NaN-producing right-hand side ends with non_finite on a usable state") {
    const ssmdyn::SelectiveSystem<double, NanPast2> bad(ssmdyn::S6Params<double>::one_dimensional({1.0, 1.0, 1.0}));
    const State x0 = tokens({1.0, 0.5});
    Options o;
    auto check = [&](const ssmdyn::SimulateResult<double>& r) {
        CHECK(r.status == Status::NonFinite);
        REQUIRE(r.x_final.allFinite());
        State f;
        bad(r.x_final, f, r.t_final);
        CHECK(f.allFinite());  // the run can be continued from x_final
        CHECK(r.x_final(0) <= 2.0);
        CHECK(r.x_final(0) > 2.0 - 1e-6);  // non-finite trials were rejected and the step shrunk
        CHECK(r.rejected_steps > 0);
    };
    SECTION("controlled dopri5") {
        auto stepper = odeint::make_controlled(1e-10, 1e-10, Steppers::dopri5());
        check(ssmdyn::integrate_guarded(stepper, bad, x0, 10.0, o));
    }
    SECTION("controlled cash_karp") {
        auto stepper = odeint::make_controlled(1e-10, 1e-10, Steppers::cash_karp());
        check(ssmdyn::integrate_guarded(stepper, bad, x0, 10.0, o));
    }
    SECTION("dense output") {
        auto stepper = odeint::make_dense_output(1e-10, 1e-10, Steppers::dopri5());
        check(ssmdyn::integrate_guarded(stepper, bad, x0, 10.0, o));
    }
    SECTION("fixed step: the step cannot shrink, the run stops before the bad step") {
        const ssmdyn::SelectiveSystem<double, NanBelowHalf> shrinking(
            ssmdyn::S6Params<double>::one_dimensional({-1.0, 1.0, 1.0}));
        Steppers::rk4 stepper;
        o.dt = 0.01;
        const auto r = ssmdyn::integrate_guarded(stepper, shrinking, tokens({1.0, 0.9}), 100.0, o);
        CHECK(r.status == Status::NonFinite);
        CHECK(r.steps > 10);
        CHECK(r.t_final < 100.0);
        REQUIRE(r.x_final.allFinite());
        CHECK(r.x_final.minCoeff() >= 0.5);
        State f;
        shrinking(r.x_final, f, r.t_final);
        CHECK(f.allFinite());
    }
    SECTION("not finite at the initial state") {
        auto stepper = odeint::make_controlled(1e-10, 1e-10, Steppers::dopri5());
        const auto r = ssmdyn::integrate_guarded(stepper, bad, tokens({3.0}), 1.0, o);
        CHECK(r.status == Status::NonFinite);
        CHECK(r.steps == 0);
        CHECK(r.x_final == tokens({3.0}));
        CHECK(r.rhs_evaluations == 1);
    }
}

TEST_CASE("driver: odeint_error from inside a step becomes a status") {
    // f = +1 at x <= 0 and -1 above, started at x = 0 with a purely relative tolerance:
    // the error estimate and the tolerance both scale with dt, so no step passes. odeint's
    // dense output retries 500 times inside do_step (from dt = 1e35 the step stays
    // positive) and throws step_adjustment_error, an odeint_error.
    struct Jump {
        using State = Eigen::VectorXd;
        void operator()(const State& x, State& dxdt, double) const {
            dxdt = x.unaryExpr([](double v) { return v <= 0 ? 1.0 : -1.0; });
        }
    };
    auto dense = odeint::make_dense_output(0.0, 1e-8, Steppers::dopri5());
    Options o;
    o.dt = 1e35;
    const State x0 = tokens({0.0});
    const auto r = ssmdyn::integrate_guarded(dense, Jump{}, x0, 1e36, o);
    CHECK(r.status == Status::StepSizeUnderflow);
    CHECK(r.message.find("odeint") != std::string::npos);
    CHECK(r.steps == 0);
    CHECK(r.t_final == 0.0);
    CHECK(r.x_final == x0);
}

TEST_CASE("driver: the result carries the initial state and the token dimension") {
    std::mt19937 rng(32);
    auto p = test::random_params(rng, 2, 3);
    p.S_B = -p.S_C;
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 2, 4));
    auto stepper = odeint::make_controlled(1e-9, 1e-9, Steppers::dopri5());
    const auto r = ssmdyn::integrate_guarded(stepper, sys, x0, 1.0);
    REQUIRE(r.status == Status::Completed);
    CHECK(r.dim == 2);
    CHECK(r.x_initial == x0);

    struct Cubic {  // no dim(): one-dimensional tokens
        using State = Eigen::VectorXd;
        void operator()(const State& x, State& dxdt, double) const { dxdt = x.array().cube(); }
    };
    Steppers::rk4 rk4;
    const auto rc = ssmdyn::integrate_guarded(rk4, Cubic{}, tokens({0.1, -0.2}), 1.0);
    CHECK(rc.dim == 1);
    CHECK(rc.x_initial == tokens({0.1, -0.2}));
}

TEST_CASE("driver: invalid options and initial states throw std::invalid_argument") {
    const System sys = converging();
    auto stepper = odeint::make_controlled(1e-9, 1e-9, Steppers::dopri5());
    Options o;
    CHECK_THROWS_AS(ssmdyn::integrate_guarded(stepper, sys, tokens({1.0}), -1.0, o), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::integrate_guarded(stepper, sys, State(), 1.0, o), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::integrate_guarded(stepper, sys, tokens({std::nan("")}), 1.0, o), std::invalid_argument);
    o.max_steps = 0;
    CHECK_THROWS_AS(ssmdyn::integrate_guarded(stepper, sys, tokens({1.0}), 1.0, o), std::invalid_argument);
    // The stepper carries its own tolerances: the driver ignores these.
    Options ignored;
    ignored.rtol = ignored.atol = 0;
    CHECK(ssmdyn::integrate_guarded(stepper, sys, tokens({1.0}), 1.0, ignored).status == Status::Completed);
}
