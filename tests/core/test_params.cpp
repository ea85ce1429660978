#include "support.hpp"

#include <string>

#include <ssmdyn/core/params.hpp>

namespace {
using test::message_of;
}  // namespace

TEST_CASE("the one-dimensional factory builds the paper's scalar system") {
    auto p = ssmdyn::S6Params<double>::one_dimensional({-1.5, 0.25, 2.0, 0.1});
    CHECK(p.dim() == 1);
    CHECK(p.state_dim() == 1);
    CHECK(p.mu()(0, 0) == -1.5);
    CHECK(p.S_Delta(0, 0) == 0.25);
    CHECK(p.delta_bias(0) == 0.1);
    CHECK(p.A(0, 0) == -2.0);
}

TEST_CASE("mu is S_C^T S_B") {
    std::mt19937 rng(7);
    auto p = test::random_params(rng, 4, 3);
    Eigen::MatrixXd mu = Eigen::MatrixXd::Zero(4, 4);
    for (int n = 0; n < 3; ++n) mu += p.S_C.row(n).transpose() * p.S_B.row(n);
    CHECK(test::max_rel_err(p.mu(), mu) < 1e-14);
    CHECK_NOTHROW(p.validate());
}

TEST_CASE("validation names the field and the problem") {
    std::mt19937 rng(1);
    const auto good = test::random_params(rng, 3, 2);

    auto p = good;
    p.S_C.resize(3, 3);
    auto m = message_of([&] { p.validate(); });
    CHECK(m.find("S_C") != std::string::npos);
    CHECK(m.find("3x3") != std::string::npos);
    CHECK(m.find("2x3") != std::string::npos);

    p = good;
    p.S_Delta.resize(3, 2);
    CHECK(message_of([&] { p.validate(); }).find("S_Delta") != std::string::npos);

    p = good;
    p.delta_bias.resize(2);
    CHECK(message_of([&] { p.validate(); }) == "delta_bias has 2 entries, expected D = 3");

    // The field that disagrees with the others is blamed, S_B included.
    p = good;
    p.S_B.resize(2, 4);
    CHECK(message_of([&] { p.validate(); }) == "S_B has shape 2x4 but must be N x D = 2x3");

    p = good;
    p.A.resize(2, 3);
    CHECK(message_of([&] { p.validate(); }).find("A has shape 2x3") != std::string::npos);

    p = good;
    p.A(1, 0) = 0.5;
    CHECK(message_of([&] { p.validate(); }) == "A(1,0) = 0.5 must be < 0");
    p.A(1, 0) = 0.0;
    CHECK(message_of([&] { p.validate(); }).find("A(1,0)") != std::string::npos);

    p = good;
    p.S_B(1, 2) = std::numeric_limits<double>::quiet_NaN();
    m = message_of([&] { p.validate(); });
    CHECK(m.find("S_B(1,2)") != std::string::npos);
    CHECK(m.find("not finite") != std::string::npos);

    p = good;
    p.A(0, 0) = -std::numeric_limits<double>::infinity();
    CHECK(message_of([&] { p.validate(); }).find("A(0,0) is not finite") != std::string::npos);

    p = good;
    p.S_B.resize(0, 3);
    CHECK(message_of([&] { p.validate(); }).find("S_B") != std::string::npos);

    CHECK_THROWS_AS(ssmdyn::S6Params<double>::one_dimensional({1.0, 0.0, -1.0}), std::invalid_argument);
}

TEST_CASE("token validation rejects empty, ragged and non-finite token sets") {
    std::mt19937 rng(2);
    const auto p = test::random_params(rng, 3, 2);
    Eigen::VectorXd x = Eigen::VectorXd::Ones(6);
    CHECK_NOTHROW(ssmdyn::validate_tokens(p, x));
    CHECK(message_of([&] { ssmdyn::validate_tokens(p, Eigen::VectorXd()); }).find("tokens is empty") !=
          std::string::npos);
    CHECK(message_of([&] { ssmdyn::validate_tokens(p, Eigen::VectorXd::Ones(7)); })
              .find("not a multiple of D = 3") != std::string::npos);
    x(4) = std::numeric_limits<double>::infinity();
    CHECK(message_of([&] { ssmdyn::validate_tokens(p, x); }) ==
          "tokens: token 2, channel 2 is not finite");
}

TEST_CASE("validation errors carry the field, so callers add context without parsing the message") {
    auto p = ssmdyn::S6Params<double>::one_dimensional({1.0, 0.5, 1.0, 0.0});
    p.S_Delta(0, 0) = std::numeric_limits<double>::quiet_NaN();
    try {
        p.validate();
        FAIL("validate() accepted a NaN in S_Delta");
    } catch (const ssmdyn::InvalidParameter& e) {
        CHECK(e.field() == "S_Delta");
        CHECK(std::string(e.what()) == "S_Delta(0,0) is not finite");
    }
    p = ssmdyn::S6Params<double>::one_dimensional({1.0, 0.5, 1.0, 0.0});
    p.A(0, 0) = 0.5;
    try {
        p.validate();
        FAIL("validate() accepted A > 0");
    } catch (const ssmdyn::InvalidParameter& e) {
        CHECK(e.field() == "A");
    }
}

TEST_CASE("the one-dimensional system is named: mu, s, a, b") {
    ssmdyn::OneDimensional<double> sys;
    CHECK(sys.a == 1.0);  // defaults: a = 1, b = 0
    CHECK(sys.b == 0.0);
    sys.mu = 2.0;
    sys.s = -0.5;
    sys.a = 3.0;
    sys.b = 0.25;
    const auto p = ssmdyn::S6Params<double>::one_dimensional(sys);
    CHECK(p.S_B(0, 0) * p.S_C(0, 0) == 2.0);
    CHECK(p.S_Delta(0, 0) == -0.5);
    CHECK(p.A(0, 0) == -3.0);
    CHECK(p.delta_bias(0) == 0.25);
}

TEST_CASE("a low-rank S_Delta is validated as its two factors, and step_matrix multiplies them out") {
    std::mt19937 rng(5);
    auto good = test::random_params(rng, 4, 2);
    good.S_Delta_up = test::random_tokens(rng, 4, 2);
    good.S_Delta_down = test::random_tokens(rng, 2, 4);
    good.S_Delta.resize(0, 0);
    CHECK_NOTHROW(good.validate());
    CHECK(good.low_rank_step());
    CHECK(good.step_rows() == 2);
    CHECK(good.step_matrix().isApprox(good.S_Delta_up * good.S_Delta_down, 1e-15));
    const Eigen::MatrixXd X = test::random_tokens(rng, 4, 3);
    CHECK(good.step_projection(X).isApprox(good.S_Delta_up * good.S_Delta_down * X, 1e-14));

    auto p = good;
    p.S_Delta = Eigen::MatrixXd::Identity(4, 4);  // both forms
    CHECK(message_of([&] { p.validate(); }).find("give one form of S_Delta") != std::string::npos);
    p = good;
    p.S_Delta_up.resize(4, 3);
    CHECK(message_of([&] { p.validate(); }) == "S_Delta_up has shape 4x3 but must be D x R = 4x2");
    p = good;
    p.S_Delta_down.resize(2, 5);
    CHECK(message_of([&] { p.validate(); }).find("S_Delta_down has shape 2x5") != std::string::npos);
    p = good;
    p.S_Delta_down.resize(0, 4);
    CHECK(message_of([&] { p.validate(); }).find("S_Delta_down") != std::string::npos);
    p = good;
    p.S_Delta_up(3, 1) = std::numeric_limits<double>::infinity();
    CHECK(message_of([&] { p.validate(); }) == "S_Delta_up(3,1) is not finite");
    try {
        p.validate();
    } catch (const ssmdyn::InvalidParameter& e) {
        CHECK(e.field() == "S_Delta_up");
    }

    // cast keeps the form and the values (to float's precision)
    const ssmdyn::S6Params<float> f = good.cast<float>();
    CHECK_NOTHROW(f.validate());
    CHECK(f.low_rank_step());
    CHECK((f.S_Delta_up.cast<double>() - good.S_Delta_up).cwiseAbs().maxCoeff() <= 1e-6 * good.S_Delta_up.cwiseAbs().maxCoeff());
    CHECK(f.S_Delta.size() == 0);
}
