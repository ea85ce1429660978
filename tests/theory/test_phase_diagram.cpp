#include "support.hpp"

#include <stdexcept>
#include <vector>

#include <ssmdyn/theory/phase_diagram.hpp>

TEST_CASE("phase diagram: the grid maps cell k to (mu[k / |s|], s[k % |s|]) with a and b fixed") {
    ssmdyn::PhaseGrid grid{{-1.0, 2.0}, {0.1, 0.2, 0.3}, {}};
    grid.fixed.a = 3.0;
    grid.fixed.b = -0.5;
    REQUIRE(grid.size() == 6);
    const auto c = grid.cell(4);  // row 1 (mu = 2), column 1 (s = 0.2)
    CHECK(c.mu == 2.0);
    CHECK(c.s == 0.2);
    CHECK(c.a == 3.0);
    CHECK(c.b == -0.5);
}

TEST_CASE("phase diagram: the 1-D phase diagram agrees with the theorem cell by cell, whatever the threads") {
    const std::vector<double> mu{-1.0, -0.5, 0.0, 0.5, 1.0}, s{-1.0, -0.5, 0.0, 0.5, 1.0};
    ssmdyn::PhaseGrid grid{mu, s, {}};
    grid.fixed.a = 0.7;
    grid.fixed.b = 0.1;
    const Eigen::VectorXd tokens = test::tokens({0.5, -0.3, 1.0});
    const auto cells = ssmdyn::phase_diagram(grid, tokens, 200.0, {}, 1);
    REQUIRE(cells.size() == 25);
    for (std::size_t k = 0; k < cells.size(); ++k) {
        const auto& c = cells[k];
        CAPTURE(c.mu, c.s);
        CHECK(c.mu == mu[k / 5]);
        CHECK(c.s == s[k % 5]);
        const auto p = ssmdyn::S6Params<double>::one_dimensional({c.mu, c.s, 0.7, 0.1});
        CHECK(c.predicted == ssmdyn::classify(p, tokens).regime);
        CHECK(c.observed == c.predicted);
        CHECK(c.t_blowup.has_value() == (c.observed == ssmdyn::Regime::FastDivergence));
    }
    const auto parallel = ssmdyn::phase_diagram(grid, tokens, 200.0, {}, 2);
    for (std::size_t k = 0; k < cells.size(); ++k) {
        CHECK(parallel[k].observed == cells[k].observed);
        CHECK(parallel[k].t_blowup == cells[k].t_blowup);
    }
    grid.mu.clear();
    CHECK_THROWS_AS(ssmdyn::phase_diagram(grid, tokens, 1.0), std::invalid_argument);
}
