// The gradient of a loss of the final tokens with respect to the initial ones, by the
// discrete adjoint (adjoint_gradient: one forward run with checkpoints, one backward sweep)
// against central finite differences of simulate() (two runs per entry of X(0): 2·D·L
// runs), at D = N = 16, L = 256 (4096 inputs), general decays, a bounded system
// (μ = −S_Cᵀ S_C), t_end = 2, dopri5 at rtol 1e-8, loss ½‖X(T)‖².
//
// Run: build/bin/bench_adjoint [Google Benchmark flags]
// Build with -DCMAKE_BUILD_TYPE=Release (see CMakeLists.txt). After the benchmark table the
// program prints the work of both (steps, right-hand sides, VJPs, checkpoint memory), their
// times and the speed-up. The 8192 runs of the full finite-difference gradient would take
// minutes, so a sample of directions spread over the tokens and channels is timed and the
// time per direction extrapolated to all D·L; the rounds interleave the adjoint and the
// finite differences, and the medians are reported, so that load coming and going on a
// shared machine hits both alike. The same sample gives the agreement: the adjoint against
// the two-point central difference that was timed, and against a four-point one (step 2ε
// as well, truncation O(ε⁴)) that separates the finite differences' own error from the
// adjoint's. Exit status 1 only if the agreement check fails (timings depend on the machine
// and are only reported).

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
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/adjoint.hpp>
#include <ssmdyn/integrate/simulate.hpp>

namespace {

constexpr Eigen::Index kD = 16, kN = 16, kL = 256;
constexpr double kTEnd = 2.0;
constexpr std::uint32_t kSeed = 2024;
using State = ssmdyn::StateVector<double>;
using System = ssmdyn::SelectiveSystem<double>;

struct Problem {
    System system;
    State x0;
    ssmdyn::AdjointOptions<double> options;
};

/// Seeded random layer (S_* and b_Δ entries N(0, 1/D), general decays uniform in
/// [-2, -0.1], S_B = −S_C so that μ is negative semi-definite) and tokens N(0, 1).
Problem make_problem() {
    std::mt19937 rng(kSeed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    std::uniform_real_distribution<double> decay(0.1, 2.0);
    auto random = [&](Eigen::Index rows, Eigen::Index cols, double scale) {
        Eigen::MatrixXd m(rows, cols);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = scale * gauss(rng);
        return m;
    };
    const double s = 1.0 / std::sqrt(double(kD));
    ssmdyn::S6Params<double> p;
    p.S_C = random(kN, kD, s);
    p.S_B = -p.S_C;
    p.S_Delta = random(kD, kD, s);
    p.delta_bias = random(kD, 1, s);
    p.A.resize(kD, kN);
    for (Eigen::Index i = 0; i < p.A.size(); ++i) p.A(i) = -decay(rng);
    State x0 = ssmdyn::to_state(random(kD, kL, 1.0));
    ssmdyn::AdjointOptions<double> options;
    options.stepper = ssmdyn::Stepper::Dopri5;
    options.rtol = 1e-8;
    options.atol = 1e-10;
    options.record = ssmdyn::Record::None;  // both sides keep only what they need
    return {System(std::move(p)), std::move(x0), options};
}

/// ½‖X(T)‖²: its gradient at X(T) is X(T).
double loss(const Problem& p, const State& x0) {
    const auto r = ssmdyn::simulate(p.system, x0, kTEnd, p.options);
    return 0.5 * r.x_final.squaredNorm();
}

ssmdyn::AdjointResult<double> adjoint(const Problem& p) {
    return ssmdyn::adjoint_gradient(p.system, p.x0, kTEnd, [](const State& x) { return x; }, p.options);
}

void BM_simulate(benchmark::State& state) {
    const Problem p = make_problem();
    for (auto _ : state) benchmark::DoNotOptimize(loss(p, p.x0));
}
void BM_adjoint_gradient(benchmark::State& state) {
    const Problem p = make_problem();
    for (auto _ : state) {
        const auto r = adjoint(p);
        benchmark::DoNotOptimize(r.x0.data());
    }
}
BENCHMARK(BM_simulate)->MinTime(0.5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adjoint_gradient)->MinTime(0.5)->Unit(benchmark::kMillisecond);

double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();

    const Problem p = make_problem();
    const Eigen::Index n = p.x0.size();
    const auto reference = adjoint(p);
    if (reference.forward.status != ssmdyn::Status::Completed) {
        std::printf("the forward run did not complete: %s\n", reference.forward.message.c_str());
        return 1;
    }

    // The sampled directions: entries spread evenly over the D·L inputs, offset so that they
    // visit different channels.
    constexpr int rounds = 5, per_round = 8, sampled = rounds * per_round;
    std::vector<Eigen::Index> entries;
    for (int k = 0; k < sampled; ++k) entries.push_back((k * n) / sampled + k % kD);
    const double eps = 1e-4;
    std::vector<double> fd2(sampled), fd4(sampled), t_adjoint, t_direction;
    auto shifted = [&](Eigen::Index i, double d) {
        State x = p.x0;
        x(i) += d;
        return loss(p, x);
    };
    for (int round = 0; round < rounds; ++round) {
        auto start = std::chrono::steady_clock::now();
        const auto r = adjoint(p);
        benchmark::DoNotOptimize(r.x0.data());
        t_adjoint.push_back(seconds_since(start));
        start = std::chrono::steady_clock::now();
        for (int k = round * per_round; k < (round + 1) * per_round; ++k) {
            const Eigen::Index i = entries[std::size_t(k)];
            fd2[std::size_t(k)] = (shifted(i, eps) - shifted(i, -eps)) / (2 * eps);
        }
        t_direction.push_back(seconds_since(start) / per_round);
    }
    for (int k = 0; k < sampled; ++k) {  // untimed: the four-point difference, for the agreement
        const Eigen::Index i = entries[std::size_t(k)];
        const double wide = (shifted(i, 2 * eps) - shifted(i, -2 * eps)) / (4 * eps);
        fd4[std::size_t(k)] = (4 * fd2[std::size_t(k)] - wide) / 3;
    }
    double err2 = 0, err4 = 0;
    const double scale = reference.x0.cwiseAbs().maxCoeff();
    for (int k = 0; k < sampled; ++k) {
        const double a = reference.x0(entries[std::size_t(k)]);
        err2 = std::max(err2, std::abs(a - fd2[std::size_t(k)]));
        err4 = std::max(err4, std::abs(a - fd4[std::size_t(k)]));
    }
    err2 /= scale;
    err4 /= scale;

    const double adjoint_s = median(t_adjoint), direction_s = median(t_direction);
    const double fd_s = direction_s * double(n), speedup = fd_s / adjoint_s;
    const auto& f = reference.forward;
    std::printf("\nSummary: D = %d, N = %d, L = %d (%d inputs), general decays, mu = -S_C^T S_C, t_end = %g, "
                "dopri5 rtol 1e-8, loss |X(T)|^2/2\n",
                int(kD), int(kN), int(kL), int(n), kTEnd);
    std::printf("forward run:     %zu steps (%zu rejected), %zu right-hand sides\n", f.steps, f.rejected_steps,
                f.rhs_evaluations);
    std::printf("backward sweep:  %zu right-hand sides, %zu VJPs; checkpoints %zu states, %.1f MB\n",
                reference.backward_rhs_evaluations, reference.backward_vjp_evaluations, reference.checkpoints,
                double(reference.checkpoint_bytes) / 1e6);
    std::printf("adjoint gradient (dX(0) and every parameter):    %10.3f s  (median of %d)\n", adjoint_s, rounds);
    std::printf("finite differences, one direction (2 runs):      %10.3f s  (median of %d rounds of %d)\n",
                direction_s, rounds, per_round);
    std::printf("finite differences, all %d directions (extrapolated from %d): %10.1f s\n", int(n), sampled, fd_s);
    std::printf("speed-up of the adjoint: %.0fx (goal >= 100x: %s)\n", speedup, speedup >= 100 ? "met" : "NOT MET");
    std::printf("agreement on the %d sampled entries, max |adjoint - FD| / max |gradient|:\n", sampled);
    std::printf("  two-point central difference (eps = %g, the one timed): %.1e\n", eps, err2);
    std::printf("  four-point central difference (eps, 2 eps):             %.1e\n", err4);
    const bool accurate = err4 <= 1e-6;
    std::printf("accuracy goal (four-point FD within 1e-6): %s\n", accurate ? "met" : "NOT MET");
    return accurate ? 0 : 1;
}
