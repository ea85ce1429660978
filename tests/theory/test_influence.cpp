#include "support.hpp"

#include <cmath>
#include <functional>
#include <string>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/adjoint.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/theory/influence.hpp>
#include <ssmdyn/theory/scenarios.hpp>

using ssmdyn::Record;
using ssmdyn::Status;
using System = ssmdyn::SelectiveSystem<double>;
using State = System::State;
using Options = ssmdyn::SimulateOptions<double>;

namespace {

Options tolerances(double rtol, double atol) {
    Options o;
    o.rtol = rtol;
    o.atol = atol;
    o.record = Record::None;
    return o;
}

/// x(T) from x0, tightly.
State final_state(const System& sys, const State& x0, double t_end) {
    const auto r = ssmdyn::simulate(sys, x0, t_end, tolerances(1e-12, 1e-14));
    REQUIRE(r.status == Status::Completed);
    return r.x_final;
}

/// The Jacobian ∂x(T)/∂x(0) by central differences, column by column.
Eigen::MatrixXd fd_jacobian(const System& sys, const State& x0, double t_end, double h = 1e-4) {
    Eigen::MatrixXd J(x0.size(), x0.size());
    for (Eigen::Index i = 0; i < x0.size(); ++i) {
        State plus = x0, minus = x0;
        plus(i) += h;
        minus(i) -= h;
        J.col(i) = (final_state(sys, plus, t_end) - final_state(sys, minus, t_end)) / (2 * h);
    }
    return J;
}

/// D = 2, N = 3, L = 4, mu = -S_C^T S_C (bounded), fixed by the seed.
struct Problem {
    std::mt19937 rng{7};
    ssmdyn::S6Params<double> params = [this] {
        auto p = test::random_params(rng, 2, 3);
        p.S_B = -p.S_C;
        return p;
    }();
    Eigen::MatrixXd tokens = test::random_tokens(rng, 2, 4);
};

}  // namespace

TEST_CASE("influence: the Frobenius norms of the blocks of the finite-difference Jacobian") {
    const Problem problem;
    const System sys(problem.params);
    const double T = 3.0;
    // The D×L token matrix and the flat state give the same result.
    const auto r = ssmdyn::token_influence(sys, problem.tokens, T, tolerances(1e-10, 1e-12));
    REQUIRE(r.status == Status::Completed);
    CHECK(r.t_final == T);
    REQUIRE(r.tokens.rows() == 2);
    REQUIRE(r.tokens.cols() == 4);
    REQUIRE(r.influence.rows() == 4);
    REQUIRE(r.influence.cols() == 4);
    REQUIRE(r.jacobian.rows() == 8);
    REQUIRE(r.jacobian.cols() == 8);
    const State x0 = ssmdyn::to_state(problem.tokens);
    const Eigen::MatrixXd J = fd_jacobian(sys, x0, T);
    CHECK(test::max_rel_err(r.jacobian, J) < 1e-6);
    for (Eigen::Index l = 0; l < 4; ++l)
        for (Eigen::Index j = 0; j <= l; ++j) {
            CAPTURE(l, j);
            const double expected = J.block(l * 2, j * 2, 2, 2).norm();
            CHECK(std::abs(r.influence(l, j) - expected) < 1e-6 * J.norm());
        }
    CHECK(test::max_rel_err(r.tokens, ssmdyn::token_matrix(final_state(sys, x0, T), 2)) < 1e-8);
    CHECK(ssmdyn::token_influence(sys, x0, T, tolerances(1e-10, 1e-12)).influence == r.influence);
    CHECK(r.simulation.steps > 0);
}

TEST_CASE("influence: exactly zero above the diagonal (causality)") {
    std::mt19937 rng(8);
    const auto p = test::random_params(rng, 3, 2);
    const System sys(p);
    const Eigen::MatrixXd X0 = test::random_tokens(rng, 3, 5);
    const auto r = ssmdyn::token_influence(sys, X0, 0.2, tolerances(1e-8, 1e-10));
    REQUIRE(r.status == Status::Completed);
    for (Eigen::Index l = 0; l < 5; ++l)
        for (Eigen::Index j = 0; j < 5; ++j) {
            CAPTURE(l, j);
            if (j > l) {
                CHECK(r.influence(l, j) == 0.0);
                CHECK(r.jacobian.block(l * 3, j * 3, 3, 3).cwiseAbs().maxCoeff() == 0.0);
            } else {
                CHECK(r.influence(l, j) > 0.0);
            }
        }

    // The 1-D scenarios, in all three regimes (the blow-up one stopped at its detection time).
    for (const ssmdyn::Scenario& sc : ssmdyn::paper_scenarios()) {
        CAPTURE(sc.name);
        const System s1(ssmdyn::S6Params<double>::one_dimensional(sc.system));
        const State x0 = Eigen::Map<const State>(sc.tokens.data(), 3);
        const auto q = ssmdyn::token_influence(s1, x0, 5.0, tolerances(1e-10, 1e-12));
        CHECK(q.status == (sc.regime == ssmdyn::Regime::FastDivergence ? Status::BlowUp : Status::Completed));
        CHECK(q.influence.allFinite());
        CHECK(q.influence(0, 1) == 0.0);
        CHECK(q.influence(0, 2) == 0.0);
        CHECK(q.influence(1, 2) == 0.0);
    }
}

TEST_CASE("influence of a mu = 0 system: the identity flow") {
    // 1-D: nothing moves, so dx_l(T)/dx_j(0) = [l == j].
    const System one(ssmdyn::S6Params<double>::one_dimensional({0.0, 1.0, 1.0, 0.3}));
    const auto r = ssmdyn::token_influence(one, test::tokens({1.0, -2.0, 0.5}), 7.0);
    REQUIRE(r.status == Status::Completed);
    CHECK(r.influence == Eigen::MatrixXd::Identity(3, 3));
    CHECK(r.tokens == test::tokens({1.0, -2.0, 0.5}).transpose());

    // D = 3 with S_B = 0 (so B = 0 and S6 = 0): each diagonal block is the 3×3 identity,
    // whose Frobenius norm is sqrt(D).
    std::mt19937 rng(9);
    auto p = test::random_params(rng, 3, 2);
    p.S_B.setZero();
    const System three(p);
    const auto q = ssmdyn::token_influence(three, test::random_tokens(rng, 3, 4), 2.0);
    REQUIRE(q.status == Status::Completed);
    CHECK(q.jacobian == Eigen::MatrixXd::Identity(12, 12));
    CHECK(q.influence == std::sqrt(3.0) * Eigen::MatrixXd::Identity(4, 4));
}

TEST_CASE("gradient shares: sum to 1 and match finite differences of the loss") {
    const Problem problem;
    const System sys(problem.params);
    const double T = 2.0;
    const State x0 = ssmdyn::to_state(problem.tokens);
    const auto r = ssmdyn::token_influence(sys, x0, T, tolerances(1e-10, 1e-12));
    REQUIRE(r.status == Status::Completed);

    // Two losses: l = ½|X(T)|² (G = X(T)) and a linear one, l = <W, X(T)> (G = W).
    std::mt19937 rng(10);
    const Eigen::MatrixXd W = test::random_tokens(rng, 2, 4);
    struct Loss {
        const char* name;
        Eigen::MatrixXd G;
        std::function<double(const State&)> value;
    };
    const State w = ssmdyn::to_state(W);
    for (const Loss& loss : {Loss{"half squared norm", r.tokens, [](const State& x) { return 0.5 * x.squaredNorm(); }},
                             Loss{"linear", W, [&w](const State& x) { return w.dot(x); }}}) {
        CAPTURE(loss.name);
        const auto shares = ssmdyn::gradient_shares(r, loss.G);
        REQUIRE(shares.shares.size() == 4);
        CHECK(std::abs(shares.shares.sum() - 1.0) < 1e-14);
        CHECK((shares.shares.array() >= 0).all());

        // d l / d x(0) by central differences of l(x(T; x0)).
        const double h = 1e-4;
        State g(8);
        for (Eigen::Index i = 0; i < 8; ++i) {
            State plus = x0, minus = x0;
            plus(i) += h;
            minus(i) -= h;
            g(i) = (loss.value(final_state(sys, plus, T)) - loss.value(final_state(sys, minus, T))) / (2 * h);
        }
        const Eigen::MatrixXd gX = ssmdyn::token_matrix(g, 2);
        CHECK(test::max_rel_err(shares.gradient, gX) < 1e-6);
        const Eigen::VectorXd norms = gX.colwise().norm().transpose();
        CHECK(test::max_rel_err(shares.norms, norms) < 1e-6);
        CHECK(test::max_rel_err(shares.shares, Eigen::VectorXd(norms / norms.sum())) < 1e-6);

        // Forward sensitivities and the discrete adjoint (reverse mode) agree on the gradient.
        const auto adjoint = ssmdyn::adjoint_gradient(sys, x0, T, loss.G, tolerances(1e-10, 1e-12));
        REQUIRE(adjoint.forward.status == Status::Completed);
        CHECK(test::max_rel_err(ssmdyn::to_state(shares.gradient), adjoint.x0) < 1e-7);

        // The Jacobian form and the flat gradient give the same.
        const auto by_jacobian = ssmdyn::gradient_shares(r.jacobian, ssmdyn::to_state(loss.G), 2);
        CHECK(by_jacobian.shares == shares.shares);
    }

    // A vanishing gradient has no shares to give: all zero.
    const auto zero = ssmdyn::gradient_shares(r, Eigen::MatrixXd::Zero(2, 4));
    CHECK(zero.shares == Eigen::VectorXd::Zero(4));
}

TEST_CASE("influence and gradient shares: bad sizes throw std::invalid_argument naming the argument") {
    const Problem problem;
    const System sys(problem.params);
    const auto r = ssmdyn::token_influence(sys, problem.tokens, 0.5);
    CHECK(test::message_of([&] { ssmdyn::gradient_shares(r, Eigen::MatrixXd::Zero(3, 4)); })
              .rfind("loss_gradient is 3x4", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::gradient_shares(r, Eigen::VectorXd::Zero(7)); })
              .rfind("loss_gradient is 7x1", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::gradient_shares(r.jacobian, Eigen::VectorXd::Zero(6), 2); })
              .rfind("jacobian is 8x8", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::gradient_shares(r.jacobian, Eigen::MatrixXd::Zero(2, 4), 0); })
              .rfind("loss_gradient: the token dimension D = 0", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::token_influence(sys, Eigen::MatrixXd::Zero(3, 4), 1.0); })
              .rfind("x0 is 3x4", 0) == 0);
    CHECK(test::message_of([&] { ssmdyn::token_influence(sys, Eigen::VectorXd::Zero(0), 1.0); })
              .rfind("x0 is empty", 0) == 0);
}

TEST_CASE("influence up to a blow-up: status blow_up, everything at the detection time") {
    const ssmdyn::Scenario sc = ssmdyn::paper_scenarios()[2];  // fast divergence
    const System sys(ssmdyn::S6Params<double>::one_dimensional(sc.system));
    const State x0 = Eigen::Map<const State>(sc.tokens.data(), 3);
    const Options o = tolerances(1e-12, 1e-14);
    const auto plain = ssmdyn::simulate(sys, x0, 10.0, o);
    REQUIRE(plain.status == Status::BlowUp);
    const auto r = ssmdyn::token_influence(sys, x0, 10.0, o);
    REQUIRE(r.status == Status::BlowUp);
    CHECK(test::rel_err(r.t_final, *plain.t_blowup) < 1e-9);
    CHECK(r.simulation.t_blowup);
    CHECK(r.influence.allFinite());
    // Token 1, the one that blows up, dominates what it influences.
    CHECK(r.influence(0, 0) > 1e6 * r.influence(1, 1));
    CHECK(ssmdyn::gradient_shares(r, r.tokens).shares(0) > 0.99);
}
