#include "support.hpp"

#include <atomic>
#include <functional>
#include <stdexcept>
#include <vector>

#include <ssmdyn/core/parallel_for.hpp>

TEST_CASE("parallel_for calls every index once, with any thread count, and rethrows") {
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
TEST_CASE("parallel_for: progress hears of every finished item once, in increasing order, on any thread count") {
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
