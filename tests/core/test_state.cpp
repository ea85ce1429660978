#include "support.hpp"

#include <ssmdyn/core/state.hpp>

TEST_CASE("state: token_matrix views the flat state column by column, without a copy") {
    ssmdyn::StateVector<double> x(6);
    x << 1, 2, 3, 4, 5, 6;
    auto X = ssmdyn::token_matrix(x, 2);
    REQUIRE(X.rows() == 2);
    REQUIRE(X.cols() == 3);
    CHECK(X(0, 1) == 3);  // token 1 (0-based) = entries 2, 3
    CHECK(X(1, 2) == 6);
    X(0, 0) = -1;  // writes through to the state
    CHECK(x(0) == -1);
}

TEST_CASE("state: to_token_matrix and to_state take either form and any expression") {
    Eigen::MatrixXd X(2, 3);
    X << 1, 3, 5, 2, 4, 6;  // tokens (1,2), (3,4), (5,6)
    ssmdyn::StateVector<double> flat(6);
    flat << 1, 2, 3, 4, 5, 6;
    CHECK(ssmdyn::to_token_matrix(flat, 2) == X);
    CHECK(ssmdyn::to_token_matrix(X, 2) == X);
    CHECK(ssmdyn::to_state(X, 2) == flat);
    CHECK(ssmdyn::to_state(flat, 2) == flat);
    CHECK(ssmdyn::to_state(2.0 * X, 2) == 2.0 * flat);                         // an expression
    CHECK(ssmdyn::to_token_matrix(X.transpose().transpose(), 2) == X);         // another
    CHECK(ssmdyn::to_state(X.leftCols(2), 2) == flat.head(4));                 // a block
    CHECK(ssmdyn::to_state(Eigen::Map<const Eigen::MatrixXd>(X.data(), 2, 3), 2) == flat);  // a map
    CHECK(ssmdyn::to_state(X) == flat);  // the one-argument form flattens any matrix

    const auto message = test::message_of([&] { (void)ssmdyn::to_state(flat, 4, "x0"); });
    CHECK(message.find("x0 is 6x1") == 0);  // names the argument and its shape
    CHECK(test::message_of([&] { (void)ssmdyn::to_token_matrix(Eigen::MatrixXd(3, 2), 2); }).find("tokens is 3x2") == 0);
    CHECK(test::message_of([] { (void)ssmdyn::to_state(Eigen::VectorXd(), 1); }).find("empty") != std::string::npos);
    CHECK_THROWS_AS(ssmdyn::to_state(flat, 0), std::invalid_argument);
}
