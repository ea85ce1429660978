// The whole Mamba-1 forward pass at the shapes of mamba-130m (24 layers, d_model 768,
// d_inner 1536, d_state 16, d_conv 4, dt_rank 48; a vocabulary of 1024 here, since the
// head is not what is measured) on 1024 tokens, random weights initialised as mamba_ssm
// does, in double and float: milliseconds per token (the counter "ms_per_token").
//
//   build/bin/bench_mamba_forward                      (both precisions, L = 1024)
//   build/bin/bench_mamba_forward --benchmark_filter=float
//
// One forward is 2·L·(params) plus the scans: about 0.27 TFLOP at L = 1024 in this form,
// which still multiplies by the dense d_inner × d_inner S_Δ (issue 15 factors it).

#include <vector>

#include <benchmark/benchmark.h>

#include <ssmdyn/core/mamba_block.hpp>

namespace {

ssmdyn::MambaConfig mamba_130m_shapes(Eigen::Index layers) {
    ssmdyn::MambaConfig c;
    c.n_layers = layers;
    c.d_model = 768;
    c.d_inner = 1536;
    c.d_state = 16;
    c.d_conv = 4;
    c.dt_rank = 48;
    c.vocab_size = 1024;
    return c;
}

template <typename Scalar>
void forward(benchmark::State& state) {
    const auto layers = static_cast<Eigen::Index>(state.range(0));
    const auto L = static_cast<std::int64_t>(state.range(1));
    static const ssmdyn::MambaModel<double> model = ssmdyn::mamba_init(mamba_130m_shapes(24), 1);
    ssmdyn::MambaModel<Scalar> m = model.template cast<Scalar>();
    m.layers.resize(static_cast<std::size_t>(layers));
    m.config.n_layers = layers;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(L));
    for (std::int64_t l = 0; l < L; ++l) ids[static_cast<std::size_t>(l)] = (l * 7919) % 1024;
    for (auto _ : state) benchmark::DoNotOptimize(ssmdyn::mamba_forward(m, ids));
    state.counters["ms_per_token"] = benchmark::Counter(
        double(L) / 1e3, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

}  // namespace

BENCHMARK_TEMPLATE(forward, double)->Name("forward/double")->Args({24, 1024})->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_TEMPLATE(forward, float)->Name("forward/float")->Args({24, 1024})->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK_MAIN();
