#include "support.hpp"

#include <ssmdyn/theory/rates.hpp>

using Result = ssmdyn::SimulateResult<double>;
using State = ssmdyn::StateVector<double>;

namespace {
// A synthetic 1-token trajectory x(t) at log-spaced times in [t0, t1].
template <typename F>
Result trajectory(F x, double t0, double t1, int n, ssmdyn::Status status = ssmdyn::Status::Completed) {
    Result r;
    r.status = status;
    for (int k = 0; k < n; ++k) {
        const double t = t0 * std::pow(t1 / t0, double(k) / (n - 1));
        r.times.push_back(t);
        r.states.push_back(State::Constant(1, x(t)));
    }
    r.t_final = r.times.back();
    r.x_final = r.states.back();
    r.x_initial = r.states.front();
    r.dim = 1;
    return r;
}
}  // namespace

TEST_CASE("fit_line recovers an exact line and reports R^2 = 1") {
    std::vector<double> u{0, 1, 2, 3, 4}, v;
    for (double e : u) v.push_back(2.5 * e - 1.0);
    const auto f = ssmdyn::fit_line(u, v);
    CHECK(test::rel_err(f.slope, 2.5) < 1e-14);
    CHECK(test::rel_err(f.intercept, -1.0) < 1e-14);
    CHECK(f.r_squared > 1 - 1e-14);
    v[2] += 3.0;  // an outlier lowers the fit quality
    CHECK(ssmdyn::fit_line(u, v).r_squared < 0.9);
    CHECK(std::isnan(ssmdyn::fit_line(std::vector<double>{1, 2}, std::vector<double>{1, 2}).slope));
}

TEST_CASE("observe measures t^p, (ln t)^q and c ln t laws on the tail") {
    const auto conv = trajectory([](double t) { return 0.7 / std::sqrt(t); }, 1.0, 1e6, 60);
    const auto oc = ssmdyn::observe(conv);
    CHECK(oc.regime == ssmdyn::Regime::Convergence);
    CHECK(test::rel_err(oc.tokens[0].time_power.slope, -0.5) < 1e-10);
    CHECK(test::rel_err(oc.sqrt_t_first, 0.7) < 1e-10);

    const auto slow = trajectory([](double t) { return 3.0 * std::pow(std::log(t), 1.7); }, 2.0, 1e8, 80);
    const auto os = ssmdyn::observe(slow);
    CHECK(os.regime == ssmdyn::Regime::SlowDivergence);
    CHECK(test::rel_err(os.tokens[0].log_power.slope, 1.7) < 1e-10);

    const auto lin = trajectory([](double t) { return 0.8 * std::log(t) + 2.0; }, 2.0, 1e8, 80);
    const auto ol = ssmdyn::observe(lin);
    CHECK(test::rel_err(ol.tokens[0].log_linear.slope, 0.8) < 1e-10);
    CHECK(ol.tokens[0].log_linear.r_squared > 1 - 1e-12);
}

TEST_CASE("observe fits the growth law before a blow-up") {
    const double T = 2.0;
    Result r;
    r.status = ssmdyn::Status::BlowUp;
    for (int k = 0; k < 40; ++k) {  // steps approaching T geometrically, x = (T − t)^(−1/3)
        const double t = T - std::pow(0.7, k);
        r.times.push_back(t);
        r.states.push_back(State::Constant(1, std::pow(T - t, -1.0 / 3.0)));
    }
    r.t_final = r.times.back();
    r.t_blowup = T;
    r.x_final = r.states.back();
    r.x_initial = r.states.front();
    const auto o = ssmdyn::observe(r);
    CHECK(o.regime == ssmdyn::Regime::FastDivergence);
    REQUIRE(o.t_blowup.has_value());
    CHECK(test::rel_err(o.blowup_growth.slope, -1.0 / 3.0) < 1e-9);
}

TEST_CASE("the observed regime from the endpoints and the status") {
    Result r;
    r.status = ssmdyn::Status::Completed;
    State x0(3), x1(3);
    x0 << 1.0, 0.0, -2.0;
    x1 << 0.5, 0.0, -1.0;
    r.x_initial = x0;
    r.x_final = x1;
    CHECK(ssmdyn::observed_regime(r) == ssmdyn::Regime::Convergence);
    r.x_final = 3 * x0;
    CHECK(ssmdyn::observed_regime(r) == ssmdyn::Regime::SlowDivergence);
    r.x_final = x0;
    CHECK(ssmdyn::observed_regime(r) == ssmdyn::Regime::Stationary);
    r.x_final << 0.5, 0.0, -3.0;
    CHECK(ssmdyn::observed_regime(r) == ssmdyn::Regime::Undetermined);
    r.status = ssmdyn::Status::BlowUp;
    CHECK(ssmdyn::observed_regime(r) == ssmdyn::Regime::FastDivergence);
    r.status = ssmdyn::Status::MaxSteps;
    std::string why;
    CHECK(ssmdyn::observed_regime(r, &why) == ssmdyn::Regime::Undetermined);
    CHECK_FALSE(why.empty());
}

TEST_CASE("observe refuses a result that does not carry its initial state") {
    Result r;
    r.x_final = State::Ones(4);
    CHECK(test::message_of([&] { (void)ssmdyn::observe(r); }).find("initial state") != std::string::npos);
    r.x_initial = State::Ones(4);
    r.dim = 1;
    CHECK_THROWS_AS(ssmdyn::observe(r, 1.5), std::invalid_argument);  // tail_start outside [0, 1)
}
