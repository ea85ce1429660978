// The per-layer report against dense computations: the eigenvalues of sym(μ) by a
// d_inner × d_inner eigensolver, the rank of S_Δ by a dense SVD, the prompt figures by loops.

#include <cmath>
#include <vector>

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include <ssmdyn/theory/layer_report.hpp>

#include "support.hpp"

namespace {

ssmdyn::MambaConfig config(Eigen::Index d_inner, Eigen::Index N, Eigen::Index rank) {
    ssmdyn::MambaConfig c;
    c.n_layers = 2;
    c.d_model = 8;
    c.d_inner = d_inner;
    c.d_state = N;
    c.d_conv = 4;
    c.dt_rank = rank;
    c.vocab_size = 12;
    return c;
}

}  // namespace

TEST_CASE("layer report: sym(μ)'s spectrum and S_Δ's rank equal the dense computations") {
    // 2N < d_inner (the low-rank path) and 2N >= d_inner (the direct one).
    for (auto [d_inner, N, rank] : {std::tuple{40, 4, 3}, std::tuple{6, 5, 6}}) {
        CAPTURE(d_inner, N, rank);
        const auto model = ssmdyn::mamba_init(config(d_inner, N, rank), 17);
        for (std::size_t k = 0; k < model.layers.size(); ++k) {
            const auto& m = model.layers[k].mixer;
            const ssmdyn::LayerReport r = ssmdyn::mamba_layer_report(m, Eigen::Index(k));
            const Eigen::MatrixXd mu = m.s6.mu();
            const Eigen::VectorXd dense =
                Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>((mu + mu.transpose()) / 2).eigenvalues();
            REQUIRE(r.mu_sym_eigenvalues.size() == d_inner);
            const double scale = dense.cwiseAbs().maxCoeff();
            CHECK((r.mu_sym_eigenvalues - dense).cwiseAbs().maxCoeff() < 1e-12 * scale);
            CHECK(r.mu_sym_max == Approx(dense.maxCoeff()).epsilon(1e-12));
            CHECK(r.mu_sym_min == Approx(dense.minCoeff()).epsilon(1e-12));
            const double tol = 1e-10 * scale;
            CHECK(r.mu_sym_positive == (dense.array() > tol).count());
            CHECK(r.mu_sym_negative == (dense.array() < -tol).count());
            CHECK(r.mu_sym_positive + r.mu_sym_negative <= std::min<Eigen::Index>(2 * N, d_inner));
            // A random S_B, S_C gives an indefinite sym(μ) (rank 2N, trace-free part both signs).
            CHECK(r.scenario == ssmdyn::MuScenario::Indefinite);
            const Eigen::VectorXd sigma = Eigen::JacobiSVD<Eigen::MatrixXd>(m.s6.step_matrix()).singularValues();
            CHECK(r.s_delta_rank == (sigma.array() > 1e-10 * sigma(0)).count());
            CHECK(r.s_delta_rank == std::min<Eigen::Index>(rank, d_inner));
            CHECK(r.A_min == -double(N));
            CHECK(r.A_max == -1.0);
            CHECK(r.dt_bias_min == m.s6.delta_bias.minCoeff());
            CHECK(r.dt_bias_max == m.s6.delta_bias.maxCoeff());
            CHECK_FALSE(r.delta_min.has_value());
        }
    }
}

TEST_CASE("layer report: a positive semidefinite μ (S_C = S_B) is labelled so") {
    auto model = ssmdyn::mamba_init(config(20, 3, 2), 5);
    auto& s6 = model.layers[0].mixer.s6;
    s6.S_C = s6.S_B;
    const ssmdyn::LayerReport r = ssmdyn::mamba_layer_report(model.layers[0].mixer);
    CHECK(r.scenario == ssmdyn::MuScenario::PositiveSemidefinite);
    CHECK(r.mu_sym_positive == 3);
    CHECK(r.mu_sym_negative == 0);
}

TEST_CASE("layer report: with a prompt, Δ's range and each block's token-norm growth") {
    const auto model = ssmdyn::mamba_init(config(16, 4, 2), 9);
    ssmdyn::MambaTrace<double> trace;
    ssmdyn::mamba_forward(model, {1, 2, 3, 11, 0}, &trace);
    const std::vector<ssmdyn::LayerReport> reports = ssmdyn::mamba_layer_reports(model, &trace);
    REQUIRE(reports.size() == 2);
    for (std::size_t k = 0; k < 2; ++k) {
        const auto& r = reports[k];
        CHECK(r.layer == Eigen::Index(k));
        REQUIRE(r.delta_min.has_value());
        double lo = 1e300, hi = -1e300, growth = 0;
        for (Eigen::Index d = 0; d < 16; ++d)
            for (Eigen::Index l = 0; l < 5; ++l) {
                lo = std::min(lo, trace.mixers[k].delta(d, l));
                hi = std::max(hi, trace.mixers[k].delta(d, l));
            }
        for (Eigen::Index l = 0; l < 5; ++l)
            growth += trace.hidden[k + 1].col(l).norm() / trace.hidden[k].col(l).norm() / 5;
        CHECK(*r.delta_min == lo);
        CHECK(*r.delta_max == hi);
        CHECK(*r.norm_growth == Approx(growth).epsilon(1e-14));
        CHECK(lo > 0);
    }
}
