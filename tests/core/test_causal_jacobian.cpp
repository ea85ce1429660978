// The structured Jacobian against independent truths: its product J·v against the tangent
// scan (selective_scan_jvp), and its shifted solve against a dense Jacobian assembled
// column by column from that tangent scan and solved by Eigen's dense LU.
#include "support.hpp"

#include <algorithm>
#include <random>

#include <Eigen/LU>

#include <ssmdyn/core/causal_jacobian.hpp>
#include <ssmdyn/core/scan_derivatives.hpp>

namespace {

using Matrix = Eigen::MatrixXd;
using State = ssmdyn::StateVector<double>;

// The dense (D·L)² Jacobian, column k = J e_k by the tangent scan.
Matrix dense_jacobian(const ssmdyn::S6Params<double>& p, const Matrix& X, const ssmdyn::LayerOptions<double>& o) {
    const Eigen::Index n = X.size();
    Matrix J(n, n), dX(X.rows(), X.cols()), dY(X.rows(), X.cols());
    for (Eigen::Index k = 0; k < n; ++k) {
        dX.setZero();
        dX(k) = 1.0;
        ssmdyn::selective_scan_jvp(p, ssmdyn::Softplus{}, X, dX, dY, o);
        J.col(k) = Eigen::Map<const State>(dY.data(), n);
    }
    return J;
}

struct Case {
    const char* name;
    ssmdyn::S6Params<double> params;
    ssmdyn::LayerOptions<double> options;
};

std::vector<Case> cases(std::mt19937& rng, Eigen::Index D, Eigen::Index N, Eigen::Index L) {
    std::vector<Case> out;
    auto general = test::random_params(rng, D, N);
    out.push_back({"general decays", general, {}});
    auto equal = general;
    for (Eigen::Index n = 0; n < N; ++n) equal.A.col(n) = general.A.col(0);
    out.push_back({"equal decays", equal, {}});
    auto harmonic = general;
    for (Eigen::Index n = 0; n < N; ++n) harmonic.A.col(n) = double(n + 1) * general.A.col(0);
    out.push_back({"harmonic decays", harmonic, {}});
    ssmdyn::LayerOptions<double> full;
    full.discretization = ssmdyn::Discretization::ZeroOrderHold;
    full.D_skip = Eigen::VectorXd::LinSpaced(D, 0.5, 1.5);
    full.gate = test::random_tokens(rng, D, L);
    out.push_back({"zero-order hold, skip and gate", general, full});
    return out;
}

}  // namespace

TEST_CASE("causal Jacobian: J·v is the tangent scan, and (c·I − J) v = r is solved exactly") {
    std::mt19937 rng(7);
    const Eigen::Index D = 3, N = 4, L = 9;
    const Matrix X = test::random_tokens(rng, D, L);
    const State x = Eigen::Map<const State>(X.data(), X.size());
    for (const auto& c : cases(rng, D, N, L)) {
        CAPTURE(c.name);
        ssmdyn::CausalJacobian<double> jac(c.params, ssmdyn::Softplus{}, c.options);
        jac.linearize(x);
        const Matrix J = dense_jacobian(c.params, X, c.options);

        // Causality: J is block lower-triangular, so the structure the solver relies on holds.
        for (Eigen::Index l = 0; l + 1 < L; ++l)
            CHECK(J.block(l * D, (l + 1) * D, D, (L - l - 1) * D).cwiseAbs().maxCoeff() == 0.0);
        for (Eigen::Index l = 0; l < L; ++l) CHECK(test::max_rel_err(Matrix(jac.block(l)), Matrix(J.block(l * D, l * D, D, D))) < 1e-13);

        const State v = test::random_tokens(rng, D * L, 1);
        State Jv;
        jac.multiply(v, Jv);
        CHECK(test::max_rel_err(Jv, State(J * v)) < 1e-13);

        for (double shift : {1e-3, 1.0, 1e4}) {
            CAPTURE(shift);
            jac.factorize(shift);
            State sol;
            jac.solve(v, sol);
            const Matrix M = shift * Matrix::Identity(D * L, D * L) - J;
            const State dense = M.partialPivLu().solve(v);
            // To the accuracy the conditioning allows (the blocks' inverses are formed
            // explicitly: errors grow with κ(M), as any solver's forward error does).
            const double kappa = M.cwiseAbs().colwise().sum().maxCoeff() *
                                 M.inverse().cwiseAbs().colwise().sum().maxCoeff();
            CAPTURE(kappa);
            const double tolerance = std::max(1e-13, 1e-15 * kappa);
            CHECK(test::max_rel_err(sol, dense) < tolerance);
            CHECK(test::max_rel_err(State(M * sol), v) < tolerance);
        }
    }
}

TEST_CASE("causal Jacobian: bad use is refused with a message") {
    std::mt19937 rng(3);
    ssmdyn::CausalJacobian<double> jac(test::random_params(rng, 2, 3));
    State v = State::Ones(4), out;
    CHECK_THROWS_AS(jac.multiply(v, out), std::logic_error);
    CHECK(test::message_of([&] { jac.linearize(State::Ones(5)); }) ==
          "CausalJacobian::linearize: the state has 5 entries, not a positive multiple of D = 2");
    jac.linearize(v);
    CHECK_THROWS_AS(jac.solve(v, out), std::logic_error);  // not factorised yet
    jac.factorize(1.0);
    CHECK(test::message_of([&] { jac.solve(State::Ones(6), out); }) ==
          "CausalJacobian::solve: the vector has 6 entries, expected D·L = 4");
}
