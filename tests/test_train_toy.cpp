// The train_toy example's network and optimiser (examples/train_toy/): the exact gradient
// of one sample's loss against central differences, for every variant, with and without
// the reordering, tied and untied, both read-outs; Adam's first step in closed form.

#include <train_toy/network.hpp>
#include <train_toy/train.hpp>

#include "support.hpp"

namespace {

using ssmdyn::toy::NetworkConfig;
using ssmdyn::toy::Tensors;
using ssmdyn::toy::Variant;

/// Every entry of every tensor as a list of (tensor index, entry) pointers into t.
std::vector<double*> entries(Tensors& t) {
    std::vector<double*> out;
    t.for_each([&](auto& m) {
        for (Eigen::Index i = 0; i < m.size(); ++i) out.push_back(m.data() + i);
    });
    return out;
}

}  // namespace

TEST_CASE("train_toy: one sample's gradient equals central differences of its loss") {
    std::mt19937 rng(5);
    const Eigen::MatrixXd u = test::random_tokens(rng, 3, 5);
    for (const Variant variant : {Variant::Free, Variant::Psd, Variant::Nsd, Variant::Mixed})
        for (const bool reorder : {false, true})
            for (const bool tied : {true, false})
                for (const bool mean : {false, true}) {
                    NetworkConfig c;
                    c.d_in = 3;
                    c.classes = 3;
                    c.D = 4;
                    c.N = 3;
                    c.layers = 2;
                    c.step = 0.7;
                    c.variant = variant;
                    c.reorder = reorder;
                    c.hard_reorder = false;  // the soft matrix in the forward pass: the loss is smooth
                    c.tied = tied;
                    c.mean_readout = mean;
                    CAPTURE(ssmdyn::toy::to_string(variant), reorder, tied, mean);
                    Tensors t = ssmdyn::toy::init_network(c, 3);
                    // Larger S_Δ and b_Δ than the initialisation, so that Δ varies and
                    // every path carries gradient.
                    for (auto& l : t.layers) {
                        l.S_Delta *= 10;
                        l.b.setConstant(0.3);
                    }
                    Tensors g = t.zeros_like();
                    const auto r = ssmdyn::toy::run_sample(c, t, u, 1, &g);
                    REQUIRE(r.finite);
                    CHECK(r.shares.size() == 5);
                    CHECK(r.shares.sum() == Approx(1.0).epsilon(1e-12));
                    std::vector<double*> x = entries(t), dx = entries(g);
                    REQUIRE(x.size() == dx.size());
                    double worst = 0, scale = 0;
                    for (std::size_t i = 0; i < x.size(); ++i) {
                        const double keep = *x[i], h = 1e-6 * std::max(1.0, std::abs(keep));
                        *x[i] = keep + h;
                        const double up = ssmdyn::toy::run_sample(c, t, u, 1).loss;
                        *x[i] = keep - h;
                        const double down = ssmdyn::toy::run_sample(c, t, u, 1).loss;
                        *x[i] = keep;
                        const double fd = (up - down) / (2 * h);
                        worst = std::max(worst, std::abs(fd - *dx[i]));
                        scale = std::max(scale, std::abs(fd));
                    }
                    // Central differences at h = 1e-6 are good to ~1e-9 here (loss ~1,
                    // third derivatives of order one).
                    CHECK(scale > 1e-3);
                    CHECK(worst < 1e-7 * std::max(1.0, scale));
                }
}

TEST_CASE("train_toy: the refinement's masked entries get no gradient, and the hard SoftSort is the increasing order") {
    NetworkConfig c;
    c.d_in = 2;
    c.D = 4;
    c.N = 2;
    c.variant = Variant::Psd;
    c.reorder = true;
    Tensors t = ssmdyn::toy::init_network(c, 9);
    Tensors g = t.zeros_like();
    std::mt19937 rng(8);
    const Eigen::MatrixXd u = test::random_tokens(rng, 2, 6);
    REQUIRE(ssmdyn::toy::run_sample(c, t, u, 0, &g).finite);
    // The forward pass's hard SoftSort of −scores is the permutation of increasing_order,
    // the order trained_regime and the refinement use.
    const ssmdyn::S6Params<double> p0 = ssmdyn::toy::s6_params(c, t.layers[0]);
    const Eigen::MatrixXd X0 = (t.E * u).colwise() + t.e;
    const Eigen::VectorXd scores = ssmdyn::importance_scores(p0, t.k, X0);
    CHECK(ssmdyn::soft_sort(Eigen::VectorXd(-scores), c.tau, 1.0, true) ==
          ssmdyn::permutation_matrix(ssmdyn::increasing_order(scores)));
    const Eigen::MatrixXd& gC = g.layers[0].C;
    for (Eigen::Index i = 0; i < gC.rows(); ++i)
        for (Eigen::Index j = 0; j <= i; ++j) CHECK(gC(i, j) == 0);  // U's unit diagonal and zeros
    CHECK(gC.norm() > 0);
    CHECK(g.layers[0].B.size() == 0);
    // μ of the parameterisation is positive semi-definite.
    const Eigen::MatrixXd mu = p0.S_C.transpose() * p0.S_B;
    CHECK(Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(0.5 * (mu + mu.transpose())).eigenvalues().minCoeff() > -1e-12);
    c.variant = Variant::Nsd;
    const ssmdyn::S6Params<double> q = ssmdyn::toy::s6_params(c, t.layers[0]);
    const Eigen::MatrixXd nu = q.S_C.transpose() * q.S_B;
    CHECK(Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(0.5 * (nu + nu.transpose())).eigenvalues().maxCoeff() < 1e-12);
}

TEST_CASE("train_toy: Adam's first step moves every entry by lr against the sign of its gradient") {
    NetworkConfig c;
    c.d_in = 2;
    c.D = 3;
    c.N = 2;
    Tensors t = ssmdyn::toy::init_network(c, 1);
    const Tensors before = t;
    Tensors g = t.zeros_like();
    std::mt19937 rng(2);
    std::normal_distribution<double> normal;
    g.for_each([&](auto& m) {
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = normal(rng);
    });
    const Tensors grad = g;
    ssmdyn::toy::Adam adam(t, 0.01);
    adam.step(t, g);
    // m̂ = g, v̂ = g²: the step is −lr·g/(|g| + ε).
    Tensors t0 = before, g0 = grad;
    std::vector<double*> a = entries(t), b = entries(t0), s = entries(g0);
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double expected = *b[i] - 0.01 * *s[i] / (std::abs(*s[i]) + 1e-8);
        worst = std::max(worst, std::abs(*a[i] - expected));
    }
    CHECK(worst < 1e-15);
    CHECK(a.size() > 20);
}

TEST_CASE("train_toy: training on a small long-range task lowers the loss, and is deterministic") {
    const ssmdyn::toy::Task task = ssmdyn::toy::long_range_task(3, 96, 32, 12);
    NetworkConfig c;
    c.d_in = task.d_in;
    c.classes = task.classes;
    c.D = 8;
    c.N = 4;
    c.layers = 2;
    ssmdyn::toy::TrainOptions o;
    o.epochs = 6;
    o.batch = 16;
    o.lr = 1e-2;
    const auto a = ssmdyn::toy::train(c, task, o, 4), b = ssmdyn::toy::train(c, task, o, 4);
    CHECK(a.final_loss < a.initial_loss);
    CHECK(a.final_loss == b.final_loss);
    CHECK(a.test_accuracy == b.test_accuracy);
    REQUIRE(a.curve.size() == 6);
    CHECK(a.curve.back().shares.sum() == Approx(1.0).epsilon(1e-9));
}
