#include "support.hpp"

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
