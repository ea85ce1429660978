#include "support.hpp"

#include <Eigen/Eigenvalues>

#include <ssmdyn/refinements/parameterization.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/core/system.hpp>

using ssmdyn::MuSign;

namespace {
// Numbers of positive and negative eigenvalues of the symmetric part of μ, relative to its scale.
std::pair<int, int> inertia(const Eigen::MatrixXd& mu) {
    const Eigen::VectorXd e = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>((mu + mu.transpose()) / 2).eigenvalues();
    const double tol = 1e-10 * e.cwiseAbs().maxCoeff();
    return {int((e.array() > tol).count()), int((e.array() < -tol).count())};
}
}  // namespace

TEST_CASE("parameterization: U is the upper-triangular part with a unit diagonal") {
    Eigen::MatrixXd free(3, 4);
    free << 5, 2, 3, 4,  //
        6, 7, 8, 9,      //
        1, 1, 1, 1;
    Eigen::MatrixXd expected(3, 4);
    expected << 1, 2, 3, 4,  //
        0, 1, 8, 9,          //
        0, 0, 1, 1;
    CHECK(ssmdyn::unit_upper_triangular(free) == expected);
    Eigen::MatrixXd tall = Eigen::MatrixXd::Constant(4, 2, 7.0);
    Eigen::MatrixXd tall_expected(4, 2);
    tall_expected << 1, 7, 0, 1, 0, 0, 0, 0;
    CHECK(ssmdyn::unit_upper_triangular(tall) == tall_expected);
}

TEST_CASE("parameterization: mu = U' W U has the promised sign structure for N < D, N = D, N > D") {
    std::mt19937 rng(91);
    for (auto [N, D] : {std::pair<Eigen::Index, Eigen::Index>{2, 5}, {3, 6}, {4, 4}, {5, 5}, {6, 3}, {8, 4}}) {
        for (int trial = 0; trial < 20; ++trial) {
            CAPTURE(N, D, trial);
            const Eigen::MatrixXd U = ssmdyn::unit_upper_triangular(Eigen::MatrixXd(test::random_tokens(rng, N, D)));
            const Eigen::VectorXd w = 3 * test::random_tokens(rng, N, 1);
            const Eigen::Index rank = std::min(N, D);  // U has full rank: unit diagonal
            for (MuSign sign : {MuSign::PositiveSemidefinite, MuSign::NegativeSemidefinite, MuSign::Mixed}) {
                CAPTURE(ssmdyn::to_string(sign));
                const auto io = ssmdyn::input_output_matrices(U, w, 0.7, sign);
                CHECK(io.S_C == U);
                const Eigen::MatrixXd mu = io.S_C.transpose() * io.S_B;
                CHECK((mu - mu.transpose()).cwiseAbs().maxCoeff() <= 1e-12 * mu.cwiseAbs().maxCoeff());
                const auto [pos, neg] = inertia(mu);
                if (sign == MuSign::PositiveSemidefinite) {
                    CHECK(neg == 0);
                    CHECK(pos == rank);
                } else if (sign == MuSign::NegativeSemidefinite) {
                    CHECK(pos == 0);
                    CHECK(neg == rank);
                } else if (N <= D) {  // Sylvester's law of inertia: the signs of W
                    CHECK(neg == N / 2);
                    CHECK(pos == N - N / 2);
                }
            }
            // Every diagonal entry of W is at least θ: W = diag(softplus(w) + θ).
            const auto io = ssmdyn::input_output_matrices(U, w, 0.7);
            for (Eigen::Index n = 0; n < std::min(N, D); ++n) {  // U(n, n) = 1 on the diagonal
                const double W_nn = io.S_B(n, n) / U(n, n);
                CHECK(test::rel_err(W_nn, std::log1p(std::exp(w(n))) + 0.7) < 1e-14);
            }
        }
    }
}

TEST_CASE("parameterization: invalid inputs are rejected") {
    const Eigen::MatrixXd U = Eigen::MatrixXd::Identity(3, 3);
    CHECK_THROWS_AS(ssmdyn::input_output_matrices(U, Eigen::VectorXd(Eigen::VectorXd::Zero(2)), 0.7),
                    std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::input_output_matrices(U, Eigen::VectorXd(Eigen::VectorXd::Zero(3)), 0.0),
                    std::invalid_argument);
    Eigen::VectorXd w = Eigen::VectorXd::Zero(3);
    w(1) = std::nan("");
    CHECK(test::message_of([&] { ssmdyn::input_output_matrices(U, w, 0.7); }) == "w has a non-finite entry");
}

TEST_CASE("parameterization: with mu positive semi-definite token 1 never shrinks (1000 random layers)") {
    // d|x_1|²/dt = 2 (x_1' μ x_1) Σ_d Δ_1^d (x_1^d)²: the sign of μ's quadratic form decides.
    std::mt19937 rng(93);
    int grew = 0, shrank = 0;
    for (int i = 0; i < 1000; ++i) {
        const Eigen::Index D = 1 + i % 5, N = 1 + (i / 5) % 6, L = 1 + i % 4;
        const MuSign sign = i % 2 ? MuSign::PositiveSemidefinite : MuSign::NegativeSemidefinite;
        auto p = test::random_params(rng, D, N);
        const auto io = ssmdyn::input_output_matrices(
            ssmdyn::unit_upper_triangular(Eigen::MatrixXd(test::random_tokens(rng, N, D))),
            Eigen::VectorXd(test::random_tokens(rng, N, 1)), 0.7, sign);
        p.S_B = io.S_B;
        p.S_C = io.S_C;
        const Eigen::VectorXd x0 = ssmdyn::to_state(test::random_tokens(rng, D, L));
        ssmdyn::SimulateOptions<double> o;
        o.record = ssmdyn::Record::None;
        o.max_steps = 5000;
        const auto r = ssmdyn::simulate(ssmdyn::SelectiveSystem<double>(p), x0, 0.5, o);
        const double before = x0.head(D).norm(), after = r.x_final.head(D).norm();
        CAPTURE(i, D, N, L, ssmdyn::to_string(sign), before, after, ssmdyn::to_string(r.status));
        if (sign == MuSign::PositiveSemidefinite) {
            CHECK(after >= before * (1 - 1e-7));
            grew += after > before * (1 + 1e-7);
        } else {
            CHECK(after <= before * (1 + 1e-7));
            shrank += after < before * (1 - 1e-7);
        }
    }
    CHECK(grew > 400);  // and it really moves
    CHECK(shrank > 400);
}

TEST_CASE("parameterization: U and w may be any Eigen expression, w a row or a column") {
    std::mt19937 rng(5);
    const Eigen::MatrixXd free = test::random_tokens(rng, 3, 4);
    const Eigen::VectorXd w = test::random_tokens(rng, 3, 1);
    const auto reference = ssmdyn::input_output_matrices(ssmdyn::unit_upper_triangular(free), w, 0.7);
    const auto from_expressions =
        ssmdyn::input_output_matrices(ssmdyn::unit_upper_triangular(2.0 * free / 2.0), w.transpose(), 0.7);
    CHECK(from_expressions.S_B == reference.S_B);
    CHECK(from_expressions.S_C == reference.S_C);
    CHECK_THROWS_AS(ssmdyn::input_output_matrices(free, Eigen::MatrixXd::Ones(3, 2), 0.7), std::invalid_argument);
    for (auto sign : {ssmdyn::MuSign::PositiveSemidefinite, ssmdyn::MuSign::NegativeSemidefinite, ssmdyn::MuSign::Mixed})
        CHECK(ssmdyn::parse_mu_sign(ssmdyn::to_string(sign)) == sign);
    CHECK_THROWS_AS(ssmdyn::parse_mu_sign("positive"), std::invalid_argument);
}

using test::central_differences;
using test::fd_err;

TEST_CASE("parameterization: input_output_matrices_vjp equals central differences of sum(G_B.*S_B + G_C.*S_C)") {
    // ℓ is affine in U and Σ_n ±softplus(w_n)·c_n in w (|softplus'''| ≤ 0.1), so with h = 1e-5 the
    // truncation error h²/6·0.1·|c_n| is ~1e-11 and the rounding ε|ℓ|/h ~ 1e-10: 1e-8 leaves a
    // margin of 100, while a wrong sign or a missing factor is of order 1.
    std::mt19937 rng(301);
    for (auto [N, D] : {std::pair<Eigen::Index, Eigen::Index>{1, 1}, {3, 4}, {4, 4}, {5, 3}, {2, 6}})
        for (MuSign sign : {MuSign::PositiveSemidefinite, MuSign::NegativeSemidefinite, MuSign::Mixed}) {
            CAPTURE(N, D, ssmdyn::to_string(sign));
            const double theta = 0.7, h = 1e-5, tol = 1e-8;
            const Eigen::MatrixXd U = test::random_tokens(rng, N, D);  // any U: the VJP does not need its structure
            const Eigen::VectorXd w = 3 * test::random_tokens(rng, N, 1);
            const Eigen::MatrixXd G_B = test::random_tokens(rng, N, D), G_C = test::random_tokens(rng, N, D);
            auto loss = [&](const Eigen::MatrixXd& UU, const Eigen::VectorXd& ww) {
                const auto io = ssmdyn::input_output_matrices(UU, ww, theta, sign);
                return (G_B.array() * io.S_B.array()).sum() + (G_C.array() * io.S_C.array()).sum();
            };
            const auto got = ssmdyn::input_output_matrices_vjp(U, w, theta, sign, G_B, G_C);
            REQUIRE(got.U.rows() == N);
            REQUIRE(got.U.cols() == D);
            REQUIRE(got.w.size() == N);
            const auto of_U = [&](const Eigen::MatrixXd& m) { return loss(m, w); };
            const auto of_w = [&](const Eigen::MatrixXd& m) { return loss(U, m); };
            const Eigen::MatrixXd fd_U = central_differences(of_U, U, h), fd_w = central_differences(of_w, w, h);
            CAPTURE(got.w.transpose(), fd_w.transpose());
            CHECK(fd_err(got.U, fd_U) < tol);
            CHECK(fd_err(got.w, fd_w) < tol);
            CHECK(got.w.cwiseAbs().maxCoeff() > 1e-6);  // the comparison is not 0 = 0

            // Through U = unit_upper_triangular(F): the gradient for the free matrix F.
            const Eigen::MatrixXd F = test::random_tokens(rng, N, D);
            const Eigen::MatrixXd U_F = ssmdyn::unit_upper_triangular(F);
            const Eigen::MatrixXd got_F = ssmdyn::unit_upper_triangular_vjp(
                ssmdyn::input_output_matrices_vjp(U_F, w, theta, sign, G_B, G_C).U);
            const Eigen::MatrixXd fd_F = central_differences(
                [&](const Eigen::MatrixXd& m) { return loss(ssmdyn::unit_upper_triangular(m), w); }, F, h);
            CHECK(fd_err(got_F, fd_F) < tol);
        }
}

TEST_CASE("parameterization: unit_upper_triangular_vjp keeps the strictly upper part only") {
    std::mt19937 rng(302);
    for (auto [N, D] : {std::pair<Eigen::Index, Eigen::Index>{1, 1}, {3, 5}, {4, 4}, {5, 2}}) {
        CAPTURE(N, D);
        const Eigen::MatrixXd G = test::random_tokens(rng, N, D);
        const Eigen::MatrixXd got = ssmdyn::unit_upper_triangular_vjp(G);
        REQUIRE(got.rows() == N);
        REQUIRE(got.cols() == D);
        for (Eigen::Index j = 0; j < D; ++j)
            for (Eigen::Index i = 0; i < N; ++i) CHECK(got(i, j) == (j > i ? G(i, j) : 0.0));
        // ℓ(F) = sum(G .* U(F)) is affine in F: central differences are exact up to rounding.
        const Eigen::MatrixXd F = test::random_tokens(rng, N, D);
        const Eigen::MatrixXd fd = central_differences(
            [&](const Eigen::MatrixXd& m) { return (G.array() * ssmdyn::unit_upper_triangular(m).array()).sum(); }, F,
            1e-3);
        CHECK(fd_err(got, fd) < 1e-10);
    }
    CHECK(ssmdyn::unit_upper_triangular_vjp(2.0 * Eigen::MatrixXd::Ones(2, 3)) ==
          ssmdyn::unit_upper_triangular_vjp(Eigen::MatrixXd::Constant(2, 3, 2.0)));  // expressions
}

TEST_CASE("parameterization: input_output_matrices_vjp refuses gradients of the wrong shape and bad inputs") {
    const Eigen::MatrixXd U = Eigen::MatrixXd::Identity(3, 4);
    const Eigen::VectorXd w = Eigen::VectorXd::Zero(3);
    const Eigen::MatrixXd G = Eigen::MatrixXd::Ones(3, 4);
    CHECK(test::message_of([&] {
              ssmdyn::input_output_matrices_vjp(U, w, 0.7, MuSign::Mixed, Eigen::MatrixXd::Ones(2, 4), G);
          }) == "grad_S_B is 2x4, expected N x D = 3x4 (the shape of U)");
    CHECK(test::message_of([&] {
              ssmdyn::input_output_matrices_vjp(U, w, 0.7, MuSign::Mixed, G, Eigen::MatrixXd::Ones(4, 3));
          }) == "grad_S_C is 4x3, expected N x D = 3x4 (the shape of U)");
    CHECK_THROWS_AS(ssmdyn::input_output_matrices_vjp(U, Eigen::VectorXd(Eigen::VectorXd::Zero(2)), 0.7,
                                                      MuSign::PositiveSemidefinite, G, G),
                    std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::input_output_matrices_vjp(U, w, 0.0, MuSign::PositiveSemidefinite, G, G),
                    std::invalid_argument);
    Eigen::MatrixXd bad = U;
    bad(0, 2) = std::nan("");
    CHECK(test::message_of([&] {
              ssmdyn::input_output_matrices_vjp(bad, w, 0.7, MuSign::PositiveSemidefinite, G, G);
          }) == "U has a non-finite entry");
    // w as a row and the gradients as expressions give the same result.
    const auto reference = ssmdyn::input_output_matrices_vjp(U, w, 0.7, MuSign::Mixed, G, G);
    const auto from_expressions =
        ssmdyn::input_output_matrices_vjp(U, w.transpose(), 0.7, MuSign::Mixed, 2.0 * G / 2.0, G.array().matrix());
    CHECK(from_expressions.U == reference.U);
    CHECK(from_expressions.w == reference.w);
}
