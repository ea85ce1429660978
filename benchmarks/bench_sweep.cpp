// Parallel efficiency of the sweeps: the 1-D phase diagram over a 100 x 100 (mu, s) grid,
// 10,000 independent systems each integrated to t = 50 (as `ssmdyn sweep --mu -2:2:100
// --s -2:2:100 --tokens -0.5,-1.0,-0.2,-1.5 --t-end 50`), on 1 thread and on 2.
//
// Run: build/bin/bench_sweep [Google Benchmark flags]
// The benchmark table has each thread count alone (3 repetitions, real time). The summary
// after it times the two in alternation, 1 thread then 2, for a few rounds, and prints the
// median speed-up, so that load coming and going on a shared machine hits both alike
// (goal >= 1.8x on 2 cores). It also checks that both give the same cells; exit status 1
// if not. Without OpenMP the sweep is serial and the speed-up is 1.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <ssmdyn/theory/phase_diagram.hpp>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

struct Grid {
    ssmdyn::PhaseGrid cells;  // a = 1, b = 0
    ssmdyn::StateVector<double> tokens;
};

Grid make_grid(int n = 100) {
    Grid g;
    for (int i = 0; i < n; ++i) {
        g.cells.mu.push_back(-2.0 + 4.0 * i / (n - 1));
        g.cells.s.push_back(-2.0 + 4.0 * i / (n - 1));
    }
    g.tokens = (ssmdyn::StateVector<double>(4) << -0.5, -1.0, -0.2, -1.5).finished();
    return g;
}

std::vector<ssmdyn::PhaseCell> sweep(const Grid& g, int threads) {
    return ssmdyn::phase_diagram(g.cells, g.tokens, 50.0, {}, threads);
}

void BM_phase_diagram(benchmark::State& state) {
    const Grid g = make_grid();
    for (auto _ : state) {
        auto cells = sweep(g, static_cast<int>(state.range(0)));
        benchmark::DoNotOptimize(cells.data());
    }
    state.counters["systems/s"] =
        benchmark::Counter(double(g.cells.size()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_phase_diagram)->ArgName("threads")->Arg(1)->Arg(2)->Iterations(1)->Repetitions(3)->UseRealTime()->Unit(
    benchmark::kMillisecond);

bool same(const std::vector<ssmdyn::PhaseCell>& a, const std::vector<ssmdyn::PhaseCell>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].mu != b[i].mu || a[i].s != b[i].s || a[i].predicted != b[i].predicted ||
            a[i].observed != b[i].observed || a[i].t_blowup != b[i].t_blowup)
            return false;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();

    const Grid g = make_grid();
    auto seconds = [&](int threads, std::vector<ssmdyn::PhaseCell>& out) {
        const auto start = std::chrono::steady_clock::now();
        out = sweep(g, threads);
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    constexpr int rounds = 5;
    std::vector<double> one, two, ratio;
    std::vector<ssmdyn::PhaseCell> serial, parallel;
    bool identical = true;
    for (int r = 0; r < rounds; ++r) {
        one.push_back(seconds(1, serial));
        two.push_back(seconds(2, parallel));
        ratio.push_back(one.back() / two.back());
        identical = identical && same(serial, parallel);
    }
    auto median = [](std::vector<double> v) {
        std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
        return v[v.size() / 2];
    };
#ifdef _OPENMP
    const int cores = omp_get_num_procs();
#else
    const int cores = 1;
#endif
    std::printf("\nSweep of %zu systems (100 x 100 grid, t_end = 50), %d rounds alternating 1 and 2 threads, "
                "%d processors:\n",
                serial.size(), rounds, cores);
    std::printf("  1 thread:  %.3f s (median)\n  2 threads: %.3f s (median)\n", median(one), median(two));
    std::printf("  speed-up 1 -> 2 threads: %.2fx (median of the rounds' ratios)   goal >= 1.8x   %s\n",
                median(ratio), median(ratio) >= 1.8 ? "met" : "NOT MET");
    std::printf("  cells identical on 1 and 2 threads: %s\n", identical ? "yes" : "NO");
    return identical ? 0 : 1;
}
