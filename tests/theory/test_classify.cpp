#include "support.hpp"

#include <ssmdyn/theory/classify.hpp>
#include <ssmdyn/theory/rates.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/core/system.hpp>

using ssmdyn::Regime;
using ssmdyn::TokenFate;
using Params = ssmdyn::S6Params<double>;
using State = ssmdyn::StateVector<double>;

namespace {
using test::tokens;
std::vector<TokenFate> fates(const ssmdyn::Classification<double>& c) {
    std::vector<TokenFate> f;
    for (const auto& t : c.tokens) f.push_back(t.fate);
    return f;
}
ssmdyn::SimulateOptions<double> log_grid(double t_end, int per_decade = 20) {
    ssmdyn::SimulateOptions<double> o;
    o.rtol = 1e-11;
    o.atol = 1e-14;
    o.record = ssmdyn::Record::Times;
    for (double e = -3; e <= std::log10(t_end) + 1e-9; e += 1.0 / per_decade)
        o.output_times.push_back(std::min(std::pow(10.0, e), t_end));
    o.output_times.erase(std::unique(o.output_times.begin(), o.output_times.end()), o.output_times.end());
    return o;
}
}  // namespace

TEST_CASE("the 1-D theorems: one case per regime, with per-token fates") {
    auto c = ssmdyn::classify(Params::one_dimensional({-1.0, 1.0, 1.0}), tokens({1.0, 0.0, -2.0}));
    CHECK(c.regime == Regime::Convergence);
    CHECK(c.theorem_applies);
    CHECK(fates(c) == std::vector<TokenFate>{TokenFate::Converges, TokenFate::StaysAtZero, TokenFate::Converges});
    CHECK(c.scenario == ssmdyn::MuScenario::NegativeDefinite);
    CHECK_FALSE(c.first_token_blowup_time.has_value());

    c = ssmdyn::classify(Params::one_dimensional({1.0, 1.0, 1.0}), tokens({-1.0, -0.5, -2.0}));
    CHECK(c.regime == Regime::SlowDivergence);
    CHECK(c.theorem_applies);
    CHECK(fates(c) == std::vector<TokenFate>(3, TokenFate::DivergesSlowly));

    // Token 2 blows up on its own; token 1 before it only diverges slowly; token 3 is dragged.
    c = ssmdyn::classify(Params::one_dimensional({1.0, 1.0, 1.0}), tokens({-1.0, 0.5, -2.0}));
    CHECK(c.regime == Regime::FastDivergence);
    CHECK(fates(c) == std::vector<TokenFate>{TokenFate::DivergesSlowly, TokenFate::BlowsUp, TokenFate::Dragged});
    CHECK_FALSE(c.first_token_blowup_time.has_value());

    c = ssmdyn::classify(Params::one_dimensional({0.5, 2.0, 1.0, -0.5}), tokens({0.3, -1.0}));
    CHECK(c.regime == Regime::FastDivergence);
    REQUIRE(c.first_token_blowup_time.has_value());
    CHECK(test::rel_err(*c.first_token_blowup_time, test::token1_blowup_time(0.5, 2.0, -0.5, 0.3)) < 1e-10);

    c = ssmdyn::classify(Params::one_dimensional({2.0, 0.0, 1.0}), tokens({-1.0, 0.5}));  // s = 0
    CHECK(c.regime == Regime::FastDivergence);
    CHECK(fates(c) == std::vector<TokenFate>(2, TokenFate::BlowsUp));

    Params zero = Params::one_dimensional({1.0, 1.0, 1.0});
    zero.S_B.setZero();
    c = ssmdyn::classify(zero, tokens({1.0, 2.0}));
    CHECK(c.regime == Regime::Stationary);
    CHECK(c.scenario == ssmdyn::MuScenario::Zero);
}

TEST_CASE("unequal decays: the sign pattern of S_C[n] S_B[n] decides whether theory can speak") {
    Params p;
    p.S_C = Eigen::MatrixXd::Ones(2, 1);
    p.S_B.resize(2, 1);
    p.S_Delta = Eigen::MatrixXd::Constant(1, 1, 1.0);
    p.delta_bias = Eigen::VectorXd::Zero(1);
    p.A.resize(1, 2);
    p.A << -0.5, -2.0;

    p.S_B << -0.3, -0.7;  // every product negative: still convergence, but not by the theorem
    auto c = ssmdyn::classify(p, tokens({1.0, -1.0}));
    CHECK(c.regime == Regime::Convergence);
    CHECK_FALSE(c.theorem_applies);

    p.S_B << 0.3, 0.7;  // every product positive and token 1 self-blowing
    c = ssmdyn::classify(p, tokens({1.0, -1.0}));
    CHECK(c.regime == Regime::FastDivergence);
    CHECK_FALSE(c.theorem_applies);
    REQUIRE(c.first_token_blowup_time.has_value());  // token 1 sees only μ = 1

    p.S_B << 1.5, -0.5;  // mixed signs: the kernel can change sign
    c = ssmdyn::classify(p, tokens({-1.0, -1.0}));
    CHECK(c.regime == Regime::Undetermined);
    CHECK(c.reason.find("both signs") != std::string::npos);
    CHECK(c.tokens[0].fate == TokenFate::DivergesSlowly);  // token 1 is exact regardless
    CHECK(c.tokens[1].fate == TokenFate::Undetermined);
}

TEST_CASE("D > 1: undetermined, with the spectrum of sym(mu) and token 1's direction") {
    std::mt19937 rng(41);
    auto p = test::random_params(rng, 3, 3);
    p.S_B = -p.S_C;  // μ = −S_Cᵀ S_C: negative definite for a generic square S_C
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 3, 4));
    auto c = ssmdyn::classify(p, x0);
    CHECK(c.regime == Regime::Undetermined);
    CHECK_FALSE(c.theorem_applies);
    CHECK(c.scenario == ssmdyn::MuScenario::NegativeDefinite);
    CHECK(c.mu_sym_eigenvalues.maxCoeff() < 0);
    CHECK(c.tokens[0].fate == TokenFate::Converges);
    // The eigenvalues are those of (μ + μᵀ)/2.
    const Eigen::MatrixXd sym = (c.mu + c.mu.transpose()) / 2;
    CHECK((sym * Eigen::VectorXd::Ones(3)).norm() > 0);
    CHECK(std::abs(sym.trace() - c.mu_sym_eigenvalues.sum()) < 1e-12);

    p.S_B = p.S_C;
    p.S_B.row(0) *= -1;  // μ = S_Cᵀ diag(−1, 1, 1) S_C: indefinite
    c = ssmdyn::classify(p, x0);
    CHECK(c.scenario == ssmdyn::MuScenario::Indefinite);
    CHECK(c.tokens[0].fate == TokenFate::Undetermined);

    p = test::random_params(rng, 3, 1);
    p.S_B = p.S_C;  // rank one, positive semi-definite
    CHECK(ssmdyn::classify(p, x0).scenario == ssmdyn::MuScenario::PositiveSemidefinite);
}

TEST_CASE("property: on 1000 random 1-D systems the prediction is what the simulation does") {
    std::mt19937 rng(2025);
    std::uniform_real_distribution<double> mag(0.05, 2.0), s_dist(-2.0, 2.0), a_dist(0.1, 2.0),
        b_dist(-1.0, 1.0), x_mag(0.2, 2.0), coin(0.0, 1.0);
    std::uniform_int_distribution<int> L_dist(1, 8);
    int checked = 0, fast = 0, slow = 0, conv = 0;
    for (int i = 0; i < 1000; ++i) {
        const double mu = coin(rng) < 0.5 ? -mag(rng) : mag(rng);
        const double s = coin(rng) < 0.05 ? 0.0 : s_dist(rng), a = a_dist(rng), b = b_dist(rng);
        const int L = L_dist(rng);
        State x0(L);
        for (int l = 0; l < L; ++l) x0(l) = (coin(rng) < 0.5 ? -1 : 1) * x_mag(rng);
        const auto p = Params::one_dimensional({mu, s, a, b});
        const auto c = ssmdyn::classify(p, x0);
        REQUIRE(c.theorem_applies);
        // Horizon: past the earliest blow-up a token could have on its own, else t = 50.
        double t_end = 50;
        if (c.regime == Regime::FastDivergence) {
            double first = std::numeric_limits<double>::infinity();
            for (int l = 0; l < L; ++l)
                if (auto T = ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{mu, s, a, b}, x0(l))) first = std::min(first, *T);
            t_end = 2 * first;
        }
        ssmdyn::SimulateOptions<double> o;
        o.record = ssmdyn::Record::None;
        const auto r = ssmdyn::simulate(ssmdyn::SelectiveSystem<double>(p), x0, t_end, o);
        CAPTURE(i, mu, s, a, b, L, t_end, ssmdyn::to_string(r.status));
        CHECK(ssmdyn::observed_regime(r) == c.regime);
        if (c.first_token_blowup_time && !(s * x0.tail(L - 1).array() > 0).any() && s != 0) {
            CHECK(test::rel_err(*r.t_blowup, *c.first_token_blowup_time) < 1e-6);
        }
        ++checked;
        fast += c.regime == Regime::FastDivergence;
        slow += c.regime == Regime::SlowDivergence;
        conv += c.regime == Regime::Convergence;
    }
    CHECK(checked == 1000);
    CHECK(fast > 100);  // every regime well represented
    CHECK(slow > 50);
    CHECK(conv > 300);
}

TEST_CASE("convergence: sqrt(t)|x_1(t)| tends to 1/sqrt(2|mu| softplus(b))") {
    for (auto [mu, s, b] : {std::tuple{-1.0, 1.0, 0.0}, std::tuple{-0.3, -2.0, 0.5}, std::tuple{-2.0, 0.5, -1.0}}) {
        CAPTURE(mu, s, b);
        const auto p = Params::one_dimensional({mu, s, 1.0, b});
        const State x0 = tokens({1.5, -0.7, 2.0});
        const auto r = ssmdyn::simulate(ssmdyn::SelectiveSystem<double>(p), x0, 1e8, log_grid(1e8));
        REQUIRE(r.status == ssmdyn::Status::Completed);
        const auto o = ssmdyn::observe(r);
        CHECK(o.regime == Regime::Convergence);
        CHECK(test::rel_err(o.sqrt_t_first, 1 / std::sqrt(2 * std::abs(mu) * ssmdyn::softplus(b))) < 1e-3);
        for (const auto& t : o.tokens) CHECK(std::abs(t.time_power.slope + 0.5) < 0.01);
    }
}

TEST_CASE("slow divergence: measured (ln t)^q exponents stay below the paper's bound l") {
    const auto p = Params::one_dimensional({1.0, 1.0, 1.0});
    const State x0 = tokens({-1.0, -0.5, -2.0, -0.3});
    const auto c = ssmdyn::classify(p, x0);
    REQUIRE(c.regime == Regime::SlowDivergence);
    const auto r = ssmdyn::simulate(ssmdyn::SelectiveSystem<double>(p), x0, 1e10, log_grid(1e10));
    REQUIRE(r.status == ssmdyn::Status::Completed);
    const auto o = ssmdyn::observe(r);
    CHECK(o.regime == Regime::SlowDivergence);
    for (const auto& t : o.tokens) {
        CAPTURE(t.index, t.log_power.slope, t.log_linear.slope);
        CHECK(t.log_power.slope > 0);
        CHECK(t.log_power.slope <= double(t.index + 1));  // the bound (ln t)^l, l 1-based
        CHECK(t.log_power.r_squared > 0.99);
        CHECK(t.final_magnitude > 5 * t.initial_magnitude);
    }
}

TEST_CASE("fast divergence: the integrated blow-up time and growth law") {
    for (auto [s, law] : {std::pair{0.8, -1.0 / 3.0}, std::pair{0.0, -0.5}}) {
        const auto p = Params::one_dimensional({0.7, s, 1.0, 0.2});
        const State x0 = tokens({0.9, -0.4});
        const auto c = ssmdyn::classify(p, x0);
        REQUIRE(c.first_token_blowup_time.has_value());
        ssmdyn::SimulateOptions<double> o;
        o.rtol = 1e-12;
        o.atol = 1e-14;
        const auto r = ssmdyn::simulate(ssmdyn::SelectiveSystem<double>(p), x0, 10.0, o);
        const auto obs = ssmdyn::observe(r);
        CHECK(obs.regime == Regime::FastDivergence);
        REQUIRE(obs.t_blowup.has_value());
        CHECK(test::rel_err(*obs.t_blowup, *c.first_token_blowup_time) < 1e-6);
        CHECK(std::abs(obs.blowup_growth.slope - law) < 0.05);
    }
}
