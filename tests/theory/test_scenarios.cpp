#include "support.hpp"

#include <ssmdyn/theory/classify.hpp>
#include <ssmdyn/theory/scenarios.hpp>

TEST_CASE("scenarios: each of the paper's three scenarios is the regime it is named after") {
    const auto scenarios = ssmdyn::paper_scenarios();
    REQUIRE(scenarios.size() == 3);
    for (const auto& sc : scenarios) {
        CAPTURE(sc.name);
        const auto params = ssmdyn::S6Params<double>::one_dimensional(sc.system);
        const Eigen::Map<const Eigen::VectorXd> x0(sc.tokens.data(), Eigen::Index(sc.tokens.size()));
        const auto c = ssmdyn::classify(params, x0);
        CHECK(c.theorem_applies);
        CHECK(c.regime == sc.regime);
        CHECK(std::string(sc.name) == ssmdyn::to_string(sc.regime));
    }
}

TEST_CASE("regime names: parse_* inverts to_string for every value, and names the valid ones") {
    using ssmdyn::Regime;
    for (Regime r : {Regime::Convergence, Regime::SlowDivergence, Regime::FastDivergence, Regime::Stationary,
                     Regime::Undetermined})
        CHECK(ssmdyn::parse_regime(ssmdyn::to_string(r)) == r);
    using F = ssmdyn::TokenFate;
    for (F f : {F::StaysAtZero, F::Stays, F::Converges, F::Grows, F::DivergesSlowly, F::BlowsUp, F::Dragged,
                F::Undetermined})
        CHECK(ssmdyn::parse_token_fate(ssmdyn::to_string(f)) == f);
    using S = ssmdyn::MuScenario;
    for (S s : {S::PositiveDefinite, S::NegativeDefinite, S::PositiveSemidefinite, S::NegativeSemidefinite,
                S::Indefinite, S::Zero})
        CHECK(ssmdyn::parse_mu_scenario(ssmdyn::to_string(s)) == s);
    const std::string m = test::message_of([] { (void)ssmdyn::parse_regime("blowup"); });
    CHECK(m == "regime 'blowup' is unknown; use convergence, slow_divergence, fast_divergence, stationary or "
               "undetermined");
}
