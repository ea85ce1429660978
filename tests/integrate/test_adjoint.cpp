#include "support.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/adjoint.hpp>
#include <ssmdyn/integrate/simulate.hpp>

using ssmdyn::Status;
using ssmdyn::Stepper;
using System = ssmdyn::SelectiveSystem<double>;
using Params = ssmdyn::S6Params<double>;
using Gradients = ssmdyn::S6Gradients<double>;
using State = System::State;
using Options = ssmdyn::AdjointOptions<double>;
using test::tokens;

namespace {

const char* const field_names[] = {"S_B", "S_C", "S_Delta", "delta_bias", "A"};

/// The entries of parameter field f (in field_names' order), column-major.
Eigen::Map<Eigen::VectorXd> field(Params& p, int f) {
    switch (f) {
        case 0: return {p.S_B.data(), p.S_B.size()};
        case 1: return {p.S_C.data(), p.S_C.size()};
        case 2: return {p.S_Delta.data(), p.S_Delta.size()};
        case 3: return {p.delta_bias.data(), p.delta_bias.size()};
        default: return {p.A.data(), p.A.size()};
    }
}

/// The gradient of parameter field f, laid out as field() lays out the parameter.
Eigen::VectorXd field(const Gradients& g, int f) {
    switch (f) {
        case 0: return Eigen::Map<const Eigen::VectorXd>(g.S_B.data(), g.S_B.size());
        case 1: return Eigen::Map<const Eigen::VectorXd>(g.S_C.data(), g.S_C.size());
        case 2: return Eigen::Map<const Eigen::VectorXd>(g.S_Delta.data(), g.S_Delta.size());
        case 3: return g.delta_bias;
        default: return Eigen::Map<const Eigen::VectorXd>(g.A.data(), g.A.size());
    }
}

/// Fourth-order central difference of f at 0: (8(f(ε) − f(−ε)) − (f(2ε) − f(−2ε))) / 12ε.
/// Its truncation error is O(ε⁴), so ε can be large enough that the integration's own
/// tolerance-level noise, divided by ε, stays far below the accuracy checked.
template <typename F>
double central_difference(F f, double eps) {
    return (8 * (f(eps) - f(-eps)) - (f(2 * eps) - f(-2 * eps))) / (12 * eps);
}

/// A loss of the tokens computed by simulate(): the scalar g(result) given a completed run.
using Loss = std::function<double(const ssmdyn::SimulateResult<double>&)>;

/// The adjoint's gradients against finite differences of simulate() for every entry of X(0)
/// and of every parameter field: max |adjoint − FD| / max |FD| per field, at most `tol`.
void check_against_finite_differences(const Params& params, const State& x0, double T, const Options& options,
                                      const Loss& loss, const ssmdyn::AdjointResult<double>& adj, double tol,
                                      double eps = 1e-3) {
    REQUIRE(adj.forward.status == Status::Completed);
    auto run = [&](const Params& p, const State& x) {
        const System sys(p);
        const auto r = ssmdyn::simulate(sys, x, T, options);
        REQUIRE(r.status == Status::Completed);
        return loss(r);
    };
    Eigen::VectorXd fd(x0.size());
    for (Eigen::Index i = 0; i < x0.size(); ++i)
        fd(i) = central_difference(
            [&](double d) {
                State x = x0;
                x(i) += d;
                return run(params, x);
            },
            eps);
    {
        CAPTURE(adj.x0.transpose(), fd.transpose());
        CHECK(test::max_rel_err(adj.x0, fd) < tol);
    }
    for (int f = 0; f < 5; ++f) {
        Params p = params;
        const Eigen::Index n = field(p, f).size();
        Eigen::VectorXd fd_field(n);
        for (Eigen::Index i = 0; i < n; ++i)
            fd_field(i) = central_difference(
                [&](double d) {
                    Params q = params;
                    field(q, f)(i) += d;
                    return run(q, x0);
                },
                eps);
        const Eigen::VectorXd g = field(adj.params, f);
        CAPTURE(field_names[f], g.transpose(), fd_field.transpose());
        CHECK(test::max_rel_err(g, fd_field) < tol);
    }
}

/// A seeded random system that stays bounded: μ = −S_Cᵀ S_C is negative semi-definite.
Params bounded_params(std::mt19937& rng, Eigen::Index D, Eigen::Index N) {
    Params p = test::random_params(rng, D, N);
    p.S_B = -p.S_C;
    return p;
}

Options tight(Stepper stepper) {
    Options o;
    o.stepper = stepper;
    o.rtol = 1e-10;
    o.atol = 1e-12;
    if (stepper == Stepper::Rk4) o.dt = 1.0 / 256;
    return o;
}

// Token 1 of the 1-D system sees only itself: dx/dt = f(x) = μ x³ softplus(s x + b).
double token1_rate(double mu, double s, double b, double x) { return mu * x * x * x * ssmdyn::softplus(s * x + b); }

}  // namespace

TEST_CASE("adjoint: the tableaux reproduce odeint's steps to rounding") {
    std::mt19937 rng(11);
    const System sys(test::random_params(rng, 3, 2));
    const State x = ssmdyn::to_state(test::random_tokens(rng, 3, 4));
    State dxdt(x.size()), out(x.size()), dxdt_out(x.size());
    sys(x, dxdt, 0.0);
    const double h = 0.07;
    using Steppers = ssmdyn::odeint_steppers<double>;
    auto mine = [&](Stepper s) {
        const auto tab = ssmdyn::detail::butcher_tableau<double>(s);
        // Order conditions as a check on the transcription: Σ b = 1, Σ b c = 1/2 (c = row sums of a).
        double sum_b = 0, sum_bc = 0;
        for (int i = 0; i < tab.stages; ++i) {
            double c = 0;
            for (int j = 0; j < i; ++j) c += tab.coefficient(i, j);
            sum_b += tab.b[std::size_t(i)];
            sum_bc += tab.b[std::size_t(i)] * c;
        }
        CHECK(std::abs(sum_b - 1) < 1e-15);
        CHECK(std::abs(sum_bc - 0.5) < 1e-15);
        return ssmdyn::detail::runge_kutta_step(tab, sys, x, h);
    };
    // The increments agree to a few units of rounding (the sums may be fused differently).
    auto agree = [&](const State& a, const State& b) { return test::max_rel_err(State(a - x), State(b - x)); };
    SECTION("dopri5 (fifth-order solution, first same as last)") {
        Steppers::dopri5 st;
        st.do_step(sys, x, dxdt, 0.0, out, dxdt_out, h);
        CHECK(agree(mine(Stepper::Dopri5), out) < 1e-14);
        CHECK(ssmdyn::detail::butcher_tableau<double>(Stepper::Dopri5).stages == 6);
    }
    SECTION("cash_karp") {
        Steppers::cash_karp st;
        st.do_step(sys, x, dxdt, 0.0, out, h);
        CHECK(agree(mine(Stepper::CashKarp), out) < 1e-14);
    }
    SECTION("fehlberg78 (eighth-order solution; stage 11 only feeds the error estimate)") {
        Steppers::fehlberg78 st;
        st.do_step(sys, x, dxdt, 0.0, out, h);
        CHECK(agree(mine(Stepper::Fehlberg78), out) < 1e-14);
        const auto tab = ssmdyn::detail::butcher_tableau<double>(Stepper::Fehlberg78);
        CHECK(!tab.needed[10]);
    }
    SECTION("rk4") {
        Steppers::rk4 st;
        st.do_step(sys, x, dxdt, 0.0, out, h);
        CHECK(agree(mine(Stepper::Rk4), out) < 1e-14);
    }
}

TEST_CASE("adjoint: the forward run is simulate()'s, step for step") {
    std::mt19937 rng(5);
    const Params p = bounded_params(rng, 2, 3);
    const System sys(p);
    const Eigen::MatrixXd X0 = test::random_tokens(rng, 2, 3);
    const State G = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
    const Stepper stepper = GENERATE(Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78, Stepper::Rk4);
    CAPTURE(ssmdyn::to_string(stepper));
    Options o = tight(stepper);
    o.rtol = 1e-8;
    SECTION("Record::Steps: the checkpoints are the trajectory") {
        const auto sim = ssmdyn::simulate(sys, X0, 1.5, o);
        const auto adj = ssmdyn::adjoint_gradient(sys, X0, 1.5, G, o);  // D×L tokens
        REQUIRE(sim.status == Status::Completed);
        CHECK(adj.forward.status == sim.status);
        CHECK(adj.forward.x_final == sim.x_final);
        CHECK(adj.forward.steps == sim.steps);
        CHECK(adj.forward.rejected_steps == sim.rejected_steps);
        CHECK(adj.forward.rhs_evaluations == sim.rhs_evaluations);
        CHECK(adj.forward.times == sim.times);
        CHECK(adj.forward.states == sim.states);
        CHECK(adj.checkpoints == sim.steps);
        CHECK(adj.checkpoint_bytes == sim.steps * 6 * sizeof(double));
        CHECK(adj.t_gradient == 1.5);
    }
    SECTION("Record::None keeps no trajectory") {
        o.record = ssmdyn::Record::None;
        const auto sim = ssmdyn::simulate(sys, X0, 1.5, o);
        const auto adj = ssmdyn::adjoint_gradient(sys, ssmdyn::to_state(X0), 1.5, G, o);  // flat tokens
        CHECK(adj.forward.x_final == sim.x_final);
        CHECK(adj.forward.times.empty());
        CHECK(adj.forward.states.empty());
    }
}

TEST_CASE("adjoint: dg/dX(0) and every dg/dtheta against finite differences of simulate()") {
    struct Size {
        Eigen::Index D, N, L;
    };
    const Size size = GENERATE(Size{2, 2, 3}, Size{3, 2, 4});
    const Stepper stepper = GENERATE(Stepper::Dopri5, Stepper::CashKarp, Stepper::Fehlberg78, Stepper::Rk4);
    CAPTURE(size.D, size.N, size.L, ssmdyn::to_string(stepper));
    std::mt19937 rng(static_cast<unsigned>(100 + 10 * size.D + size.L));
    const Params p = bounded_params(rng, size.D, size.N);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, size.D, size.L));
    const Eigen::MatrixXd G = test::random_tokens(rng, size.D, size.L);  // g = <G, X(T)>
    const double T = 2.0;
    const Options o = tight(stepper);
    const auto adj = ssmdyn::adjoint_gradient(System(p), x0, T, G, o);
    CAPTURE(adj.message, adj.checkpoints);
    CHECK(adj.message.find("discrete adjoint") != std::string::npos);
    const Eigen::Map<const State> g(G.data(), G.size());
    check_against_finite_differences(
        p, x0, T, o, [&](const ssmdyn::SimulateResult<double>& r) { return g.dot(r.x_final); }, adj, 1e-8);
}

TEST_CASE("adjoint: a sum over output times, with gradients given or computed from the states") {
    std::mt19937 rng(77);
    const Params p = bounded_params(rng, 2, 2);
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
    const double T = 2.0;
    const std::vector<double> times = {0.0, 0.4, 1.1, 2.0};  // the start and t_end included
    const Stepper stepper = GENERATE(Stepper::Dopri5, Stepper::CashKarp);
    CAPTURE(ssmdyn::to_string(stepper));
    const Options o = tight(stepper);
    Options fd_options = o;
    fd_options.record = ssmdyn::Record::Times;
    fd_options.output_times = times;

    SECTION("linear terms: g = <G, X(T)> + sum_k <G_k, X(t_k)>") {
        std::vector<Eigen::MatrixXd> Gk;
        for (std::size_t k = 0; k < times.size(); ++k) Gk.push_back(test::random_tokens(rng, 2, 3));
        const State G = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
        const auto adj = ssmdyn::adjoint_gradient(sys, x0, T, G, o, times, Gk);
        CAPTURE(adj.message);
        CHECK(adj.output_times_skipped == 0);
        check_against_finite_differences(
            p, x0, T, fd_options,
            [&](const ssmdyn::SimulateResult<double>& r) {
                REQUIRE(r.times == times);
                double sum = G.dot(r.x_final);
                for (std::size_t k = 0; k < times.size(); ++k)
                    sum += ssmdyn::to_state(Gk[k]).dot(r.states[k]);
                return sum;
            },
            adj, 1e-8);
    }
    SECTION("quadratic terms through callables: g = |X(T)|^2/2 + sum_k w_k |X(t_k)|^2/2") {
        const std::vector<double> w = {0.3, -1.0, 0.5, 2.0};
        const auto adj = ssmdyn::adjoint_gradient(
            sys, x0, T, [](const State& x) { return x; }, o, times,
            [&](std::size_t k, const State& x) -> State { return w[k] * x; });
        check_against_finite_differences(
            p, x0, T, fd_options,
            [&](const ssmdyn::SimulateResult<double>& r) {
                double sum = 0.5 * r.x_final.squaredNorm();
                for (std::size_t k = 0; k < times.size(); ++k) sum += 0.5 * w[k] * r.states[k].squaredNorm();
                return sum;
            },
            adj, 1e-8);
        for (double t : times)  // Record::Steps asked: the steps, which land on the output times
            CHECK(std::find(adj.forward.times.begin(), adj.forward.times.end(), t) != adj.forward.times.end());
    }
    SECTION("output terms alone, with a zero loss gradient; the forward run records the times") {
        Options times_options = o;
        times_options.record = ssmdyn::Record::Times;
        std::vector<State> Gk(times.size(), State::Zero(6));
        Gk[1] = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
        const auto adj = ssmdyn::adjoint_gradient(sys, x0, T, State::Zero(6), times_options, times, Gk);
        CHECK(adj.forward.times == times);
        // Only t = 0.4 carries weight: the same as differentiating a run to T = 0.4.
        const auto direct = ssmdyn::adjoint_gradient(sys, x0, 0.4, Gk[1], o);
        CHECK(test::max_rel_err(adj.x0, direct.x0) < 1e-8);
        CHECK(test::max_rel_err(adj.params.S_Delta, direct.params.S_Delta) < 1e-8);
    }
}

TEST_CASE("adjoint: token 1 of the 1-D system against its implicit solution") {
    // t = ∫_{x0}^{x(t)} du / f(u), f(u) = μ u³ φ(s u + b), so at fixed T
    //   ∂x(T)/∂x(0) = f(x(T)) / f(x(0)),      ∂x(T)/∂μ = f(x(T)) T / μ,
    //   ∂x(T)/∂s = f(x(T)) ∫ u φ'(s u + b) / (μ u³ φ²) du,  ∂x(T)/∂b the same without the u.
    struct Case {
        double mu, s, b, T;
        State x0;
    };
    const Case c = GENERATE(Case{-0.8, 0.7, 0.3, 4.0, tokens({1.3, 0.5, -2.0})},  // convergence
                            Case{1.0, 0.5, 0.0, 0.3, tokens({1.0, -0.5, 0.25})});  // before a blow-up
    CAPTURE(c.mu, c.s, c.b);
    const System sys(Params::one_dimensional({c.mu, c.s, 1.0, c.b}));
    State G = State::Zero(3);
    G(0) = 1.0;  // g = x_1(T)
    const auto adj = ssmdyn::adjoint_gradient(sys, c.x0, c.T, G, tight(Stepper::Dopri5));
    REQUIRE(adj.forward.status == Status::Completed);
    const double x = c.x0(0), xT = adj.forward.x_final(0), fT = token1_rate(c.mu, c.s, c.b, xT);
    CHECK(test::rel_err(adj.x0(0), fT / token1_rate(c.mu, c.s, c.b, x)) < 1e-8);
    CHECK(adj.x0(1) == 0.0);  // causality: x_1 sees no later token
    CHECK(adj.x0(2) == 0.0);
    // μ = S_C S_B with S_C = 1, S_B = μ.
    CHECK(test::rel_err(adj.params.S_B(0, 0), fT * c.T / c.mu) < 1e-8);
    CHECK(test::rel_err(adj.params.S_C(0, 0), fT * c.T) < 1e-8);
    auto integral = [&](bool with_u) {
        auto f = [&](double u) {
            const double z = c.s * u + c.b, phi = ssmdyn::softplus(z);
            return (with_u ? u : 1.0) * ssmdyn::Softplus{}.derivative(z) / (c.mu * u * u * u * phi * phi);
        };
        return boost::math::quadrature::gauss_kronrod<double, 61>::integrate(f, x, xT, 15, 1e-14);
    };
    CHECK(test::rel_err(adj.params.S_Delta(0, 0), fT * integral(true)) < 1e-8);
    CHECK(test::rel_err(adj.params.delta_bias(0), fT * integral(false)) < 1e-8);
    CHECK(adj.params.A(0, 0) == 0.0);  // token 1 has nothing to decay
}

TEST_CASE("adjoint: a blow-up reports blow_up and the finite gradient at the detection time") {
    const double mu = 1.0, s = 0.5;
    const System sys(Params::one_dimensional({mu, s, 1.0, 0.0}));
    const State x0 = tokens({1.0, -0.5, 0.25});
    const double t_star = test::token1_blowup_time(mu, s, 0.0, 1.0);
    Options o = tight(Stepper::Dopri5);
    o.blowup_norm = 1e4;
    const State G = tokens({1.0, 0.0, 0.0});  // g = x_1 where blow-up was detected
    const auto adj = ssmdyn::adjoint_gradient(sys, x0, 2 * t_star, G, o);
    CAPTURE(adj.message);
    REQUIRE(adj.forward.status == Status::BlowUp);
    REQUIRE(adj.forward.t_blowup.has_value());
    CHECK(adj.t_gradient == *adj.forward.t_blowup);
    CHECK(test::rel_err(adj.t_gradient, t_star) < 1e-6);  // past |x| = 1e4 little time remains
    CHECK(adj.message.find("blow_up") != std::string::npos);
    CHECK(adj.message.find("detected") != std::string::npos);
    CHECK(adj.x0.allFinite());
    CHECK(adj.params.S_B.allFinite());
    CHECK(adj.params.S_Delta.allFinite());
    CHECK(adj.params.A.allFinite());
    // ∂x_1(t_b)/∂x_1(0) = f(x_1(t_b)) / f(x_1(0)) at the detection time t_b.
    const double xb = adj.forward.x_final(0);
    CHECK(std::abs(xb) > 1e4 / 2);
    CHECK(test::rel_err(adj.x0(0), token1_rate(mu, s, 0.0, xb) / token1_rate(mu, s, 0.0, 1.0)) < 1e-7);

    // An output term past the end has no state: it is left out, and counted.
    const auto with_terms = ssmdyn::adjoint_gradient(sys, x0, 2 * t_star, G, o, {0.5 * t_star, 1.5 * t_star},
                                                     std::vector<State>{tokens({0.0, 1.0, 0.0}), G});
    CHECK(with_terms.forward.status == Status::BlowUp);
    CHECK(with_terms.output_times_skipped == 1);
    CHECK(with_terms.message.find("left out") != std::string::npos);
    CHECK(with_terms.x0.allFinite());
}

TEST_CASE("adjoint: no step, and a checkpoint budget") {
    std::mt19937 rng(3);
    const Params p = bounded_params(rng, 2, 2);
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
    const State G = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
    SECTION("t_end = t_start: the gradient is G, the parameters' are zero") {
        const auto adj = ssmdyn::adjoint_gradient(sys, x0, 0.0, G);
        CHECK(adj.forward.status == Status::Completed);
        CHECK(adj.x0 == G);
        CHECK(adj.params.S_B.isZero(0));
        CHECK(adj.params.A.isZero(0));
        CHECK(adj.params.delta_bias.size() == 2);
    }
    SECTION("max_checkpoint_bytes caps the steps, and the message says so") {
        Options o = tight(Stepper::Dopri5);
        o.max_checkpoint_bytes = 5 * 6 * sizeof(double) + 7;
        const auto adj = ssmdyn::adjoint_gradient(sys, x0, 2.0, G, o);
        CHECK(adj.forward.status == Status::MaxSteps);
        CHECK(adj.checkpoints == 5);
        CHECK(adj.t_gradient == adj.forward.t_final);
        CHECK(adj.message.find("max_checkpoint_bytes") != std::string::npos);
        CHECK(adj.x0.allFinite());
    }
}

TEST_CASE("adjoint: bad sizes and unusable options throw std::invalid_argument naming them") {
    std::mt19937 rng(9);
    const System sys(bounded_params(rng, 2, 2));
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 2, 3));
    const State G = State::Ones(6);
    auto names = [](auto f, const std::string& what) {
        const std::string m = test::message_of(f);
        CAPTURE(m);
        CHECK(m.find(what) != std::string::npos);
    };
    names([&] { ssmdyn::adjoint_gradient(sys, tokens({1, 2, 3, 4, 5}), 1.0, tokens({1, 2, 3, 4, 5})); }, "x0");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, State::Ones(4)); }, "loss_gradient");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, Eigen::MatrixXd::Ones(3, 2)); }, "loss_gradient");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, [](const State&) { return State::Ones(2); }); },
          "loss_gradient");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, {}, {0.5}, std::vector<State>{}); }, "output_gradients");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, {}, {0.5}, std::vector<State>{State::Ones(3)}); },
          "output_gradients[0]");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, {}, {0.5, 0.2}, std::vector<State>(2, G)); },
          "output_times");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, {}, {1.5}, std::vector<State>(1, G)); }, "output_times");
    Options o;
    o.record = ssmdyn::Record::Times;
    o.output_times = {0.25};
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, o, {0.5}, std::vector<State>(1, G)); }, "output_times");
    Options bs;
    bs.stepper = Stepper::BulirschStoer;
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, bs); }, "bulirsch_stoer");
    Options small;
    small.max_checkpoint_bytes = 8;
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, small); }, "max_checkpoint_bytes");
    Options bad;
    bad.rtol = -1;
    names([&] { ssmdyn::adjoint_gradient(sys, x0, 1.0, G, bad); }, "rtol");
    names([&] { ssmdyn::adjoint_gradient(sys, x0, -1.0, G); }, "t_end");
    // A SimulateOptions converts to AdjointOptions.
    const ssmdyn::SimulateOptions<double> sim;
    CHECK(ssmdyn::adjoint_gradient(sys, x0, 0.5, G, sim).forward.status == Status::Completed);
}
