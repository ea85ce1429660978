#include "support.hpp"

#include <limits>
#include <string>

#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/core/system.hpp>

using ssmdyn::Status;
using ssmdyn::Stepper;
using System = ssmdyn::SelectiveSystem<double>;
using State = System::State;
using Options = ssmdyn::SimulateOptions<double>;

namespace {
using test::tokens;
Options tight(Stepper s = Stepper::Dopri5) {
    Options o;
    o.stepper = s;
    o.rtol = 1e-12;
    o.atol = 1e-14;
    return o;
}
}  // namespace

TEST_CASE("1-D convergence: token 1 follows its quadrature solution") {
    const double mu = -0.8, s = 0.7, a = 1.0, b = 0.3;
    const System sys(ssmdyn::S6Params<double>::one_dimensional({mu, s, a, b}));
    for (double x1 : {1.3, -0.9}) {
        const auto r = ssmdyn::simulate(sys, tokens({x1, 0.5, -2.0}), 20.0, tight());
        REQUIRE(r.status == Status::Completed);
        CHECK(r.t_final == 20.0);
        // Every recorded time must be what the quadrature says it took to get there.
        for (std::size_t k = 1; k < r.times.size(); k += 7)
            CHECK(test::rel_err(test::token1_time(mu, s, b, x1, r.states[k](0)), r.times[k]) < 1e-8);
        CHECK(std::abs(r.x_final(0)) < std::abs(x1) / 3);
        CHECK(r.x_final(1) > 0);  // tokens keep their sign
        CHECK(r.x_final(2) < 0);
    }
}

TEST_CASE("1-D fast divergence: the blow-up time matches the quadrature T*") {
    struct Case { double mu, s, b, x1; };
    for (Case c : {Case{1.0, 0.5, 0.0, 1.0}, Case{0.3, 2.0, -1.0, 0.4}, Case{2.0, 0.0, 0.5, -0.7},
                   Case{0.5, -1.0, 0.2, -1.5}}) {
        CAPTURE(c.mu, c.s, c.b, c.x1);
        const System sys(ssmdyn::S6Params<double>::one_dimensional({c.mu, c.s, 1.0, c.b}));
        const double T_star = test::token1_blowup_time(c.mu, c.s, c.b, c.x1);
        for (Stepper st : {Stepper::Dopri5, Stepper::Fehlberg78, Stepper::BulirschStoer}) {
            CAPTURE(ssmdyn::to_string(st));
            const auto r = ssmdyn::simulate(sys, tokens({c.x1, 0.1, -0.2}), 10 * T_star, tight(st));
            REQUIRE(r.status == Status::BlowUp);
            REQUIRE(r.t_blowup.has_value());
            CHECK(test::rel_err(*r.t_blowup, T_star) < 1e-6);
            CHECK(*r.t_blowup >= r.t_final);
            CHECK(r.x_final.allFinite());
            // Stopped by the norm bound or by the step collapsing: either way far out.
            CHECK(std::abs(r.x_final(0)) > 1e3 * std::abs(c.x1));
        }
    }
}

TEST_CASE("s = 0 blow-up has the closed form T* = 1 / (2 mu softplus(b) x0^2)") {
    const double mu = 0.6, b = -0.4, x0 = 0.8;
    const System sys(ssmdyn::S6Params<double>::one_dimensional({mu, 0.0, 2.0, b}));
    const double T_star = 1.0 / (2 * mu * ssmdyn::softplus(b) * x0 * x0);
    const auto r = ssmdyn::simulate(sys, tokens({x0}), 5.0, tight());
    REQUIRE(r.status == Status::BlowUp);
    CHECK(test::rel_err(*r.t_blowup, T_star) < 1e-8);
}

TEST_CASE("blow-up is caught by step-size collapse when the norm bound is out of reach") {
    const System sys(ssmdyn::S6Params<double>::one_dimensional({1.0, 0.0, 1.0, 0.0}));
    Options o = tight();
    o.blowup_norm = std::numeric_limits<double>::max();
    const auto r = ssmdyn::simulate(sys, tokens({1.0}), 5.0, o);
    REQUIRE(r.status == Status::BlowUp);
    CHECK(test::rel_err(*r.t_blowup, 1.0 / (2 * std::log(2.0))) < 1e-6);
    CHECK(r.x_final.allFinite());
}

TEST_CASE("a plain x' = x^3 ends with blow_up at 1/(2 x0^2) instead of looping forever") {
    struct Cubic {  // no Scalar typedef: simulate deduces it from the state
        using State = Eigen::VectorXd;
        void operator()(const State& x, State& dxdt, double) const { dxdt = x.array().cube(); }
    };
    const auto r = ssmdyn::simulate(Cubic{}, tokens({0.5}), 100.0, tight());
    REQUIRE(r.status == Status::BlowUp);
    CHECK(test::rel_err(*r.t_blowup, 2.0) < 1e-6);
}

TEST_CASE("every stepper solves the same problem to its tolerance") {
    std::mt19937 rng(21);
    auto p = test::random_params(rng, 3, 2);
    p.S_B = -p.S_C;  // negative semi-definite μ: bounded trajectories
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 3, 6));
    const auto ref = ssmdyn::simulate(sys, x0, 3.0, tight(Stepper::Fehlberg78));
    REQUIRE(ref.status == Status::Completed);
    REQUIRE((ref.x_final - x0).norm() > 1e-2);
    for (Stepper st : {Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78, Stepper::BulirschStoer,
                       Stepper::Rk4}) {
        CAPTURE(ssmdyn::to_string(st));
        Options o;
        o.stepper = st;
        o.rtol = o.atol = 1e-9;
        o.dt = st == Stepper::Rk4 ? 1e-3 : 0.0;
        const auto r = ssmdyn::simulate(sys, x0, 3.0, o);
        REQUIRE(r.status == Status::Completed);
        CHECK(r.t_final == 3.0);
        CHECK(test::max_rel_err(r.x_final, ref.x_final) < 1e-7);
        CHECK(r.steps > 0);
        CHECK(r.rhs_evaluations >= r.steps);
    }
}

TEST_CASE("the RMS error norm solves to its tolerance and never takes more steps than the maximum") {
    std::mt19937 rng(22);
    auto p = test::random_params(rng, 4, 3);
    p.S_B = -p.S_C;  // bounded trajectories
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 4, 12));
    const auto ref = ssmdyn::simulate(sys, x0, 3.0, tight(Stepper::Fehlberg78));
    REQUIRE(ref.status == Status::Completed);
    for (Stepper st : {Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78}) {
        CAPTURE(ssmdyn::to_string(st));
        Options o;
        o.stepper = st;
        o.rtol = o.atol = 1e-9;
        const auto max_norm = ssmdyn::simulate(sys, x0, 3.0, o);
        o.error_norm = ssmdyn::ErrorNorm::Rms;
        const auto rms_norm = ssmdyn::simulate(sys, x0, 3.0, o);
        REQUIRE(rms_norm.status == Status::Completed);
        CHECK(test::max_rel_err(rms_norm.x_final, ref.x_final) < 1e-7);
        // RMS <= max on every trial step, so steps can only get longer; with 48
        // components of different sizes they do.
        CHECK(rms_norm.steps < max_norm.steps);
    }
    Options o;
    o.stepper = Stepper::BulirschStoer;
    o.error_norm = ssmdyn::ErrorNorm::Rms;
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, 1.0, o), std::invalid_argument);
    CHECK(ssmdyn::parse_error_norm("rms") == ssmdyn::ErrorNorm::Rms);
    CHECK(ssmdyn::parse_error_norm(ssmdyn::to_string(ssmdyn::ErrorNorm::Max)) == ssmdyn::ErrorNorm::Max);
    CHECK_THROWS_AS(ssmdyn::parse_error_norm("l2"), std::invalid_argument);
}

TEST_CASE("rk4 is fourth order: halving the step divides the error by 16") {
    const System sys(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    const State x0 = tokens({2.0, -1.0, 1.5});
    const auto ref = ssmdyn::simulate(sys, x0, 1.0, tight(Stepper::Fehlberg78));
    auto error = [&](double dt) {
        Options o;
        o.stepper = Stepper::Rk4;
        o.dt = dt;
        const auto r = ssmdyn::simulate(sys, x0, 1.0, o);
        REQUIRE(r.steps == static_cast<std::size_t>(std::lround(1.0 / dt)));
        REQUIRE(r.rhs_evaluations == 4 * r.steps + 1);  // one at the start, four a step
        return (r.x_final - ref.x_final).cwiseAbs().maxCoeff();
    };
    const double order = std::log2(error(0.02) / error(0.01));
    CHECK(order > 3.8);
    CHECK(order < 4.2);
}

TEST_CASE("recorded steps are strictly increasing in time and end at t_end once") {
    const System sys(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    for (Stepper st : {Stepper::Dopri5, Stepper::Rk4}) {
        Options o;
        o.stepper = st;
        o.dt = st == Stepper::Rk4 ? 0.1 : 0.0;
        const auto r = ssmdyn::simulate(sys, tokens({1.0, 2.0}), 3.0, o);
        REQUIRE(r.status == Status::Completed);
        REQUIRE(r.times.size() == r.steps + 1);
        CHECK(r.times.front() == 0.0);
        CHECK(r.times.back() == 3.0);
        for (std::size_t k = 1; k < r.times.size(); ++k) CHECK(r.times[k] > r.times[k - 1]);
        CHECK(r.states.back() == r.x_final);
    }
}

TEST_CASE("requested output times are hit exactly") {
    const System sys(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    const State x0 = tokens({1.0, 2.0});
    Options o = tight();
    o.record = ssmdyn::Record::Times;
    o.output_times = {0.0, 0.25, 1.0, 3.0};
    const auto r = ssmdyn::simulate(sys, x0, 3.0, o);
    REQUIRE(r.status == Status::Completed);
    REQUIRE(r.times == o.output_times);
    CHECK(r.states[0] == x0);
    for (std::size_t k = 1; k < r.times.size(); ++k)
        CHECK(test::rel_err(test::token1_time(-1.0, 0.5, 0.0, 1.0, r.states[k](0)), r.times[k]) < 1e-8);
    Options none = tight();
    none.record = ssmdyn::Record::None;
    const auto rn = ssmdyn::simulate(sys, x0, 3.0, none);
    CHECK(rn.times.empty());
    CHECK(test::max_rel_err(rn.x_final, r.states.back()) < 1e-9);
}

TEST_CASE("statuses: step budget, non-finite right-hand side, step-size underflow") {
    const System converging(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    Options o;
    o.max_steps = 3;
    const auto r = ssmdyn::simulate(converging, tokens({1.0, 2.0}), 100.0, o);
    CHECK(r.status == Status::MaxSteps);
    CHECK(r.steps == 3);
    CHECK(r.t_final < 100.0);

    // A step-size map that turns NaN past z = 2: tokens grow (μ > 0, s > 0) into it.
    struct NanPast2 {
        double operator()(double z) const {
            return z > 2 ? std::numeric_limits<double>::quiet_NaN() : ssmdyn::softplus(z);
        }
    };
    const ssmdyn::SelectiveSystem<double, NanPast2> bad(
        ssmdyn::S6Params<double>::one_dimensional({1.0, 1.0, 1.0, 0.0}));
    const auto rb = ssmdyn::simulate(bad, tokens({1.0, 0.5}), 10.0);
    CHECK(rb.status == Status::NonFinite);
    CHECK(rb.x_final.allFinite());
    CHECK(rb.x_final(0) <= 2.0 + 1e-12);
    CHECK(rb.x_final(0) > 1.0);

    // x' = −sign(x): the error estimate never drops below the tolerance at 0.
    struct Relay {
        using State = Eigen::VectorXd;
        void operator()(const State& x, State& dxdt, double) const {
            dxdt = -x.array().sign().matrix();
        }
    };
    Options ro;
    ro.atol = 0.0;
    ro.rtol = 1e-8;
    const auto rr = ssmdyn::simulate(Relay{}, tokens({1.0}), 3.0, ro);
    CHECK(rr.status == Status::StepSizeUnderflow);
    CHECK(std::abs(rr.t_final - 1.0) < 1e-6);
}

TEST_CASE("invalid options and initial states throw std::invalid_argument") {
    const System sys(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    const State x0 = tokens({1.0});
    Options o;
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, -1.0, o), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, std::nan(""), o), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::simulate(sys, State(), 1.0, o), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::simulate(sys, tokens({std::nan("")}), 1.0, o), std::invalid_argument);
    o.rtol = -1;
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, 1.0, o), std::invalid_argument);
    o = Options{};
    o.rtol = o.atol = 0;
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, 1.0, o), std::invalid_argument);
    o = Options{};
    o.record = ssmdyn::Record::Times;
    o.output_times = {0.5, 0.2};
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, 1.0, o), std::invalid_argument);
    o.output_times = {2.0};
    CHECK_THROWS_AS(ssmdyn::simulate(sys, x0, 1.0, o), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::parse_stepper("euler"), std::invalid_argument);
    for (Stepper s : {Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78, Stepper::BulirschStoer,
                      Stepper::Rk4})
        CHECK(ssmdyn::parse_stepper(ssmdyn::to_string(s)) == s);
}

TEST_CASE("x0 may be the flat state, the D x L token matrix, or any Eigen expression of either") {
    std::mt19937 rng(23);
    auto p = test::random_params(rng, 2, 3);
    p.S_B = -p.S_C;  // bounded trajectories
    const System sys(p);
    const Eigen::MatrixXd X0 = test::random_tokens(rng, 2, 4);  // column l = token l
    const State flat = ssmdyn::to_state(X0);
    const auto r_flat = ssmdyn::simulate(sys, flat, 1.0);
    REQUIRE(r_flat.status == Status::Completed);
    // The same numbers in, so the same numbers out, exactly.
    CHECK(ssmdyn::simulate(sys, X0, 1.0).x_final == r_flat.x_final);
    CHECK(ssmdyn::simulate(sys, X0.transpose().transpose(), 1.0).x_final == r_flat.x_final);
    CHECK(ssmdyn::simulate(sys, 1.0 * flat, 1.0, Options{}).x_final == r_flat.x_final);
    CHECK(ssmdyn::simulate(sys, X0, 1.0).x_initial == flat);
    CHECK(ssmdyn::simulate(sys, X0, 1.0).dim == 2);

    // One-dimensional tokens as a 1 x L row.
    const System one_d(ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0}));
    const Eigen::RowVector3d row(1.0, -0.5, 2.0);
    CHECK(ssmdyn::simulate(one_d, row, 1.0).x_final == ssmdyn::simulate(one_d, tokens({1.0, -0.5, 2.0}), 1.0).x_final);

    // Neither form: the message names x0 and its shape.
    const std::string wrong = test::message_of([&] { (void)ssmdyn::simulate(sys, Eigen::MatrixXd(3, 2), 1.0); });
    CHECK(wrong.find("x0") != std::string::npos);
    CHECK(wrong.find("3x2") != std::string::npos);
    struct Cubic {  // no dim(): only the flat form can be read
        using State = Eigen::VectorXd;
        void operator()(const State& x, State& dxdt, double) const { dxdt = x.array().cube(); }
    };
    const std::string no_dim = test::message_of([&] { (void)ssmdyn::simulate(Cubic{}, Eigen::RowVector2d(0.1, 0.2), 1.0); });
    CHECK(no_dim.find("x0 is 1x2") != std::string::npos);
}

TEST_CASE("simulate works in float, the Scalar coming from x0") {
    const ssmdyn::SelectiveSystem<float> sys(ssmdyn::S6Params<float>::one_dimensional({1.0f, 0.0f, 2.0f, -0.4f}));
    ssmdyn::SimulateOptions<float> o;
    o.rtol = 1e-6f;
    o.atol = 1e-7f;
    const auto r = ssmdyn::simulate(sys, Eigen::VectorXf::Constant(1, 0.8f), 5.0f, o);
    REQUIRE(r.status == Status::BlowUp);
    // s = 0: T* = 1 / (2 mu softplus(b) x0^2), closed form.
    const double T_star = 1.0 / (2 * 1.0 * ssmdyn::softplus(-0.4) * 0.8 * 0.8);
    CHECK(test::rel_err(*r.t_blowup, T_star) < 1e-4);
}

TEST_CASE("every enum reads back from its name, and unknown names list the valid ones") {
    for (Status s : {Status::Completed, Status::BlowUp, Status::StepSizeUnderflow, Status::MaxSteps, Status::NonFinite})
        CHECK(ssmdyn::parse_status(ssmdyn::to_string(s)) == s);
    for (auto r : {ssmdyn::Record::None, ssmdyn::Record::Steps, ssmdyn::Record::Times})
        CHECK(ssmdyn::parse_record(ssmdyn::to_string(r)) == r);
    for (auto n : {ssmdyn::ErrorNorm::Max, ssmdyn::ErrorNorm::Rms})
        CHECK(ssmdyn::parse_error_norm(ssmdyn::to_string(n)) == n);
    CHECK(test::message_of([] { (void)ssmdyn::parse_status("diverged"); }) ==
          "status 'diverged' is unknown; use completed, blow_up, step_size_underflow, max_steps, non_finite or time_limit");
    CHECK(test::message_of([] { (void)ssmdyn::parse_record("all"); }) == "record 'all' is unknown; use none, steps or times");
    CHECK(test::message_of([] { (void)ssmdyn::parse_stepper("euler"); }) ==
          "stepper 'euler' is unknown; use dopri5, cash_karp, fehlberg78, bulirsch_stoer, rk4 or rosenbrock4");
}

TEST_CASE("simulate runs in float with float-sized default tolerances and agrees with double") {
    const auto pd = ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0, 0.0});
    const ssmdyn::SelectiveSystem<double> sd(pd);
    const ssmdyn::SelectiveSystem<float> sf(pd.cast<float>());
    ssmdyn::StateVector<double> x(3);
    x << 1.0, -0.5, 2.0;
    const auto rd = ssmdyn::simulate(sd, x, 5.0);
    const ssmdyn::StateVector<float> xf = x.cast<float>();
    const auto rf = ssmdyn::simulate(sf, xf, 5.0f);
    CHECK(ssmdyn::SimulateOptions<float>{}.rtol == Approx(100 * std::numeric_limits<float>::epsilon()));
    REQUIRE(rd.status == ssmdyn::Status::Completed);
    REQUIRE(rf.status == ssmdyn::Status::Completed);
    CHECK(test::max_rel_err(rf.x_final.cast<double>(), rd.x_final) < 1e-4);
    // A tolerance below float's precision is refused, not run into a step-size collapse.
    ssmdyn::SimulateOptions<float> tight;
    tight.rtol = 1e-8f;
    CHECK(test::message_of([&] { ssmdyn::simulate(sf, xf, 5.0f, tight); }).find("below what this precision resolves") !=
          std::string::npos);
}
