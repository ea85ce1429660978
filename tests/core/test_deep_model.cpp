#include "support.hpp"

#include <ssmdyn/core/deep_model.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/core/system.hpp>

using Params = ssmdyn::S6Params<double>;
using Options = ssmdyn::DeepModelOptions<double>;

namespace {
// A random layer with μ = −S_Cᵀ S_C (negative semi-definite): tokens stay bounded.
Params stable_params(std::mt19937& rng, Eigen::Index D, Eigen::Index N) {
    auto p = test::random_params(rng, D, N);
    p.S_B = -p.S_C;
    return p;
}
}  // namespace

TEST_CASE("deep model: h = 1 is X + S6(X) layer after layer") {
    std::mt19937 rng(51);
    const auto p = test::random_params(rng, 3, 2);
    const Eigen::MatrixXd X0 = test::random_tokens(rng, 3, 5);
    Options o;
    o.depth = 3;
    o.keep_layers = true;
    const auto r = ssmdyn::deep_forward(p, X0, o);
    REQUIRE(r.finite);
    REQUIRE(r.layers_completed == 3);
    REQUIRE(r.layers.size() == 4);
    CHECK(r.layers[0] == X0);
    Eigen::MatrixXd X = X0;
    for (int k = 1; k <= 3; ++k) {
        X = X + ssmdyn::selective_scan_reference(p, X);
        CHECK(test::max_rel_err(r.layers[k], X) < 1e-13);
    }
    CHECK(r.tokens == r.layers.back());
    o.depth = 0;
    CHECK(ssmdyn::deep_forward(p, X0, o).tokens == X0);
}

TEST_CASE("deep model: converges to the ODE solution at first order as depth grows") {
    std::mt19937 rng(52);
    const Eigen::Index D = 4, N = 4, L = 8;
    const auto p = stable_params(rng, D, N);
    const Eigen::MatrixXd X0 = test::random_tokens(rng, D, L);
    const double T = 1.0;
    ssmdyn::SimulateOptions<double> so;
    so.stepper = ssmdyn::Stepper::Fehlberg78;
    so.rtol = so.atol = 1e-13;
    so.record = ssmdyn::Record::None;
    const auto ode = ssmdyn::simulate(ssmdyn::SelectiveSystem<double>(p), ssmdyn::to_state(X0), T, so);
    REQUIRE(ode.status == ssmdyn::Status::Completed);
    const auto X_T = ssmdyn::token_matrix(ode.x_final, D);
    REQUIRE((X_T - X0).norm() > 0.1 * X0.norm());  // the tokens really move by T

    double previous = 0;
    for (Eigen::Index K : {64, 128, 256, 512, 1024}) {
        Options o;
        o.depth = K;
        o.step = T / double(K);
        const auto r = ssmdyn::deep_forward(p, X0, o);
        REQUIRE(r.finite);
        const double error = (r.tokens - X_T).cwiseAbs().maxCoeff();
        if (previous > 0 && K >= 256) {
            const double order = std::log2(previous / error);
            CAPTURE(K, error, order);
            CHECK(order > 0.9);
            CHECK(order < 1.1);
        }
        previous = error;
    }
}

TEST_CASE("deep model: an overflowing layer stops the run with finite tokens") {
    const auto p = Params::one_dimensional({1.0, 1.0, 1.0});
    Options o;
    o.depth = 50;
    const auto r = ssmdyn::deep_forward(p, Eigen::MatrixXd::Constant(1, 3, 2.0), o);
    CHECK_FALSE(r.finite);
    CHECK(r.layers_completed < 50);
    CHECK(r.tokens.allFinite());
    CHECK(r.tokens.maxCoeff() > 1e10);
}

TEST_CASE("deep model: invalid depth, step and token shapes are rejected") {
    const auto p = Params::one_dimensional({-1.0, 1.0, 1.0});
    const Eigen::MatrixXd X0 = Eigen::MatrixXd::Ones(1, 3);
    Options o;
    o.depth = -1;
    CHECK_THROWS_AS(ssmdyn::deep_forward(p, X0, o), std::invalid_argument);
    o.depth = 2;
    o.step = 0;
    CHECK_THROWS_AS(ssmdyn::deep_forward(p, X0, o), std::invalid_argument);
    o.step = 1;
    CHECK_THROWS_AS(ssmdyn::deep_forward(p, Eigen::MatrixXd::Ones(2, 3), o), std::invalid_argument);
    Eigen::MatrixXd bad = X0;
    bad(0, 1) = std::nan("");
    CHECK_THROWS_AS(ssmdyn::deep_forward(p, bad, o), std::invalid_argument);
}
