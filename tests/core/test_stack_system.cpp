// The stack as one piecewise-constant ODE: its right-hand side is layer ⌊t⌋'s scan, the
// whole-interval integration equals layer-by-layer integration, and the discrete residual
// stack with n sub-steps per layer converges to it at first order.

#include <cmath>
#include <random>
#include <vector>

#include <ssmdyn/core/selective_scan.hpp>
#include <ssmdyn/core/stack_system.hpp>
#include <ssmdyn/integrate/simulate.hpp>

#include "support.hpp"

namespace {

ssmdyn::MambaModel<double> small_model() {
    ssmdyn::MambaConfig c;
    c.n_layers = 3;
    c.d_model = 4;
    c.d_inner = 6;
    c.d_state = 3;
    c.d_conv = 2;
    c.dt_rank = 2;
    c.vocab_size = 5;
    auto model = ssmdyn::mamba_init(c, 13);
    // Larger step sizes than mamba_init's (Δ ~ 1e-2), so that one unit of time moves the tokens.
    for (auto& b : model.layers) b.mixer.s6.delta_bias.setConstant(0.5);
    return model;
}

}  // namespace

TEST_CASE("stack system: layer ⌊t⌋ acts from k up to k+1, clamped at both ends") {
    const ssmdyn::StackSystem<double> stack(small_model());
    CHECK(stack.layers() == 3);
    CHECK(stack.dim() == 6);
    CHECK(stack.layer_at(-1.0) == 0);
    CHECK(stack.layer_at(0.0) == 0);
    CHECK(stack.layer_at(0.999) == 0);
    CHECK(stack.layer_at(1.0) == 1);
    CHECK(stack.layer_at(2.5) == 2);
    CHECK(stack.layer_at(7.0) == 2);
    CHECK(stack.layer_at(std::nan("")) == 0);
    std::mt19937 rng(1);
    const Eigen::MatrixXd X = test::random_tokens(rng, 6, 5);
    const Eigen::VectorXd x = Eigen::Map<const Eigen::VectorXd>(X.data(), X.size());
    const auto model = small_model();
    for (double t : {0.2, 1.5, 2.9}) {
        Eigen::VectorXd f(x.size());
        stack(x, f, t);
        const Eigen::MatrixXd expected =
            ssmdyn::selective_scan_reference(model.layers[stack.layer_at(t)].mixer.s6, X);  // the O(L²) sum
        CHECK((Eigen::Map<const Eigen::MatrixXd>(f.data(), 6, 5) - expected).cwiseAbs().maxCoeff() < 1e-13);
    }
}

TEST_CASE("stack system: one integration from 0 to K equals K layer-by-layer integrations") {
    const ssmdyn::StackSystem<double> stack(small_model());
    std::mt19937 rng(2);
    const Eigen::MatrixXd X = test::random_tokens(rng, 6, 4);
    ssmdyn::SimulateOptions<double> tight;
    tight.rtol = 1e-12;
    tight.atol = 1e-14;
    tight.record = ssmdyn::Record::None;
    const auto whole = ssmdyn::simulate(stack, X, 3.0, tight);
    REQUIRE(whole.status == ssmdyn::Status::Completed);
    Eigen::VectorXd u = Eigen::Map<const Eigen::VectorXd>(X.data(), X.size());
    for (std::size_t k = 0; k < 3; ++k) {
        const auto r = ssmdyn::simulate(stack.layer(k), u, 1.0, tight);
        REQUIRE(r.status == ssmdyn::Status::Completed);
        u = r.x_final;
    }
    CHECK((whole.x_final - u).cwiseAbs().maxCoeff() < 1e-8 * u.cwiseAbs().maxCoeff());
    CHECK((u - Eigen::Map<const Eigen::VectorXd>(X.data(), X.size())).norm() > 1e-2);  // the tokens moved
}

TEST_CASE("stack system: the residual stack with n sub-steps per layer converges at first order") {
    const ssmdyn::StackSystem<double> stack(small_model());
    std::mt19937 rng(3);
    const Eigen::MatrixXd X = test::random_tokens(rng, 6, 4);
    const Eigen::VectorXd x0 = Eigen::Map<const Eigen::VectorXd>(X.data(), X.size());
    ssmdyn::SimulateOptions<double> tight;
    tight.rtol = 1e-12;
    tight.atol = 1e-14;
    tight.record = ssmdyn::Record::None;
    const Eigen::VectorXd exact = ssmdyn::simulate(stack, X, 3.0, tight).x_final;
    auto discrete = [&](int n) {  // x ← x + (1/n) S6_k(x), n times per layer
        Eigen::VectorXd x = x0, f(x0.size());
        for (std::size_t k = 0; k < 3; ++k)
            for (int i = 0; i < n; ++i) {
                stack.layer(k)(x, f, 0.0);
                x += f / double(n);
            }
        return x;
    };
    const double e1 = (discrete(50) - exact).norm(), e2 = (discrete(100) - exact).norm();
    CAPTURE(e1, e2);
    CHECK(e1 / e2 == Approx(2.0).epsilon(0.05));
}

TEST_CASE("stack system: no layers, or layers of different widths, are refused") {
    CHECK(test::message_of([] { ssmdyn::StackSystem<double> s(std::vector<ssmdyn::S6Params<double>>{}); }) ==
          "StackSystem: no layers");
    auto model = small_model();
    std::vector<ssmdyn::S6Params<double>> layers = {model.layers[0].mixer.s6, model.layers[1].mixer.s6};
    layers[1].S_B.conservativeResize(3, 5);
    layers[1].S_C.conservativeResize(3, 5);
    CHECK(test::message_of([&] { ssmdyn::StackSystem<double> s(layers); }) ==
          "StackSystem: layer 1 has D = 5, layer 0 has 6");
    layers[1] = model.layers[1].mixer.s6;
    layers[1].A(0, 0) = 1;
    CHECK(test::message_of([&] { ssmdyn::StackSystem<double> s(layers); }).rfind("StackSystem: layer 1: ", 0) == 0);
}
