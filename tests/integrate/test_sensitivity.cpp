// Eigen reports a heap allocation inside a no-malloc region through eigen_assert; make
// that assertion throw (in every build type) so the test can see it.
#include <stdexcept>
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
    do {                   \
        if (!(x)) throw std::runtime_error("Eigen assertion failed: " #x); \
    } while (0)

#include "support.hpp"

#include <cmath>
#include <string>

#include <ssmdyn/core/scan_derivatives.hpp>
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/sensitivity.hpp>
#include <ssmdyn/integrate/simulate.hpp>

using ssmdyn::Record;
using ssmdyn::Status;
using ssmdyn::Stepper;
using System = ssmdyn::SelectiveSystem<double>;
using Variational = ssmdyn::SensitivitySystem<double>;
using State = System::State;
using Options = ssmdyn::SimulateOptions<double>;

namespace {

Options tolerances(double rtol, double atol, Record record = Record::None) {
    Options o;
    o.rtol = rtol;
    o.atol = atol;
    o.record = record;
    return o;
}

/// Central differences of x(T) along each column of V: (x(T; x0 + hV) − x(T; x0 − hV)) / 2h,
/// each run at rtol 1e-12 so that the integration error (≈ 1e-12/h) stays far below the
/// O(h²) truncation.
Eigen::MatrixXd finite_differences(const System& sys, const State& x0, const Eigen::MatrixXd& V, double t_end,
                                   double h = 1e-4, const Options& o = tolerances(1e-12, 1e-14)) {
    Eigen::MatrixXd out(x0.size(), V.cols());
    for (Eigen::Index k = 0; k < V.cols(); ++k) {
        const auto plus = ssmdyn::simulate(sys, State(x0 + h * V.col(k)), t_end, o);
        const auto minus = ssmdyn::simulate(sys, State(x0 - h * V.col(k)), t_end, o);
        REQUIRE(plus.status == Status::Completed);
        REQUIRE(minus.status == Status::Completed);
        out.col(k) = (plus.x_final - minus.x_final) / (2 * h);
    }
    return out;
}

/// The 1-D right-hand side of token 1, f(u) = μ u³ softplus(s u + b).
double token1_rhs(const ssmdyn::OneDimensional<double>& s, double u) {
    return s.mu * u * u * u * ssmdyn::softplus(s.s * u + s.b);
}

}  // namespace

TEST_CASE("the variational right-hand side is one scan and one JVP per direction, allocation-free") {
    std::mt19937 rng(101);
    const Eigen::Index D = 3, N = 2, L = 5, m = 4, n = D * L;
    const auto p = test::random_params(rng, D, N);
    const System sys(p);
    const Variational var(sys, m);
    CHECK(var.dim() == D);
    CHECK(var.directions() == m);
    const Eigen::MatrixXd X = test::random_tokens(rng, D, L);
    const Eigen::MatrixXd S = test::random_tokens(rng, n, m);
    State z(n * (m + 1));
    z.head(n) = ssmdyn::to_state(X);
    for (Eigen::Index k = 0; k < m; ++k) z.segment(n * (k + 1), n) = S.col(k);
    State dz;
    var(z, dz, 0.0);
    REQUIRE(dz.size() == z.size());

    Eigen::MatrixXd Y(D, L), dY(D, L);
    ssmdyn::selective_scan(p, X, Y);
    CHECK(ssmdyn::to_state(Y) == dz.head(n));
    for (Eigen::Index k = 0; k < m; ++k) {
        CAPTURE(k);
        const Eigen::MatrixXd dX = Eigen::Map<const Eigen::MatrixXd>(S.col(k).data(), D, L);
        ssmdyn::selective_scan_jvp(p, X, dX, dY);
        CHECK(ssmdyn::to_state(dY) == dz.segment(n * (k + 1), n));
    }

    // Several threads over the directions give the same numbers.
    State dz_threads;
    Variational(sys, m, 2)(z, dz_threads, 0.0);
    CHECK(dz_threads == dz);

    Eigen::internal::set_is_malloc_allowed(false);
    CHECK_NOTHROW(var(z, dz, 0.0));
    Eigen::internal::set_is_malloc_allowed(true);

    // The augmented state's size and entries are checked, naming the part at fault.
    CHECK_THROWS_AS(var.validate_state(State::Zero(n * (m + 1) + 1)), std::invalid_argument);
    State bad = z;
    bad(n + 2) = std::nan("");
    CHECK(test::message_of([&] { var.validate_state(bad); }).rfind("S0(2,0)", 0) == 0);
    bad = z;
    bad(1) = INFINITY;
    CHECK(test::message_of([&] { var.validate_state(bad); }).rfind("x0: tokens: token 1", 0) == 0);
    CHECK_THROWS_AS(Variational(sys, -1), std::invalid_argument);
}

TEST_CASE("sensitivities equal central finite differences of simulate") {
    std::mt19937 rng(102);
    struct Case {
        const char* what;
        bool negative_mu;
        double t_end;
    };
    for (const Case c : {Case{"random mu, half its blow-up time", false, 0.06}, Case{"mu = -S_C^T S_C, long horizon", true, 5.0}}) {
        CAPTURE(c.what);
        auto p = test::random_params(rng, 2, 2);
        if (c.negative_mu) p.S_B = -p.S_C;
        const System sys(p);
        const State x0 = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
        // Unit vectors of two tokens and two random directions.
        Eigen::MatrixXd S0 = Eigen::MatrixXd::Zero(6, 4);
        S0(0, 0) = 1;
        S0(3, 1) = 1;
        S0.rightCols(2) = test::random_tokens(rng, 6, 2);

        for (Stepper stepper : {Stepper::Dopri5, Stepper::Fehlberg78}) {
            CAPTURE(ssmdyn::to_string(stepper));
            Options o = tolerances(1e-10, 1e-12);
            o.stepper = stepper;
            const auto r = ssmdyn::simulate_sensitivities(sys, x0, S0, c.t_end, o);
            REQUIRE(r.status == Status::Completed);
            CHECK(r.simulation.status == Status::Completed);
            CHECK(r.simulation.t_final == c.t_end);
            CHECK(r.rescalings == 0);
            REQUIRE(r.S.rows() == 6);
            REQUIRE(r.S.cols() == 4);
            const Eigen::MatrixXd fd = finite_differences(sys, x0, S0, c.t_end);
            CAPTURE(r.S, fd);
            CHECK(test::max_rel_err(r.S, fd) < 1e-6);
            // x is what simulate computes at the same tolerance (the steps differ: the error
            // control covers S too).
            const auto plain = ssmdyn::simulate(sys, x0, c.t_end, o);
            CHECK(test::max_rel_err(r.simulation.x_final, plain.x_final) < 1e-8);
            CHECK(r.simulation.x_initial == x0);
            CHECK(r.simulation.dim == 2);
        }
    }
}

TEST_CASE("rk4 sensitivities are the exact derivative of the rk4 map") {
    // Differentiating an explicit Runge–Kutta step gives the same step applied to the
    // variational equation, so with a fixed step the two agree up to finite differences' error.
    std::mt19937 rng(103);
    const auto p = test::random_params(rng, 2, 3);
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 2, 4));
    const Eigen::MatrixXd S0 = test::random_tokens(rng, 8, 2);
    Options o = tolerances(1e-8, 1e-10);
    o.stepper = Stepper::Rk4;
    o.dt = 0.01;
    const auto r = ssmdyn::simulate_sensitivities(sys, x0, S0, 0.3, o);
    REQUIRE(r.status == Status::Completed);
    CHECK(r.simulation.steps == 30);
    CHECK(test::max_rel_err(r.S, finite_differences(sys, x0, S0, 0.3, 1e-5, o)) < 1e-8);
    // The default fixed step is (t_end − t_start)/1000, as for simulate.
    o.dt = 0;
    CHECK(ssmdyn::simulate_sensitivities(sys, x0, S0, 0.3, o).simulation.steps == ssmdyn::simulate(sys, x0, 0.3, o).steps);
}

TEST_CASE("1-D token 1: dx_1(T)/dx_1(0) = f(x_1(T)) / f(x_1(0)), the derivative of the implicit solution") {
    // Token 1 obeys x' = f(x) = mu x^3 softplus(s x + b) alone. Its solution satisfies
    // F(x(T)) - F(x(0)) = T with F' = 1/f, so dx(T)/dx(0) = F'(x(0)) / F'(x(T)) = f(x(T)) / f(x(0)).
    struct Case {
        ssmdyn::OneDimensional<double> system;
        double x1, x2, x3, t_end;
    };
    // Convergence, slow divergence (every s x_l(0) < 0), fast divergence before T* = 0.283,
    // convergence with s < 0.
    for (const Case c : {Case{{-0.8, 0.7, 1.0, 0.3}, 1.3, 0.4, -1.1, 20.0},
                         Case{{1.0, 1.0, 1.0, 0.0}, -1.0, -0.4, -1.1, 100.0},
                         Case{{1.0, 1.0, 1.0, 0.0}, 1.0, -0.4, -1.1, 0.25},
                         Case{{-2.0, -0.5, 0.5, 0.1}, -0.7, 0.4, -1.1, 3.0}}) {
        CAPTURE(c.system.mu, c.system.s, c.x1, c.t_end);
        const System sys(ssmdyn::S6Params<double>::one_dimensional(c.system));
        const State x0 = test::tokens({c.x1, c.x2, c.x3});
        const auto r = ssmdyn::simulate_sensitivities(sys, x0, Eigen::MatrixXd::Identity(3, 1), c.t_end,
                                                      tolerances(1e-10, 1e-12));
        REQUIRE(r.status == Status::Completed);
        const double xT = r.simulation.x_final(0);
        CHECK(test::rel_err(r.S(0, 0), token1_rhs(c.system, xT) / token1_rhs(c.system, c.x1)) < 1e-8);
        // Token 1 moves the later tokens (it is in their sums), and they do not move it.
        CHECK(r.S(1, 0) != 0);
        CHECK(r.S(2, 0) != 0);
    }

    // s = 0: Delta = softplus(b) = c is constant, x(T) = x0 / sqrt(1 - 2 mu c x0^2 T), so
    // dx(T)/dx(0) = (1 - 2 mu c x0^2 T)^(-3/2) in closed form.
    const double mu = 0.6, b = 0.4, x1 = 0.8, T = 1.2, c = ssmdyn::softplus(b);
    const System sys(ssmdyn::S6Params<double>::one_dimensional({mu, 0.0, 1.0, b}));
    const auto r = ssmdyn::simulate_sensitivities(sys, test::tokens({x1, -0.3}), Eigen::MatrixXd::Identity(2, 2), T,
                                                  tolerances(1e-10, 1e-12));
    REQUIRE(r.status == Status::Completed);
    CHECK(test::rel_err(r.S(0, 0), std::pow(1 - 2 * mu * c * x1 * x1 * T, -1.5)) < 1e-8);
    CHECK(r.S(0, 1) == 0.0);  // causality: token 2 never reaches token 1, exactly
}

TEST_CASE("a blow-up: status blow_up at simulate's time, S at the detection time") {
    const ssmdyn::OneDimensional<double> fast{1.0, 1.0, 1.0, 0.0};
    const System sys(ssmdyn::S6Params<double>::one_dimensional(fast));
    const State x0 = test::tokens({1.0, -0.5, -2.0});
    const Options o = tolerances(1e-12, 1e-14);
    const auto plain = ssmdyn::simulate(sys, x0, 10.0, o);
    REQUIRE(plain.status == Status::BlowUp);
    const auto r = ssmdyn::simulate_sensitivities(sys, x0, Eigen::MatrixXd::Identity(3, 3), 10.0, o);
    CAPTURE(r.simulation.message);
    REQUIRE(r.status == Status::BlowUp);
    REQUIRE(r.simulation.t_blowup);
    CHECK(*r.simulation.t_blowup == r.simulation.t_final);
    CHECK(test::rel_err(*r.simulation.t_blowup, *plain.t_blowup) < 1e-9);
    CHECK(test::rel_err(*r.simulation.t_blowup, test::token1_blowup_time(1.0, 1.0, 0.0, 1.0)) < 1e-6);
    CHECK(r.simulation.message.find("detection time") != std::string::npos);
    // S grew past the bound long before x did, and was rescaled rather than ending the run.
    CHECK(r.rescalings >= 1);
    CHECK(r.S.allFinite());
    CHECK(r.S.cwiseAbs().maxCoeff() > o.blowup_norm);
    // Even there, token 1's sensitivity is f(x_1(t)) / f(x_1(0)) along the computed trajectory.
    CHECK(test::rel_err(r.S(0, 0), token1_rhs(fast, r.simulation.x_final(0)) / token1_rhs(fast, 1.0)) < 1e-6);
    CHECK(r.S(0, 1) == 0.0);
    CHECK(r.S(1, 2) == 0.0);

    CHECK(r.simulation.times.empty());  // Record::None: nothing recorded, whatever the restarts need

    // At the default tolerances too (a regression: after a rescaling near the blow-up, the
    // restart's first-step guess |z|/|f(z)| was below the minimum step, and the run ended
    // as a step-size underflow before its first step).
    const auto plain_default = ssmdyn::simulate(sys, x0, 10.0);
    const auto r_default = ssmdyn::simulate_sensitivities(sys, x0, Eigen::MatrixXd::Identity(3, 3), 10.0);
    CAPTURE(r_default.simulation.message);
    REQUIRE(r_default.status == Status::BlowUp);
    CHECK(r_default.rescalings >= 1);
    CHECK(test::rel_err(*r_default.simulation.t_blowup, *plain_default.t_blowup) < 1e-7);

    // With a low bound on |x| the blow-up is detected where x crosses it, as simulate does.
    Options low = o;
    low.blowup_norm = 50;
    const auto plain_low = ssmdyn::simulate(sys, x0, 10.0, low);
    const auto r_low = ssmdyn::simulate_sensitivities(sys, x0, Eigen::MatrixXd::Identity(3, 3), 10.0, low);
    REQUIRE(r_low.status == Status::BlowUp);
    CHECK(r_low.simulation.x_final.cwiseAbs().maxCoeff() > 50);
    CHECK(std::abs(*r_low.simulation.t_blowup - *plain_low.t_blowup) < 1e-6);
}

TEST_CASE("sensitivities crossing the bound while x does not are rescaled, not a blow-up") {
    // Slow divergence: |x| stays below 100 up to t = 10, while S0 = 10 I grows past it.
    const System sys(ssmdyn::S6Params<double>::one_dimensional({1.0, 1.0, 1.0, 0.0}));
    const State x0 = test::tokens({-1.0, -0.5, -2.0});
    const Eigen::MatrixXd S0 = 10 * Eigen::MatrixXd::Identity(3, 3);
    Options free = tolerances(1e-12, 1e-14, Record::Steps);
    free.blowup_norm = 1e300;
    const auto reference = ssmdyn::simulate_sensitivities(sys, x0, S0, 10.0, free);
    REQUIRE(reference.status == Status::Completed);
    REQUIRE(reference.rescalings == 0);
    REQUIRE(reference.simulation.x_final.cwiseAbs().maxCoeff() < 100);
    REQUIRE(reference.S.cwiseAbs().maxCoeff() > 300);

    Options bounded = free;
    bounded.blowup_norm = 100;
    const auto r = ssmdyn::simulate_sensitivities(sys, x0, S0, 10.0, bounded);
    CAPTURE(r.simulation.message);
    REQUIRE(r.status == Status::Completed);
    CHECK(r.rescalings >= 1);
    CHECK(!r.simulation.t_blowup);
    CHECK(test::max_rel_err(r.S, reference.S) < 1e-8);
    CHECK(test::max_rel_err(r.simulation.x_final, reference.simulation.x_final) < 1e-10);
    // One trajectory of x, across the restarts: times strictly increasing, from 0 to t_end,
    // one state (of x alone) per accepted step plus the initial one.
    const auto& times = r.simulation.times;
    REQUIRE(times.size() == r.simulation.steps + 1);
    CHECK(times.front() == 0.0);
    CHECK(times.back() == 10.0);
    for (std::size_t k = 1; k < times.size(); ++k) CHECK(times[k] > times[k - 1]);
    for (const auto& s : r.simulation.states) CHECK(s.size() == 3);

    // Record::Times: every output time exactly once, across the restarts.
    Options at_times = bounded;
    at_times.record = Record::Times;
    at_times.output_times = {0.0, 1.0, 2.5, 5.0, 7.5, 10.0};
    const auto rt = ssmdyn::simulate_sensitivities(sys, x0, S0, 10.0, at_times);
    REQUIRE(rt.status == Status::Completed);
    CHECK(rt.rescalings >= 1);
    CHECK(rt.simulation.times == at_times.output_times);
    CHECK(test::max_rel_err(rt.S, reference.S) < 1e-8);

    // S0 above the bound from the start is scaled down before the first step.
    Options tiny = free;
    tiny.blowup_norm = 5;
    const auto r0 = ssmdyn::simulate_sensitivities(sys, x0, S0, 0.1, tiny);
    REQUIRE(r0.status == Status::Completed);
    CHECK(test::max_rel_err(r0.S, ssmdyn::simulate_sensitivities(sys, x0, S0, 0.1, free).S) < 1e-8);
}

TEST_CASE("simulate_sensitivities: statuses and invalid input") {
    const System sys(ssmdyn::S6Params<double>::one_dimensional({-1.0, 1.0, 1.0, 0.0}));
    const State x0 = test::tokens({1.0, -0.5});
    const Eigen::MatrixXd S0 = Eigen::MatrixXd::Identity(2, 2);

    // The step budget ends the run with its status; S is then at t_final.
    Options budget = tolerances(1e-10, 1e-12);
    budget.max_steps = 5;
    const auto r = ssmdyn::simulate_sensitivities(sys, x0, S0, 100.0, budget);
    CHECK(r.status == Status::MaxSteps);
    CHECK(r.simulation.steps == 5);
    CHECK(r.simulation.t_final < 100.0);
    CHECK(r.simulation.message.find("where the run stopped") != std::string::npos);
    CHECK(r.S.allFinite());

    // No directions: x alone, as simulate computes it.
    const auto none = ssmdyn::simulate_sensitivities(sys, x0, Eigen::MatrixXd(2, 0), 3.0, tolerances(1e-10, 1e-12));
    CHECK(none.S.cols() == 0);
    CHECK(none.simulation.x_final == ssmdyn::simulate(sys, x0, 3.0, tolerances(1e-10, 1e-12)).x_final);

    // The token matrix form of x0 works as the flat one does.
    const Eigen::RowVector2d row(1.0, -0.5);
    CHECK(ssmdyn::simulate_sensitivities(sys, row, S0, 1.0).S == ssmdyn::simulate_sensitivities(sys, x0, S0, 1.0).S);

    CHECK(test::message_of([&] { ssmdyn::simulate_sensitivities(sys, x0, Eigen::MatrixXd::Identity(3, 3), 1.0); })
              .rfind("S0 is 3x3", 0) == 0);
    Eigen::MatrixXd nan_S0 = S0;
    nan_S0(1, 1) = std::nan("");
    CHECK(test::message_of([&] { ssmdyn::simulate_sensitivities(sys, x0, nan_S0, 1.0); }).rfind("S0(1,1)", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::simulate_sensitivities(sys, Eigen::MatrixXd::Ones(2, 2), S0, 1.0); })
              .rfind("x0 is 2x2", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::simulate_sensitivities(sys, x0, S0, -1.0); }).find("t_end") !=
          std::string::npos);
    Options bad = tolerances(0, 0);
    CHECK(test::message_of([&] { ssmdyn::simulate_sensitivities(sys, x0, S0, 1.0, bad); }).find("rtol") !=
          std::string::npos);
}
