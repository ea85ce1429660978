#include "support.hpp"

#include <atomic>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ssmdyn/theory/phase_diagram.hpp>

#include "../../tools/progress.hpp"

TEST_CASE("sweep: parallel_for calls every index once, with any thread count, and rethrows") {
    for (int threads : {0, 1, 2, 3}) {
        CAPTURE(threads);
        std::vector<std::atomic<int>> hits(1000);
        ssmdyn::parallel_for(hits.size(), [&](std::size_t i) { hits[i]++; }, threads);
        for (const auto& h : hits) CHECK(h.load() == 1);
    }
    CHECK_THROWS_AS(ssmdyn::parallel_for(
                        100, [](std::size_t i) { if (i == 37) throw std::invalid_argument("cell 37"); }, 2),
                    std::invalid_argument);
}

TEST_CASE("sweep: the 1-D phase diagram agrees with the theorem cell by cell, whatever the threads") {
    const std::vector<double> mu{-1.0, -0.5, 0.0, 0.5, 1.0}, s{-1.0, -0.5, 0.0, 0.5, 1.0};
    const Eigen::VectorXd tokens = test::tokens({0.5, -0.3, 1.0});
    const auto cells = ssmdyn::phase_diagram(mu, s, tokens, 1.0, 0.0, 200.0, {}, 1);
    REQUIRE(cells.size() == 25);
    for (std::size_t k = 0; k < cells.size(); ++k) {
        const auto& c = cells[k];
        CAPTURE(c.mu, c.s);
        CHECK(c.mu == mu[k / 5]);
        CHECK(c.s == s[k % 5]);
        const auto p = ssmdyn::S6Params<double>::one_dimensional(c.mu, c.s, 1.0, 0.0);
        CHECK(c.predicted == ssmdyn::classify(p, tokens).regime);
        CHECK(c.observed == c.predicted);
        CHECK(c.t_blowup.has_value() == (c.observed == ssmdyn::Regime::FastDivergence));
    }
    const auto parallel = ssmdyn::phase_diagram(mu, s, tokens, 1.0, 0.0, 200.0, {}, 2);
    for (std::size_t k = 0; k < cells.size(); ++k) {
        CHECK(parallel[k].observed == cells[k].observed);
        CHECK(parallel[k].t_blowup == cells[k].t_blowup);
    }
    CHECK_THROWS_AS(ssmdyn::phase_diagram({}, s, tokens, 1.0, 0.0, 1.0), std::invalid_argument);
}

TEST_CASE("sweep: progress hears of every finished item once, in increasing order, on any thread count") {
    for (int threads : {1, 2, 3}) {
        CAPTURE(threads);
        std::vector<std::size_t> seen;
        ssmdyn::parallel_for(
            50, [](std::size_t) {}, threads,
            [&seen](std::size_t done, std::size_t total) {
                CHECK(total == 50);
                seen.push_back(done);
            });
        REQUIRE(seen.size() == 50);
        for (std::size_t k = 0; k < seen.size(); ++k) CHECK(seen[k] == k + 1);
    }
    // A throwing callback is reported like a throwing body, not a crash.
    CHECK_THROWS_AS(ssmdyn::parallel_for(
                        10, [](std::size_t) {}, 2,
                        [](std::size_t done, std::size_t) {
                            if (done == 5) throw std::runtime_error("progress failed");
                        }),
                    std::runtime_error);
}

TEST_CASE("sweep: the progress bar draws only when enabled, and ends at 100%") {
    for (bool enabled : {true, false}) {
        CAPTURE(enabled);
        std::FILE* out = std::tmpfile();
        REQUIRE(out != nullptr);
        {
            ssmdyn::cli::ProgressBar bar("cells", out, enabled);
            ssmdyn::parallel_for(7, [](std::size_t) {}, 2, std::ref(bar));
        }
        std::rewind(out);
        std::string text;
        for (int c; (c = std::fgetc(out)) != EOF;) text += char(c);
        std::fclose(out);
        if (enabled) {
            CHECK(text.find("cells [") != std::string::npos);
            CHECK(text.find("100% 7/7") != std::string::npos);
            CHECK(text.back() == '\n');
        } else {
            CHECK(text.empty());
        }
    }
    // By default: on exactly when stderr is a terminal (under CTest it is not).
    CHECK(ssmdyn::cli::ProgressBar("cells").enabled() == (isatty(fileno(stderr)) != 0));
}
