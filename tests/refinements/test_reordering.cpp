#include "support.hpp"

#include <algorithm>
#include <numeric>
#include <vector>

#include <ssmdyn/refinements/reordering.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/core/system.hpp>

TEST_CASE("reordering: scores are k'(S_Delta x_l + b_Delta), one per token") {
    std::mt19937 rng(101);
    const auto p = test::random_params(rng, 3, 2);
    const Eigen::MatrixXd X = test::random_tokens(rng, 3, 5);
    const Eigen::VectorXd k = test::random_tokens(rng, 3, 1);
    const Eigen::VectorXd s = ssmdyn::importance_scores(p, k, X);
    REQUIRE(s.size() == 5);
    for (Eigen::Index l = 0; l < 5; ++l) {
        double by_hand = 0;
        for (int d = 0; d < 3; ++d) by_hand += k(d) * (p.S_Delta.row(d).dot(X.col(l)) + p.delta_bias(d));
        CHECK(test::rel_err(s(l), by_hand) < 1e-14);
    }
    CHECK_THROWS_AS(ssmdyn::importance_scores(p, Eigen::VectorXd(Eigen::VectorXd::Ones(2)), X), std::invalid_argument);
}

TEST_CASE("reordering: the increasing order is stable, its inverse undoes it") {
    Eigen::VectorXd s(5);
    s << 3.0, 1.0, 2.0, 1.0, -4.0;
    const ssmdyn::TokenOrder order = ssmdyn::increasing_order(s);
    CHECK(order == ssmdyn::TokenOrder{4, 1, 3, 2, 0});  // the two 1.0s keep their order
    const ssmdyn::TokenOrder inv = ssmdyn::inverse(order);
    for (std::size_t i = 0; i < order.size(); ++i) CHECK(inv[std::size_t(order[i])] == Eigen::Index(i));
    CHECK(ssmdyn::inverse(ssmdyn::TokenOrder{2, 0, 1}) == ssmdyn::TokenOrder{1, 2, 0});

    Eigen::MatrixXd X(2, 5);
    X << 10, 11, 12, 13, 14,  //
        20, 21, 22, 23, 24;
    const Eigen::MatrixXd R = ssmdyn::reorder(X, order);
    Eigen::MatrixXd expected(2, 5);
    expected << 14, 11, 13, 12, 10,  //
        24, 21, 23, 22, 20;
    CHECK(R == expected);
    CHECK(ssmdyn::reorder(R, inv) == X);
    CHECK(X * ssmdyn::permutation_matrix(order).transpose() == R);
    CHECK_THROWS_AS(ssmdyn::reorder(X, ssmdyn::TokenOrder{0, 1, 1, 2, 3}), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::reorder(X, ssmdyn::TokenOrder{0, 1}), std::invalid_argument);
}

TEST_CASE("reordering: SoftSort rows sum to 1 and tend to the exact permutation as tau -> 0") {
    Eigen::VectorXd s(4);
    s << 0.3, -1.2, 2.0, 0.9;
    // Decreasing order of s: 2.0 (index 2), 0.9 (3), 0.3 (0), −1.2 (1).
    const Eigen::MatrixXd exact = ssmdyn::permutation_matrix(ssmdyn::TokenOrder{2, 3, 0, 1});
    double previous = 2;
    for (double tau : {1.0, 0.3, 0.1, 0.03, 0.01}) {
        const Eigen::MatrixXd P = ssmdyn::soft_sort(s, tau);
        CHECK((P.rowwise().sum().array() - 1).abs().maxCoeff() < 1e-14);
        CHECK(P.minCoeff() >= 0);
        const double gap = (P - exact).cwiseAbs().maxCoeff();
        CHECK(gap < previous);
        previous = gap;
    }
    CHECK(previous < 1e-20);
    CHECK(ssmdyn::soft_sort(s, 10.0, 2.0, true) == exact);  // hard form: argmax per row
    // Sorting −s gives the refinement's increasing order.
    CHECK(ssmdyn::soft_sort(Eigen::VectorXd(-s), 1e-3, 1.0, true) ==
          ssmdyn::permutation_matrix(ssmdyn::increasing_order(s)));
    // The hand-computable 2-token case: P̂_00 = 1 / (1 + e^{−|s0 − s1| / τ}).
    Eigen::VectorXd two(2);
    two << 1.0, 0.0;
    CHECK(test::rel_err(ssmdyn::soft_sort(two, 0.5)(0, 0), 1 / (1 + std::exp(-2.0))) < 1e-15);
    CHECK_THROWS_AS(ssmdyn::soft_sort(s, 0.0), std::invalid_argument);
}

TEST_CASE("reordering: the hard permutation reproduces simulating the reordered tokens directly") {
    std::mt19937 rng(102);
    auto p = test::random_params(rng, 3, 2);
    p.S_B = -0.5 * p.S_C;  // μ negative semi-definite: the run reaches t = 1
    const ssmdyn::SelectiveSystem<double> system(p);
    const Eigen::MatrixXd X0 = test::random_tokens(rng, 3, 6);
    const Eigen::VectorXd k = test::random_tokens(rng, 3, 1);
    const Eigen::VectorXd scores = ssmdyn::importance_scores(p, k, X0);
    const ssmdyn::TokenOrder order = ssmdyn::increasing_order(scores);

    ssmdyn::SimulateOptions<double> o;
    o.record = ssmdyn::Record::Times;
    o.output_times = {0.25, 0.5, 1.0};
    const auto direct = ssmdyn::simulate(system, ssmdyn::to_state(ssmdyn::reorder(X0, order)), 1.0, o);
    const Eigen::MatrixXd P_hard = ssmdyn::soft_sort(Eigen::VectorXd(-scores), 0.1, 1.0, true);
    const auto through_P = ssmdyn::simulate(system, ssmdyn::to_state(X0 * P_hard.transpose()), 1.0, o);
    REQUIRE(direct.status == ssmdyn::Status::Completed);
    REQUIRE(through_P.status == ssmdyn::Status::Completed);
    REQUIRE(direct.states.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(direct.states[i] == through_P.states[i]);
    // A soft permutation at small τ is close, and the order changes the dynamics.
    const Eigen::MatrixXd P_soft = ssmdyn::soft_sort(Eigen::VectorXd(-scores), 1e-3);
    const auto soft = ssmdyn::simulate(system, ssmdyn::to_state(X0 * P_soft.transpose()), 1.0, o);
    CHECK(test::max_rel_err(soft.x_final, direct.x_final) < 1e-6);
    const auto unordered = ssmdyn::simulate(system, ssmdyn::to_state(X0), 1.0, o);
    CHECK(test::max_rel_err(ssmdyn::to_state(ssmdyn::reorder(ssmdyn::token_matrix(unordered.x_final, 3), order)),
                            direct.x_final) > 1e-3);
}

TEST_CASE("reordering: tokens as the flat state or the D x L matrix, scores and orders from expressions") {
    std::mt19937 rng(11);
    const auto p = test::random_params(rng, 3, 2);
    const Eigen::MatrixXd X = test::random_tokens(rng, 3, 5);
    const ssmdyn::StateVector<double> flat = ssmdyn::to_state(X);
    const Eigen::VectorXd k = Eigen::VectorXd::LinSpaced(3, 1.0, 2.0);
    const Eigen::VectorXd scores = ssmdyn::importance_scores(p, k, X);
    CHECK(ssmdyn::importance_scores(p, k, flat) == scores);
    CHECK(ssmdyn::importance_scores(p, k.transpose(), X) == scores);  // k as a row
    const auto order = ssmdyn::increasing_order(-scores);              // an expression
    const Eigen::MatrixXd matrix_result = ssmdyn::reorder(X, order);
    const ssmdyn::StateVector<double> flat_result = ssmdyn::reorder(flat, order);  // the same form back
    CHECK(ssmdyn::to_state(matrix_result) == flat_result);
    for (std::size_t i = 0; i < order.size(); ++i) CHECK(matrix_result.col(Eigen::Index(i)) == X.col(order[i]));
    CHECK_THROWS_AS(ssmdyn::importance_scores(p, Eigen::VectorXd::Ones(2), X), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::importance_scores(p, k, Eigen::MatrixXd::Ones(2, 5)), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::reorder(flat, ssmdyn::TokenOrder{0, 1, 2, 3}), std::invalid_argument);  // 15 % 4 != 0
}

using test::central_differences;
using test::fd_err;

namespace {
// L scores in random order, at least 0.2 apart: away from the ties where |s_j − s↓_i|^p
// is not differentiable, so that central differences of step 1e-6 see a smooth function.
Eigen::VectorXd spread_scores(std::mt19937& rng, Eigen::Index L) {
    std::uniform_real_distribution<double> jitter(0.0, 0.1), offset(-1.0, 1.0);
    std::vector<double> v(static_cast<std::size_t>(L));
    for (Eigen::Index i = 0; i < L; ++i) v[std::size_t(i)] = 0.3 * double(i) + jitter(rng);
    std::shuffle(v.begin(), v.end(), rng);
    const double shift = offset(rng);
    Eigen::VectorXd s(L);
    for (Eigen::Index i = 0; i < L; ++i) s(i) = v[std::size_t(i)] + shift;
    return s;
}
}  // namespace

TEST_CASE("reordering: soft_sort_vjp equals central differences of sum(G .* P) (p = 0.5, 1, 2)") {
    // ℓ is smooth around scores 0.2 apart (|d|^p has its kink only at d = 0), so with h = 1e-6
    // the truncation error h²·|ℓ'''|/6 is ~1e-12/τ³ ≲ 1e-10 at τ ≥ 0.3 (1e-9 for p = 0.5, where
    // |d|^{p−3} ≲ 20) and the rounding ε|ℓ|/h ~ 1e-10·L: 1e-7 leaves a margin of 100 while a missing
    // term (e.g. the one through s↓) is of order 1.
    std::mt19937 rng(201);
    for (Eigen::Index L : {1, 2, 3, 5, 8})
        for (double p : {0.5, 1.0, 2.0})
            for (double tau : {0.3, 1.0}) {
                CAPTURE(L, p, tau);
                const Eigen::VectorXd s = spread_scores(rng, L);
                const Eigen::MatrixXd G = test::random_tokens(rng, L, L);
                const Eigen::VectorXd got = ssmdyn::soft_sort_vjp(s, tau, p, G);
                REQUIRE(got.size() == L);
                const Eigen::MatrixXd fd = central_differences(
                    [&](const Eigen::MatrixXd& x) {
                        return (G.array() * ssmdyn::soft_sort(Eigen::VectorXd(x), tau, p).array()).sum();
                    },
                    s, 1e-6);
                CAPTURE(got.transpose(), fd.transpose());
                CHECK(fd_err(got, fd) < 1e-7);
                // P̂ depends on score differences only: a common shift changes nothing.
                CHECK(std::abs(got.sum()) < 1e-12 * std::max(1.0, got.cwiseAbs().sum()));
                if (L == 1) CHECK(got(0) == 0.0);
                if (L > 1) CHECK(got.cwiseAbs().maxCoeff() > 1e-3);  // the comparison is not 0 = 0
            }
}

TEST_CASE("reordering: soft_sort_vjp takes scores as a row, expressions, and is finite at ties") {
    std::mt19937 rng(202);
    const Eigen::VectorXd s = spread_scores(rng, 4);
    const Eigen::MatrixXd G = test::random_tokens(rng, 4, 4);
    const Eigen::VectorXd reference = ssmdyn::soft_sort_vjp(s, 0.5, 1.0, G);
    CHECK(ssmdyn::soft_sort_vjp(s.transpose(), 0.5, 1.0, G) == reference);
    CHECK(ssmdyn::soft_sort_vjp(2.0 * s / 2.0, 0.5, 1.0, G.transpose().transpose()) == reference);
    // Tied scores: |d|^p's derivative at 0 is taken as 0 (sign(0) = 0 for p = 1; unbounded for p < 1).
    Eigen::VectorXd tied(4);
    tied << 0.5, -1.0, 0.5, 0.5;
    for (double p : {0.5, 1.0, 2.0}) {
        CAPTURE(p);
        const Eigen::VectorXd g = ssmdyn::soft_sort_vjp(tied, 0.5, p, G);
        CHECK(g.allFinite());
        CHECK(std::abs(g.sum()) < 1e-12 * std::max(1.0, g.cwiseAbs().sum()));
    }
    // For p = 2, when G's rows for the three tied (sorted) positions 0, 1, 2 are equal, ℓ is a
    // symmetric smooth function of the tied scores, so differentiable at the tie: the convention
    // (0 at d = 0) must then give the true gradient. Tolerance as in the test above.
    Eigen::MatrixXd G_sym = G;
    G_sym.row(1) = G_sym.row(0);
    G_sym.row(2) = G_sym.row(0);
    const Eigen::MatrixXd fd = central_differences(
        [&](const Eigen::MatrixXd& x) {
            return (G_sym.array() * ssmdyn::soft_sort(Eigen::VectorXd(x), 0.5, 2.0).array()).sum();
        },
        tied, 1e-6);
    const Eigen::VectorXd got = ssmdyn::soft_sort_vjp(tied, 0.5, 2.0, G_sym);
    CAPTURE(got.transpose(), fd.transpose());
    CHECK(fd_err(got, fd) < 1e-7);
    CHECK(got.cwiseAbs().maxCoeff() > 1e-3);
}

TEST_CASE("reordering: soft_sort_vjp refuses what soft_sort refuses and a grad_P of the wrong shape") {
    Eigen::VectorXd s(3);
    s << 0.1, 0.7, -0.4;
    const Eigen::MatrixXd G = Eigen::MatrixXd::Ones(3, 3);
    CHECK(test::message_of([&] { ssmdyn::soft_sort_vjp(s, 0.5, 1.0, Eigen::MatrixXd::Ones(3, 4)); }) ==
          "grad_P is 3x4, expected L x L = 3x3 (L = the number of scores)");
    CHECK(test::message_of([&] { ssmdyn::soft_sort_vjp(s, 0.5, 1.0, Eigen::MatrixXd::Ones(1, 9)); }) ==
          "grad_P is 1x9, expected L x L = 3x3 (L = the number of scores)");
    CHECK(test::message_of([&] { ssmdyn::soft_sort_vjp(Eigen::MatrixXd::Ones(3, 3), 0.5, 1.0, G); }) ==
          "scores must be a vector");
    CHECK(test::message_of([&] { ssmdyn::soft_sort_vjp(s, 0.0, 1.0, G); }) == "tau must be finite and > 0");
    CHECK(test::message_of([&] { ssmdyn::soft_sort_vjp(s, 0.5, -1.0, G); }) == "p must be finite and > 0");
    Eigen::VectorXd bad = s;
    bad(1) = std::numeric_limits<double>::infinity();
    CHECK(test::message_of([&] { ssmdyn::soft_sort_vjp(bad, 0.5, 1.0, G); }) == "scores must be finite");
}

TEST_CASE("reordering: importance_scores_vjp equals central differences, dense and low-rank S_Delta") {
    // Every score is affine in each single entry of k, X, b_Δ, S_Δ and of each low-rank factor, so
    // central differences have no truncation error; with h = 1e-3 the rounding ε·|terms|/h is
    // ~1e-12, and 1e-9 leaves a margin of 1000.
    std::mt19937 rng(203);
    for (bool low_rank : {false, true})
        for (Eigen::Index L : {1, 2, 6})
            for (Eigen::Index D : {1, 3, 4}) {
                const Eigen::Index R = 2;
                CAPTURE(low_rank, L, D);
                auto params = test::random_params(rng, D, 2);
                if (low_rank) {
                    params.S_Delta.resize(0, 0);
                    params.S_Delta_up = test::random_tokens(rng, D, R);
                    params.S_Delta_down = test::random_tokens(rng, R, D);
                    params.validate();
                }
                const Eigen::VectorXd k = test::random_tokens(rng, D, 1);
                const Eigen::MatrixXd X = test::random_tokens(rng, D, L);
                const Eigen::VectorXd g = test::random_tokens(rng, L, 1);
                const auto got = ssmdyn::importance_scores_vjp(params, k, X, g);
                const double h = 1e-3, tol = 1e-9;
                using Params = ssmdyn::S6Params<double>;
                auto loss = [&](const Params& q, const Eigen::VectorXd& kk, const Eigen::MatrixXd& XX) {
                    return g.dot(ssmdyn::importance_scores(q, kk, XX));
                };
                const Eigen::MatrixXd fd_k = central_differences(
                                          [&](const Eigen::MatrixXd& m) { return loss(params, m, X); }, k, h),
                                      fd_X = central_differences(
                                          [&](const Eigen::MatrixXd& m) { return loss(params, k, m); }, X, h);
                CHECK(fd_err(got.k, fd_k) < tol);
                CHECK(fd_err(got.X, fd_X) < tol);
                auto through = [&](Eigen::MatrixXd Params::*field, const Eigen::MatrixXd& got_field) {
                    CHECK(fd_err(got_field, central_differences(
                                                [&](const Eigen::MatrixXd& m) {
                                                    auto q = params;
                                                    q.*field = m;
                                                    return loss(q, k, X);
                                                },
                                                params.*field, h)) < tol);
                };
                if (low_rank) {
                    CHECK(got.S_Delta.size() == 0);
                    REQUIRE(got.S_Delta_up.rows() == D);
                    REQUIRE(got.S_Delta_up.cols() == R);
                    REQUIRE(got.S_Delta_down.rows() == R);
                    REQUIRE(got.S_Delta_down.cols() == D);
                    through(&Params::S_Delta_up, got.S_Delta_up);
                    through(&Params::S_Delta_down, got.S_Delta_down);
                } else {
                    CHECK(got.S_Delta_up.size() == 0);
                    CHECK(got.S_Delta_down.size() == 0);
                    REQUIRE(got.S_Delta.rows() == D);
                    REQUIRE(got.S_Delta.cols() == D);
                    through(&Params::S_Delta, got.S_Delta);
                }
                const Eigen::VectorXd b_fd = central_differences(
                    [&](const Eigen::MatrixXd& m) {
                        auto q = params;
                        q.delta_bias = m;
                        return loss(q, k, X);
                    },
                    params.delta_bias, h);
                CHECK(fd_err(got.delta_bias, b_fd) < tol);
            }
}

TEST_CASE("reordering: importance_scores_vjp takes flat tokens, k and g as rows, and refuses wrong shapes") {
    std::mt19937 rng(204);
    const auto params = test::random_params(rng, 3, 2);
    const Eigen::VectorXd k = test::random_tokens(rng, 3, 1);
    const Eigen::MatrixXd X = test::random_tokens(rng, 3, 5);
    const Eigen::VectorXd g = test::random_tokens(rng, 5, 1);
    const auto reference = ssmdyn::importance_scores_vjp(params, k, X, g);
    const auto flat = ssmdyn::importance_scores_vjp(params, k.transpose(), ssmdyn::to_state(X), g.transpose());
    CHECK(flat.X == reference.X);  // D×L also for flat tokens
    CHECK(flat.k == reference.k);
    CHECK(flat.S_Delta == reference.S_Delta);
    CHECK(test::message_of([&] { ssmdyn::importance_scores_vjp(params, k, X, Eigen::VectorXd::Ones(4)); }) ==
          "grad_scores is 4x1, expected a vector of L = 5 entries (one per token)");
    CHECK(test::message_of([&] { ssmdyn::importance_scores_vjp(params, k, X, Eigen::MatrixXd::Ones(5, 2)); }) ==
          "grad_scores is 5x2, expected a vector of L = 5 entries (one per token)");
    CHECK_THROWS_AS(ssmdyn::importance_scores_vjp(params, Eigen::VectorXd::Ones(2), X, g), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::importance_scores_vjp(params, k, Eigen::MatrixXd::Ones(2, 5), g), std::invalid_argument);
}
