// Cost of the exact derivatives of the S6 layer against one evaluation of the layer itself:
// the right-hand side S6(X) (selective_scan), its Jacobian-vector product (selective_scan_jvp:
// a tangent scan beside the primal one) and its vector-Jacobian product with every
// parameter gradient (selective_scan_vjp: checkpointed reverse scan), at D = N = 16 with
// general decays (D·N exponentials per token), L = 256 and 1024.
//
// Run: build/bin/bench_derivatives [Google Benchmark flags]
// Build with -DCMAKE_BUILD_TYPE=Release (see CMakeLists.txt). After the benchmark table the
// program prints, per L, the time of each and the ratios JVP/RHS (goal <= 2.5) and VJP/RHS
// (goal <= 3.5), re-timed in interleaved rounds (RHS, JVP, VJP, RHS, ...) and reported as
// the median ratio over the rounds, so that load coming and going on a shared machine hits
// all three alike; beside them the accuracy of the same derivatives: the dot-product
// identity <JVP v, w> = <v, VJP w> and the JVP against a central difference of the scan.
// Exit status 1 only if an accuracy check fails (timings depend on the machine and are
// only reported).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <Eigen/Core>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/scan_derivatives.hpp>
#include <ssmdyn/core/selective_scan.hpp>

#include "random_layer.hpp"

namespace {

constexpr Eigen::Index kD = 16, kN = 16;
constexpr std::uint32_t kSeed = 2024;

struct Problem {
    ssmdyn::S6Params<double> params;
    Eigen::MatrixXd X, V, W;  // tokens, a tangent direction, an output gradient (D×L each)
};

/// Seeded random layer (S_* and b_Δ entries N(0, 1/D), general decays uniform in [-2, -0.1])
/// and tokens, direction and output gradient with entries N(0, 1).
Problem make_problem(Eigen::Index L) {
    std::mt19937 rng(kSeed);
    Problem p;
    p.params = bench::random_layer(rng, kD, kN);
    p.X = bench::gaussian(rng, kD, L);
    p.V = bench::gaussian(rng, kD, L);
    p.W = bench::gaussian(rng, kD, L);
    return p;
}

/// The three computations, each writing into storage sized once.
struct Runner {
    explicit Runner(Eigen::Index L) : p(make_problem(L)), Y(kD, L), dY(kD, L), gX(kD, L) {}
    void rhs() {
        ssmdyn::selective_scan(p.params, p.X, Y);
        benchmark::DoNotOptimize(Y.data());
    }
    void jvp() {
        ssmdyn::selective_scan_jvp(p.params, p.X, p.V, dY);
        benchmark::DoNotOptimize(dY.data());
    }
    void vjp() {
        ssmdyn::selective_scan_vjp(p.params, p.X, p.W, gX, grads);
        benchmark::DoNotOptimize(gX.data());
        benchmark::DoNotOptimize(grads.A.data());
    }
    Problem p;
    Eigen::MatrixXd Y, dY, gX;
    ssmdyn::S6Gradients<double> grads;
};

template <void (Runner::*method)()>
void BM_run(benchmark::State& state) {
    Runner r(state.range(0));
    (r.*method)();  // sizes the thread-local scratch outside the timing
    for (auto _ : state) {
        (r.*method)();
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * state.range(0));
}
void BM_rhs(benchmark::State& state) { BM_run<&Runner::rhs>(state); }
void BM_jvp(benchmark::State& state) { BM_run<&Runner::jvp>(state); }
void BM_vjp(benchmark::State& state) { BM_run<&Runner::vjp>(state); }

BENCHMARK(BM_rhs)->Arg(256)->Arg(1024)->MinTime(0.25)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_jvp)->Arg(256)->Arg(1024)->MinTime(0.25)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_vjp)->Arg(256)->Arg(1024)->MinTime(0.25)->Unit(benchmark::kMicrosecond);

double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

struct Ratios {
    double rhs, jvp, vjp;  // median seconds per call
    double jvp_ratio, vjp_ratio;  // median over rounds of the per-round ratios
};

/// Interleaved timing: every round times `calls` calls of RHS, then of JVP, then of VJP.
Ratios paired_ratios(Eigen::Index L, int rounds = 25) {
    using clock = std::chrono::steady_clock;
    Runner r(L);
    const int calls = std::max<int>(1, int(4096 / L));
    auto seconds = [&](void (Runner::*method)()) {
        const auto start = clock::now();
        for (int i = 0; i < calls; ++i) (r.*method)();
        return std::chrono::duration<double>(clock::now() - start).count() / calls;
    };
    r.rhs(), r.jvp(), r.vjp();  // warm-up
    std::vector<double> t_rhs, t_jvp, t_vjp, q_jvp, q_vjp;
    for (int round = 0; round < rounds; ++round) {
        t_rhs.push_back(seconds(&Runner::rhs));
        t_jvp.push_back(seconds(&Runner::jvp));
        t_vjp.push_back(seconds(&Runner::vjp));
        q_jvp.push_back(t_jvp.back() / t_rhs.back());
        q_vjp.push_back(t_vjp.back() / t_rhs.back());
    }
    return {median(t_rhs), median(t_jvp), median(t_vjp), median(q_jvp), median(q_vjp)};
}

struct Accuracy {
    double dot;  // |<JVP v, w> - <v, VJP w>| / sum |terms|
    double fd;   // ||JVP v - central difference|| / ||central difference||
};

Accuracy accuracy(Eigen::Index L) {
    Runner r(L);
    r.jvp();
    r.vjp();
    const double lhs = (r.dY.array() * r.p.W.array()).sum(), rhs = (r.p.V.array() * r.gX.array()).sum();
    const double scale = (r.dY.array() * r.p.W.array()).abs().sum();
    const double eps = 1e-6;
    Eigen::MatrixXd plus(kD, L), minus(kD, L);
    ssmdyn::selective_scan(r.p.params, r.p.X + eps * r.p.V, plus);
    ssmdyn::selective_scan(r.p.params, r.p.X - eps * r.p.V, minus);
    const Eigen::MatrixXd fd = (plus - minus) / (2 * eps);
    return {std::abs(lhs - rhs) / scale, (r.dY - fd).norm() / fd.norm()};
}

const char* verdict(bool met) { return met ? "met" : "NOT MET"; }

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();

    std::printf("\nSummary: D = %d, N = %d, general decays; median real time per call over interleaved rounds\n",
                int(kD), int(kN));
    std::printf("%6s  %11s  %11s  %11s  %9s  %9s  %10s  %10s\n", "L", "RHS", "JVP", "VJP", "JVP/RHS", "VJP/RHS",
                "dot ident.", "JVP vs FD");
    bool accurate = true, fast = true;
    for (Eigen::Index L : {Eigen::Index(256), Eigen::Index(1024)}) {
        const Ratios t = paired_ratios(L);
        const Accuracy a = accuracy(L);
        accurate = accurate && a.dot <= 1e-12 && a.fd <= 1e-6;
        fast = fast && t.jvp_ratio <= 2.5 && t.vjp_ratio <= 3.5;
        std::printf("%6d  %8.1f us  %8.1f us  %8.1f us  %9.2f  %9.2f  %10.1e  %10.1e\n", int(L), t.rhs * 1e6,
                    t.jvp * 1e6, t.vjp * 1e6, t.jvp_ratio, t.vjp_ratio, a.dot, a.fd);
    }
    std::printf("\nspeed goals (JVP/RHS <= 2.5, VJP/RHS <= 3.5 at both L): %s\n", verdict(fast));
    std::printf("accuracy goals (dot identity <= 1e-12, JVP vs FD <= 1e-6): %s\n", verdict(accurate));
    return accurate ? 0 : 1;
}
