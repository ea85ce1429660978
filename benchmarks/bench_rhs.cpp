// Cost of one right-hand-side evaluation S6(X): the selective scan, O(L·D·(D+N)), against
// the defining double sum selective_scan_reference, O(L²·D·N), for D = N = 16.
//
// Run: build/bin/bench_rhs [Google Benchmark flags, e.g. --benchmark_filter=BM_scan]
// Build with -DCMAKE_BUILD_TYPE=Release (see CMakeLists.txt). After the benchmark table the
// program prints a summary in the same process: scan and reference time per L from the
// benchmark runs and the speed-up at L = 1024 (goal >= 100x); the scaling
// time(4096)/time(1024) of the scan (goal <= 4.5, i.e. linear), re-timed in interleaved
// pairs so that load on a shared machine does not skew it; and the agreement of scan and
// reference at L = 256. Exit status 1 only if that agreement fails (timings depend on the
// machine and are only reported). For machine-readable results use
// --benchmark_out=FILE --benchmark_out_format=json; the summary always goes to stdout.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <ssmdyn/params.hpp>
#include <ssmdyn/selective_scan.hpp>
#include <ssmdyn/state.hpp>
#include <ssmdyn/system.hpp>

namespace {

constexpr Eigen::Index kD = 16, kN = 16;
constexpr std::uint32_t kSeed = 12345;

struct Problem {
    ssmdyn::S6Params<double> params;
    Eigen::MatrixXd X;  // D×L, column l is token l
};

/// Seeded random layer and tokens: S_* and b_Δ entries N(0, 1/D), decays A in [-2, -0.1],
/// tokens N(0, 1). The parameters do not depend on L, and the tokens of a shorter problem
/// are the first tokens of a longer one.
Problem make_problem(Eigen::Index L) {
    std::mt19937 rng(kSeed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    std::uniform_real_distribution<double> decay(0.1, 2.0);
    auto random = [&](Eigen::Index rows, Eigen::Index cols, double scale) {
        Eigen::MatrixXd m(rows, cols);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = scale * gauss(rng);
        return m;
    };
    const double s = 1.0 / std::sqrt(double(kD));
    Problem p;
    p.params.S_B = random(kN, kD, s);
    p.params.S_C = random(kN, kD, s);
    p.params.S_Delta = random(kD, kD, s);
    p.params.delta_bias = random(kD, 1, s);
    p.params.A.resize(kD, kN);
    for (Eigen::Index i = 0; i < p.params.A.size(); ++i) p.params.A(i) = -decay(rng);
    p.params.validate();
    p.X = random(kD, L, 1.0);
    return p;
}

/// Per-benchmark counters: tokens/s (items_per_second), time per token, and the element
/// rate L·D·N per second (the size of the hidden-state update).
void set_counters(benchmark::State& state, Eigen::Index L) {
    using benchmark::Counter;
    state.SetItemsProcessed(state.iterations() * L);
    state.counters["time/token"] =
        Counter(double(L), Counter::kIsIterationInvariantRate | Counter::kInvert);
    state.counters["LDN/s"] = Counter(double(L * kD * kN), Counter::kIsIterationInvariantRate);
}

void BM_scan(benchmark::State& state) {
    const Eigen::Index L = state.range(0);
    const Problem p = make_problem(L);
    Eigen::MatrixXd Y(kD, L);
    for (auto _ : state) {
        ssmdyn::selective_scan(p.params, p.X, Y);
        benchmark::DoNotOptimize(Y.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, L);
}

void BM_reference(benchmark::State& state) {
    const Eigen::Index L = state.range(0);
    const Problem p = make_problem(L);
    for (auto _ : state) {
        Eigen::MatrixXd Y = ssmdyn::selective_scan_reference(p.params, p.X);
        benchmark::DoNotOptimize(Y.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, L);
}

/// The same scan as the odeint System sees it: flat state in, flat derivative out.
void BM_system(benchmark::State& state) {
    const Eigen::Index L = state.range(0);
    const Problem p = make_problem(L);
    const ssmdyn::SelectiveSystem<double> system(p.params);
    const ssmdyn::StateVector<double> x = ssmdyn::to_state(p.X);
    ssmdyn::StateVector<double> dxdt(x.size());
    for (auto _ : state) {
        system(x, dxdt, 0.0);
        benchmark::DoNotOptimize(dxdt.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, L);
}

// MinTime keeps the whole run well under a minute on two cores; a reference call at
// L = 1024 takes longer than its MinTime, so it is timed once.
BENCHMARK(BM_scan)->RangeMultiplier(2)->Range(64, 4096)->MinTime(0.25)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_reference)->RangeMultiplier(2)->Range(64, 1024)->MinTime(0.25)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_system)->Arg(1024)->Arg(4096)->MinTime(0.25)->Unit(benchmark::kMicrosecond);

/// Forwards everything to the usual display reporter and keeps the real time per call of
/// each run, keyed "BM_name/L", for the summary.
class CapturingReporter : public benchmark::BenchmarkReporter {
public:
    explicit CapturingReporter(benchmark::BenchmarkReporter* display) : m_display(display) {}

    bool ReportContext(const Context& context) override { return m_display->ReportContext(context); }

    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& r : runs) {
            if (r.error_occurred || r.iterations <= 0) continue;
            const std::string key = r.run_name.function_name + "/" + r.run_name.args;
            const double seconds = r.real_accumulated_time / double(r.iterations);
            if (r.run_type == Run::RT_Iteration)
                m_samples[key].push_back(seconds);
            else if (r.aggregate_name == "median")  // --benchmark_report_aggregates_only
                m_medians[key] = seconds;
        }
        m_display->ReportRuns(runs);
    }

    void Finalize() override { m_display->Finalize(); }

    /// Median real seconds per call of "BM_name/L" (over repetitions), or -1 if not run.
    double seconds(const std::string& name, Eigen::Index L) const {
        const std::string key = name + "/" + std::to_string(L);
        if (auto m = m_medians.find(key); m != m_medians.end()) return m->second;
        auto it = m_samples.find(key);
        if (it == m_samples.end()) return -1.0;
        std::vector<double> v = it->second;
        std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
        return v[v.size() / 2];
    }

private:
    benchmark::BenchmarkReporter* m_display;  // owned by the library
    std::map<std::string, std::vector<double>> m_samples;
    std::map<std::string, double> m_medians;
};

/// Scan time(4 L) / time(L), timed here in interleaved pairs: each round times 4 calls at L
/// and then 1 call at 4 L (about equally long), and the median ratio over the rounds is
/// returned. Load that comes and goes on a shared machine then hits both sides alike,
/// which separate benchmark runs taken seconds apart do not guarantee.
double scan_scaling(Eigen::Index L, int rounds = 15) {
    using clock = std::chrono::steady_clock;
    const Problem small = make_problem(L), large = make_problem(4 * L);
    Eigen::MatrixXd Ys(kD, L), Yl(kD, 4 * L);
    auto seconds = [](auto&& f) {
        const auto start = clock::now();
        f();
        return std::chrono::duration<double>(clock::now() - start).count();
    };
    std::vector<double> ratios;
    ssmdyn::selective_scan(large.params, large.X, Yl);  // warm-up
    for (int r = 0; r < rounds; ++r) {
        const double t_small = seconds([&] {
            for (int i = 0; i < 4; ++i) {
                ssmdyn::selective_scan(small.params, small.X, Ys);
                benchmark::DoNotOptimize(Ys.data());
            }
        }) / 4;
        const double t_large = seconds([&] {
            ssmdyn::selective_scan(large.params, large.X, Yl);
            benchmark::DoNotOptimize(Yl.data());
        });
        ratios.push_back(t_large / t_small);
    }
    std::nth_element(ratios.begin(), ratios.begin() + rounds / 2, ratios.end());
    return ratios[rounds / 2];
}

/// max |scan − reference| / max |reference| over all entries, at length L.
double scan_vs_reference(Eigen::Index L) {
    const Problem p = make_problem(L);
    Eigen::MatrixXd Y(kD, L);
    ssmdyn::selective_scan(p.params, p.X, Y);
    const Eigen::MatrixXd R = ssmdyn::selective_scan_reference(p.params, p.X);
    return (Y - R).cwiseAbs().maxCoeff() / R.cwiseAbs().maxCoeff();
}

const char* verdict(bool met) { return met ? "met" : "NOT MET"; }

void print_time(double seconds) {
    if (seconds < 0) std::printf("  %12s", "-");
    else std::printf("  %9.3f ms", seconds * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    CapturingReporter reporter(benchmark::CreateDefaultDisplayReporter());
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();

    const Eigen::Index accuracy_L = 256;
    const double accuracy = scan_vs_reference(accuracy_L);

    std::printf("\nSummary: D = %d, N = %d, median real time per call\n", int(kD), int(kN));
    std::printf("%6s  %12s  %12s  %12s  %10s\n", "L", "scan", "ns/token", "reference", "ref/scan");
    for (Eigen::Index L = 64; L <= 4096; L *= 2) {
        const double scan = reporter.seconds("BM_scan", L), ref = reporter.seconds("BM_reference", L);
        std::printf("%6d", int(L));
        print_time(scan);
        if (scan < 0) std::printf("  %12s", "-");
        else std::printf("  %12.1f", scan * 1e9 / double(L));
        print_time(ref);
        if (scan > 0 && ref > 0) std::printf("  %9.0fx\n", ref / scan);
        else std::printf("  %10s\n", "-");
    }

    const double s1024 = reporter.seconds("BM_scan", 1024), r1024 = reporter.seconds("BM_reference", 1024);
    const double scaling = scan_scaling(1024);
    const bool accurate = accuracy <= 1e-12;

    std::printf("\n");
    if (s1024 > 0 && r1024 > 0)
        std::printf("speed-up reference/scan at L = 1024:  %9.0fx   goal >= 100x   %s\n", r1024 / s1024,
                    verdict(r1024 / s1024 >= 100.0));
    else
        std::printf("speed-up reference/scan at L = 1024:  not measured (filtered out)\n");
    std::printf("scan time(4096) / time(1024), paired: %9.2f    goal <= 4.5    %s\n", scaling,
                verdict(scaling <= 4.5));
    std::printf("max|scan - ref| / max|ref| at L = %d: %9.2e    goal <= 1e-12  %s\n", int(accuracy_L),
                accuracy, verdict(accurate));
    return accurate ? 0 : 1;
}
