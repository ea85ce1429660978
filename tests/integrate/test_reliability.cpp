// Reliability of the verdicts and of the run's resources: no blow-up verdict on a
// convergent system at any horizon, the stiff method and the automatic switch against a
// reference solution, the wall-clock budget, the observer and the cap on kept states.
#include "support.hpp"

#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>

using ssmdyn::Status;
using System = ssmdyn::SelectiveSystem<double>;
using State = System::State;
using Options = ssmdyn::SimulateOptions<double>;

namespace {

// A system with μ = S_Cᵀ S_B = −S_Bᵀ W S_B ⪯ 0 (W positive diagonal): every token's own
// interaction x_lᵀ μ x_l is non-positive, the convergent case.
ssmdyn::S6Params<double> convergent_params(std::mt19937& rng, Eigen::Index D, Eigen::Index N) {
    auto p = test::random_params(rng, D, N);
    std::uniform_real_distribution<double> w(0.1, 2.0);
    Eigen::VectorXd weights(N);
    for (Eigen::Index n = 0; n < N; ++n) weights[n] = w(rng);
    p.S_C = -(weights.asDiagonal() * p.S_B);
    return p;
}

}  // namespace

TEST_CASE("verdicts: 1000 random convergent systems to horizons up to 1e50 never report blow_up") {
    // A collapsing step on a decaying solution (absolute tolerance far above the state at a
    // huge t) used to be read as a blow-up: the verdict now needs growth.
    std::mt19937 rng(2024);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::uniform_int_distribution<int> exponent(0, 50), tokens(1, 8), dims(2, 4);
    std::map<std::string, int> seen;
    Options o;
    o.record = ssmdyn::Record::None;
    o.max_steps = 20000;
    for (int k = 0; k < 1000; ++k) {
        const bool one_dim = k % 2 == 0;
        const Eigen::Index D = one_dim ? 1 : dims(rng), L = tokens(rng);
        ssmdyn::S6Params<double> p;
        if (one_dim)
            p = ssmdyn::S6Params<double>::one_dimensional(
                {-(0.01 + 2 * unit(rng)), 4 * unit(rng) - 2, 0.1 + 2 * unit(rng), 2 * unit(rng) - 1});
        else
            p = convergent_params(rng, D, 3);
        const System system(p);
        const Eigen::MatrixXd x0 = 3.0 * test::random_tokens(rng, D, L);
        const double t_end = std::pow(10.0, exponent(rng));
        const auto r = ssmdyn::simulate(system, x0, t_end, o);
        ++seen[ssmdyn::to_string(r.status)];
        CAPTURE(k, D, L, t_end, r.t_final, r.message);
        CHECK(r.status != Status::BlowUp);
        CHECK(r.status != Status::NonFinite);
        // An honest underflow only where the floor min_dt_relative·t outgrows the
        // solution's own time scale, at huge t.
        if (r.status != Status::Completed) CHECK((r.status == Status::StepSizeUnderflow && r.t_final > 1e6));
        CHECK(r.x_final.cwiseAbs().maxCoeff() <= 3.0 * x0.cwiseAbs().maxCoeff() + 1e-12);
    }
    CAPTURE(seen["completed"], seen["step_size_underflow"]);
    CHECK(seen["completed"] > 800);
}

TEST_CASE("verdicts: the 1-D blow-up is still found at its closed-form time") {
    // μ > 0, s > 0: token 1 blows up at the time the quadrature gives (support.hpp).
    const double mu = 1.0, s = 0.5, b = 0.0, x0 = 1.0;
    const System system(ssmdyn::S6Params<double>::one_dimensional({mu, s, 1.0, b}));
    const double T = test::token1_blowup_time(mu, s, b, x0);
    Options o;
    o.record = ssmdyn::Record::None;
    o.rtol = o.atol = 1e-12;
    for (auto st : {ssmdyn::Stepper::Dopri5, ssmdyn::Stepper::Rosenbrock4}) {
        CAPTURE(ssmdyn::to_string(st));
        o.stepper = st;
        const auto r = ssmdyn::simulate(system, test::tokens({x0, 0.5}), 10.0, o);
        REQUIRE(r.status == Status::BlowUp);
        CHECK(std::abs(*r.t_blowup - T) < 1e-6 * T);
    }
}

TEST_CASE("rosenbrock4 and the automatic switch agree with dopri5 at tight tolerance") {
    // Large tokens of a convergent system: a token's own interaction Δ·xᵀμx·x gives the
    // Jacobian eigenvalues of order −Δ|μ||x|², stiff at the start, mild later.
    std::mt19937 rng(11);
    const Eigen::Index D = 2, N = 3, L = 5;
    const System system(convergent_params(rng, D, N));
    const Eigen::MatrixXd x0 = 40.0 * test::random_tokens(rng, D, L);
    Options tight;
    tight.record = ssmdyn::Record::None;
    tight.rtol = 1e-12;
    tight.atol = 1e-14;
    tight.stiff_switching = false;
    const auto reference = ssmdyn::simulate(system, x0, 5.0, tight);
    REQUIRE(reference.status == Status::Completed);

    Options o;
    o.record = ssmdyn::Record::None;
    o.rtol = 1e-9;
    o.atol = 1e-12;
    o.stepper = ssmdyn::Stepper::Rosenbrock4;
    const auto stiff = ssmdyn::simulate(system, x0, 5.0, o);
    REQUIRE(stiff.status == Status::Completed);
    CHECK(test::max_rel_err(stiff.x_final, reference.x_final) < 1e-6);
    CHECK(stiff.stiff_steps == stiff.steps);
    CHECK(stiff.stiff_switches.empty());

    o.stepper = ssmdyn::Stepper::Dopri5;
    const auto switching = ssmdyn::simulate(system, x0, 5.0, o);
    REQUIRE(switching.status == Status::Completed);
    CHECK(test::max_rel_err(switching.x_final, reference.x_final) < 1e-6);
    CAPTURE(switching.steps, switching.stiff_steps, switching.stiff_switches.size(), reference.steps);
    for (std::size_t i = 1; i < switching.stiff_switches.size(); ++i)
        CHECK(switching.stiff_switches[i] > switching.stiff_switches[i - 1]);

    // A system without the structured Jacobian cannot use the stiff method.
    o.stepper = ssmdyn::Stepper::Rosenbrock4;
    auto plain = [&system](const State& x, State& dxdt, double t) { system(x, dxdt, t); };
    CHECK(test::message_of([&] { (void)ssmdyn::simulate(plain, State(State::Ones(3)), 1.0, o); })
              .rfind("stepper rosenbrock4 needs the exact structured Jacobian", 0) == 0);
}

TEST_CASE("the time budget ends a run with time_limit on its last state") {
    std::mt19937 rng(5);
    const System system(convergent_params(rng, 4, 4));
    const Eigen::MatrixXd x0 = test::random_tokens(rng, 4, 64);
    Options o;
    o.record = ssmdyn::Record::None;
    o.stepper = ssmdyn::Stepper::Rk4;
    o.dt = 1e-7;  // 1e7 steps: far more than 0.2 s
    o.max_steps = 100000000;
    o.max_wall_seconds = 0.2;
    const auto started = std::chrono::steady_clock::now();
    const auto r = ssmdyn::simulate(system, x0, 1.0, o);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    CHECK(r.status == Status::TimeLimit);
    CHECK(r.t_final > 0.0);
    CHECK(r.t_final < 1.0);
    CHECK(r.x_final.allFinite());
    CHECK(seconds < 10.0);  // not a timing assertion: only that the budget ended the run at all
    o.max_wall_seconds = -1;
    CHECK(test::message_of([&] { (void)ssmdyn::simulate(system, x0, 1.0, o); }) ==
          "max_wall_seconds must be finite and >= 0 (0: no limit)");
}

TEST_CASE("the observer sees every accepted step, and the cap thins the kept ones evenly") {
    const System system(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    const State x0 = test::tokens({1.0, -0.5, 0.25});
    Options o;
    o.stepper = ssmdyn::Stepper::Rk4;
    o.dt = 1e-3;
    const auto full = ssmdyn::simulate(system, x0, 1.0, o);
    REQUIRE(full.states.size() == 1001);

    std::vector<double> seen_t;
    std::vector<State> seen_x;
    o.observer = [&](double t, const State& x) {
        seen_t.push_back(t);
        seen_x.push_back(x);
    };
    o.max_recorded_states = 100;
    const auto capped = ssmdyn::simulate(system, x0, 1.0, o);
    // The observer saw the whole trajectory, as Record::Steps keeps it without a cap.
    REQUIRE(seen_t == full.times);
    for (std::size_t i = 0; i < seen_x.size(); ++i) CHECK(seen_x[i] == full.states[i]);
    // Kept: at most the cap, evenly strided from the start, the final state last.
    REQUIRE(capped.states.size() <= 100);
    CHECK(capped.states.size() >= 50);
    const std::size_t stride = 16;  // 1001 states under a cap of 100: halved four times
    for (std::size_t i = 0; i + 1 < capped.times.size(); ++i) CHECK(capped.times[i] == full.times[i * stride]);
    CHECK(capped.times.back() == full.times.back());
    CHECK(capped.states.back() == full.states.back());

    // Streaming alone: nothing kept in memory, everything observed.
    seen_t.clear();
    o.record = ssmdyn::Record::None;
    const auto none = ssmdyn::simulate(system, x0, 1.0, o);
    CHECK(none.states.empty());
    CHECK(seen_t.size() == 1001);

    // An observer at output times sees exactly those times.
    seen_t.clear();
    o.observe = ssmdyn::Record::Times;
    o.output_times = {0.0, 0.25, 0.5, 1.0};
    (void)ssmdyn::simulate(system, x0, 1.0, o);
    CHECK(seen_t == o.output_times);
}

TEST_CASE("a stepper that rejects without shrinking its step does not retry forever") {
    // Found by fuzz_cli_config: odeint's bulirsch_stoer at rtol 0 rejected a step at
    // t = 0.582 and kept dt, so every retry was the same; the driver now halves it.
    ssmdyn::S6Params<double> p;
    p.S_B.resize(2, 2);
    p.S_B << 1, 5.2, 0.1, -0.5;
    p.S_C.resize(2, 2);
    p.S_C << 0.3, 1, 0, 0.4;
    p.S_Delta.resize(2, 2);
    p.S_Delta << 0.5, 0, 0.1, 0.2;
    p.A.resize(2, 2);
    p.A << -1, -2, -0.5, -2;
    p.delta_bias.resize(2);
    p.delta_bias << 5, -0.3;
    const System system(p);
    Eigen::MatrixXd x0(2, 3);
    x0 << 0, -0.2, 0.7, 0.5, 0.3, -1;
    Options o;
    o.record = ssmdyn::Record::None;
    o.stepper = ssmdyn::Stepper::BulirschStoer;
    o.rtol = 0;
    o.atol = 1e-9;
    o.max_wall_seconds = 60;  // the bug ran until killed; 60 s is far beyond the fix's time
    const auto r = ssmdyn::simulate(system, x0, 6.0, o);
    CAPTURE(r.message, r.steps, r.rejected_steps);
    CHECK(r.status != Status::TimeLimit);
    CHECK(r.x_final.allFinite());
}
