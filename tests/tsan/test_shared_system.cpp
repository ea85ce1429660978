// One SelectiveSystem shared by 4 threads at once: whole integrations, JVPs and VJPs on
// the same parameters, and the library's own threaded paths (sensitivities over
// directions, the phase diagram) on 4 threads. Every result must equal the serial one
// bit for bit. Run under ThreadSanitizer by scripts/tsan.sh (and by CI), where a data
// race fails the run even when the numbers happen to agree.

#include "support.hpp"

#include <random>
#include <thread>
#include <vector>

#include <ssmdyn/core/scan_derivatives.hpp>
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/sensitivity.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/theory/phase_diagram.hpp>

namespace {

using State = Eigen::VectorXd;
constexpr int threads = 4;

ssmdyn::SimulateOptions<double> quick() {
    ssmdyn::SimulateOptions<double> o;
    o.rtol = 1e-6;
    o.atol = 1e-9;
    o.record = ssmdyn::Record::Steps;
    return o;
}

}  // namespace

TEST_CASE("one SelectiveSystem shared by 4 threads: simulate, JVP and VJP give the serial results") {
    std::mt19937 rng(41);
    const Eigen::Index D = 3, N = 4;
    const ssmdyn::SelectiveSystem<double> sys(test::random_params(rng, D, N));
    const auto& params = sys.params();
    std::vector<Eigen::MatrixXd> X, dX, gY;
    for (int i = 0; i < threads; ++i) {  // a different L per thread: the scratch is per thread
        X.push_back(0.5 * test::random_tokens(rng, D, 5 + 3 * i));
        dX.push_back(test::random_tokens(rng, D, X.back().cols()));
        gY.push_back(test::random_tokens(rng, D, X.back().cols()));
    }
    struct Out {
        ssmdyn::SimulateResult<double> run;
        Eigen::MatrixXd jvp, vjp_x;
        ssmdyn::S6Gradients<double> grads;
    };
    auto work = [&](int i) {
        Out o;
        o.run = ssmdyn::simulate(sys, X[i], 2.0, quick());
        o.jvp.resize(D, X[i].cols());
        ssmdyn::selective_scan_jvp(params, X[i], dX[i], o.jvp);
        o.vjp_x.resize(D, X[i].cols());
        ssmdyn::selective_scan_vjp(params, X[i], gY[i], o.vjp_x, o.grads);
        return o;
    };
    std::vector<Out> serial, parallel(threads);
    for (int i = 0; i < threads; ++i) serial.push_back(work(i));
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back([&, i] { parallel[i] = work(i); });
    for (auto& t : pool) t.join();
    for (int i = 0; i < threads; ++i) {
        CAPTURE(i);
        CHECK(parallel[i].run.status == serial[i].run.status);
        CHECK(parallel[i].run.steps == serial[i].run.steps);
        CHECK(parallel[i].run.x_final == serial[i].run.x_final);
        CHECK(parallel[i].run.times == serial[i].run.times);
        CHECK(parallel[i].jvp == serial[i].jvp);
        CHECK(parallel[i].vjp_x == serial[i].vjp_x);
        CHECK(parallel[i].grads.S_B == serial[i].grads.S_B);
        CHECK(parallel[i].grads.S_Delta == serial[i].grads.S_Delta);
        CHECK(parallel[i].grads.A == serial[i].grads.A);
    }
}

TEST_CASE("sensitivities over 4 threads and a phase diagram on 4 threads equal their serial runs") {
    std::mt19937 rng(42);
    const ssmdyn::SelectiveSystem<double> sys(test::random_params(rng, 2, 3));
    const State x0 = ssmdyn::to_state(0.5 * test::random_tokens(rng, 2, 4));
    const Eigen::MatrixXd S0 = Eigen::MatrixXd::Identity(x0.size(), x0.size());
    const auto one = ssmdyn::simulate_sensitivities(sys, x0, S0, 1.0, quick(), 1);
    const auto four = ssmdyn::simulate_sensitivities(sys, x0, S0, 1.0, quick(), threads);
    CHECK(four.status == one.status);
    CHECK(four.simulation.x_final == one.simulation.x_final);
    CHECK(four.S == one.S);

    ssmdyn::PhaseGrid grid{{-1.0, 0.0, 1.0}, {-1.0, 0.5, 1.0}, {}};
    const State tokens = test::tokens({0.5, -0.3, 1.0});
    const auto serial = ssmdyn::phase_diagram(grid, tokens, 20.0, {}, 1);
    const auto parallel = ssmdyn::phase_diagram(grid, tokens, 20.0, {}, threads);
    REQUIRE(parallel.size() == serial.size());
    for (std::size_t k = 0; k < serial.size(); ++k) {
        CAPTURE(k);
        CHECK(parallel[k].observed == serial[k].observed);
        CHECK(parallel[k].t_blowup == serial[k].t_blowup);
    }
}

TEST_CASE("one right-hand side on 4 threads (channels and token chunks split) equals the serial one") {
    std::mt19937 rng(9);
    auto p = test::random_params(rng, 80, 8);
    p.S_Delta_up = test::random_tokens(rng, 80, 4);
    p.S_Delta_down = test::random_tokens(rng, 4, 80) / std::sqrt(80.0);
    p.S_Delta.resize(0, 0);
    ssmdyn::SelectiveSystem<double> serial(p), threaded(p);
    threaded.set_threads(threads);
    const State x = ssmdyn::to_state(test::random_tokens(rng, 80, 200));
    State a(x.size()), b(x.size());
    serial(x, a, 0.0);
    for (int k = 0; k < 3; ++k) {
        threaded(x, b, 0.0);
        CHECK((a.array() == b.array()).all());
    }
}
