// Cost of the packet exponential of the scan's hot loop: Eigen's pexp against
// ssmdyn::detail::pexp_fast (core/detail/fast_exp.hpp), in double and float, over an array
// of 4096 inputs uniform in [-30, 0] (the range of Δ·A in the scan), loaded and stored a
// packet at a time with the widest packet of this build (AVX-512 with -march=native, SSE2
// without). Also: both on inputs in [-1000, 0], where with SSE/AVX almost every packet
// has a lane below pexp_fast's fast range and takes its exact-scaling path; and the C
// library's scalar exp.
//
// Run: build/bin/bench_exp [Google Benchmark flags, e.g. --benchmark_repetitions=3]
// The counter time/elem is the time per exponential (throughput: the 4096 are independent).

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>

#include <ssmdyn/core/detail/fast_exp.hpp>

namespace {

constexpr std::size_t kSize = 4096;

template <typename S>
std::vector<S> inputs(S lo, S hi) {
    std::mt19937 rng(12345);
    std::uniform_real_distribution<S> dist(lo, hi);
    std::vector<S> x(kSize);
    for (S& v : x) v = dist(rng);
    return x;
}

void set_counters(benchmark::State& state) {
    using benchmark::Counter;
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(kSize));
    state.counters["time/elem"] = Counter(double(kSize), Counter::kIsIterationInvariantRate | Counter::kInvert);
}

enum class Exp { Eigen, Fast };

#if SSMDYN_FAST_EXP_PACKETS
template <typename S, Exp which>
void BM_packet_exp(benchmark::State& state) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<S>::type;
    constexpr std::size_t size = ei::packet_traits<S>::size;
    const std::vector<S> x = state.range(0) == 0 ? inputs<S>(S(-30), S(0)) : inputs<S>(S(-1000), S(0));
    std::vector<S> y(kSize);
    for (auto _ : state) {
        for (std::size_t i = 0; i < kSize; i += size) {
            const Packet p = ei::ploadu<Packet>(x.data() + i);
            if constexpr (which == Exp::Eigen) ei::pstoreu(y.data() + i, ei::pexp(p));
            else ei::pstoreu(y.data() + i, ssmdyn::detail::pexp_fast(p));
        }
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    set_counters(state);
    state.SetLabel(std::to_string(size) + " lanes");
}
#endif

template <typename S>
void BM_std_exp(benchmark::State& state) {
    const std::vector<S> x = inputs<S>(S(-30), S(0));
    std::vector<S> y(kSize);
    for (auto _ : state) {
        for (std::size_t i = 0; i < kSize; ++i) y[i] = std::exp(x[i]);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    set_counters(state);
}

}  // namespace

// Argument 0: inputs in [-30, 0]; 1: inputs in [-1000, 0], 4% of which have subnormal
// results (a microcode assist each: the time is mostly those) and 25% the result 0.
#if SSMDYN_FAST_EXP_PACKETS
BENCHMARK_TEMPLATE(BM_packet_exp, double, Exp::Eigen)->Name("eigen_pexp<double>")->Arg(0)->Arg(1);
BENCHMARK_TEMPLATE(BM_packet_exp, double, Exp::Fast)->Name("pexp_fast<double>")->Arg(0)->Arg(1);
BENCHMARK_TEMPLATE(BM_packet_exp, float, Exp::Eigen)->Name("eigen_pexp<float>")->Arg(0)->Arg(1);
BENCHMARK_TEMPLATE(BM_packet_exp, float, Exp::Fast)->Name("pexp_fast<float>")->Arg(0)->Arg(1);
#endif
BENCHMARK_TEMPLATE(BM_std_exp, double)->Name("std_exp<double>");
BENCHMARK_TEMPLATE(BM_std_exp, float)->Name("std_exp<float>");

BENCHMARK_MAIN();
