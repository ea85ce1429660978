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

TEST_CASE("deep_backward: exact gradients of a loss through K layers, against central differences") {
    std::mt19937 rng(77);
    for (bool gated : {false, true}) {
        CAPTURE(gated);
        const Eigen::Index D = 3, N = 2, L = 4;
        const auto p = test::random_params(rng, D, N);
        const Eigen::MatrixXd X0 = test::random_tokens(rng, D, L) / 2;
        const Eigen::MatrixXd W = test::random_tokens(rng, D, L);  // loss = <W, X^(K)>
        ssmdyn::DeepModelOptions<double> o;
        o.depth = 5;
        o.step = 0.3;
        if (gated) {
            o.layer.D_skip = Eigen::VectorXd::LinSpaced(D, 0.5, 1.0);
            o.layer.gate = test::random_tokens(rng, D, L);
        }
        const auto g = ssmdyn::deep_backward(p, X0, o, W);
        REQUIRE(g.forward.finite);
        auto loss = [&](const ssmdyn::S6Params<double>& q, const Eigen::MatrixXd& X, const ssmdyn::DeepModelOptions<double>& oo) {
            return (W.array() * ssmdyn::deep_forward(q, X, oo).tokens.array()).sum();
        };
        const double eps = 1e-6;
        // d loss / d X0, entry by entry
        Eigen::MatrixXd fd(D, L);
        for (Eigen::Index i = 0; i < X0.size(); ++i) {
            Eigen::MatrixXd plus = X0, minus = X0;
            plus(i) += eps;
            minus(i) -= eps;
            fd(i) = (loss(p, plus, o) - loss(p, minus, o)) / (2 * eps);
        }
        CHECK(test::max_rel_err(g.tokens, fd) < 1e-6);
        // d loss / d theta for every parameter matrix
        auto check_param = [&](Eigen::MatrixXd ssmdyn::S6Params<double>::*field, const Eigen::MatrixXd& analytic) {
            Eigen::MatrixXd numeric(analytic.rows(), analytic.cols());
            for (Eigen::Index i = 0; i < numeric.size(); ++i) {
                auto plus = p, minus = p;
                (plus.*field)(i) += eps;
                (minus.*field)(i) -= eps;
                numeric(i) = (loss(plus, X0, o) - loss(minus, X0, o)) / (2 * eps);
            }
            CHECK(test::max_rel_err(analytic, numeric) < 1e-6);
        };
        check_param(&ssmdyn::S6Params<double>::S_B, g.params.S_B);
        check_param(&ssmdyn::S6Params<double>::S_C, g.params.S_C);
        check_param(&ssmdyn::S6Params<double>::S_Delta, g.params.S_Delta);
        check_param(&ssmdyn::S6Params<double>::A, g.params.A);
        Eigen::VectorXd numeric_bias(D);
        for (Eigen::Index i = 0; i < D; ++i) {
            auto plus = p, minus = p;
            plus.delta_bias(i) += eps;
            minus.delta_bias(i) -= eps;
            numeric_bias(i) = (loss(plus, X0, o) - loss(minus, X0, o)) / (2 * eps);
        }
        CHECK(test::max_rel_err(g.params.delta_bias, numeric_bias) < 1e-6);
        if (gated) {
            Eigen::MatrixXd numeric_gate(D, L);
            for (Eigen::Index i = 0; i < numeric_gate.size(); ++i) {
                auto plus = o, minus = o;
                plus.layer.gate(i) += eps;
                minus.layer.gate(i) -= eps;
                numeric_gate(i) = (loss(p, X0, plus) - loss(p, X0, minus)) / (2 * eps);
            }
            CHECK(test::max_rel_err(g.params.gate, numeric_gate) < 1e-6);
        }
    }
}

TEST_CASE("deep_backward: bad sizes and overflowing layers are refused") {
    std::mt19937 rng(78);
    const auto p = test::random_params(rng, 2, 2);
    ssmdyn::DeepModelOptions<double> o;
    o.depth = 2;
    const Eigen::MatrixXd X0 = test::random_tokens(rng, 2, 3);
    CHECK(test::message_of([&] { (void)ssmdyn::deep_backward(p, X0, o, Eigen::MatrixXd::Ones(2, 4)); })
              .find("loss_gradient") != std::string::npos);
    const auto blow = ssmdyn::S6Params<double>::one_dimensional({1.0, 1.0, 1.0, 0.0});
    o.depth = 50;
    o.step = 5.0;
    CHECK(test::message_of([&] { (void)ssmdyn::deep_backward(blow, test::tokens({3.0, 2.0}), o, test::tokens({1.0, 1.0})); })
              .find("overflowed") != std::string::npos);
}
