#include "support.hpp"

#include <ssmdyn/selective_scan.hpp>

TEST_CASE("the scan equals the O(L^2) double sum on random D, N, L") {
    std::mt19937 rng(12345);
    struct Size { Eigen::Index D, N, L; };
    for (Size s : {Size{1, 1, 1}, Size{1, 1, 9}, Size{1, 4, 7}, Size{3, 1, 5}, Size{2, 3, 1},
                   Size{5, 4, 33}, Size{8, 16, 20}, Size{16, 3, 64}}) {
        CAPTURE(s.D, s.N, s.L);
        const auto p = test::random_params(rng, s.D, s.N);
        const Eigen::MatrixXd X = test::random_tokens(rng, s.D, s.L);
        Eigen::MatrixXd Y(s.D, s.L);
        ssmdyn::selective_scan(p, X, Y);
        const Eigen::MatrixXd Y_ref = ssmdyn::selective_scan_reference(p, X);
        CHECK(test::max_rel_err(Y, Y_ref) < 1e-13);
    }
}

TEST_CASE("the scan gives the 1-D closed form for two tokens") {
    // dx_1 = mu x1^3 Δ1;  dx_2 = mu x2 (x1^2 Δ1 e^{-a Δ2} + x2^2 Δ2)
    const double mu = -0.7, s = 0.3, a = 1.4, b = 0.2, x1 = 1.1, x2 = -0.6;
    auto p = ssmdyn::S6Params<double>::one_dimensional(mu, s, a, b);
    Eigen::MatrixXd X(1, 2), Y(1, 2);
    X << x1, x2;
    ssmdyn::selective_scan(p, X, Y);
    const double d1 = std::log1p(std::exp(s * x1 + b)), d2 = std::log1p(std::exp(s * x2 + b));
    CHECK(test::rel_err(Y(0, 0), mu * x1 * x1 * x1 * d1) < 1e-15);
    CHECK(test::rel_err(Y(0, 1), mu * x2 * (x1 * x1 * d1 * std::exp(-a * d2) + x2 * x2 * d2)) < 1e-14);
}

TEST_CASE("the scan is causal: a token only sees the tokens before it") {
    std::mt19937 rng(3);
    const auto p = test::random_params(rng, 4, 5);
    Eigen::MatrixXd X = test::random_tokens(rng, 4, 10), Y(4, 10), Y2(4, 10);
    ssmdyn::selective_scan(p, X, Y);
    X.col(7).setRandom();
    ssmdyn::selective_scan(p, X, Y2);
    CHECK(Y.leftCols(7) == Y2.leftCols(7));
    CHECK((Y.rightCols(3) - Y2.rightCols(3)).norm() > 0);
}

TEST_CASE("the scan works for long double as well") {
    std::mt19937 rng(4);
    const auto pd = test::random_params(rng, 3, 2);
    ssmdyn::S6Params<long double> p{pd.S_B.cast<long double>(), pd.S_C.cast<long double>(),
                                    pd.S_Delta.cast<long double>(), pd.delta_bias.cast<long double>(),
                                    pd.A.cast<long double>()};
    const Eigen::MatrixXd Xd = test::random_tokens(rng, 3, 6);
    const ssmdyn::MatrixX<long double> X = Xd.cast<long double>();
    ssmdyn::MatrixX<long double> Y(3, 6);
    ssmdyn::selective_scan(p, X, Y);
    const auto Y_ref = ssmdyn::selective_scan_reference(p, X);
    CHECK(static_cast<double>((Y - Y_ref).cwiseAbs().maxCoeff() / Y_ref.cwiseAbs().maxCoeff()) < 1e-16);
}
