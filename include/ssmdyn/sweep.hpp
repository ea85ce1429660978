#pragma once
/// \file sweep.hpp
/// Many independent integrations at once: a parallel loop (OpenMP when the build has it,
/// serial otherwise) and the 1-D phase diagram over a (μ, s) grid, each cell classified
/// by the theorem and by simulation.

#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "classify.hpp"
#include "params.hpp"
#include "rates.hpp"
#include "regime.hpp"
#include "simulate.hpp"
#include "system.hpp"

namespace ssmdyn {

/// Progress callback of the sweeps: progress(done, total), called once per finished item
/// from whichever thread finished it (one call at a time, `done` strictly increasing).
using ProgressCallback = std::function<void(std::size_t done, std::size_t total)>;

/// Calls f(i) for i = 0 … n−1 on up to `threads` threads (0: OpenMP's default; without
/// OpenMP, serially). f must be safe to call concurrently for different i; results should
/// be written to slot i of a pre-sized container, so the output does not depend on the
/// thread count. An exception thrown by f is rethrown here (the first one). `progress`,
/// if set, hears of every finished item (see ProgressCallback).
template <typename F>
void parallel_for(std::size_t n, F f, int threads = 0, const ProgressCallback& progress = {}) {
    std::exception_ptr error;
    std::size_t done = 0;
    auto run = [&](std::size_t i) {
        std::exception_ptr failure;
        try {
            f(i);
        } catch (...) {
            failure = std::current_exception();
        }
        // One critical section (a no-op without OpenMP) for the shared error and count;
        // nothing may throw out of it.
#ifdef _OPENMP
#pragma omp critical(ssmdyn_parallel_for)
#endif
        {
            if (failure && !error) error = failure;
            try {
                if (progress) progress(++done, n);
            } catch (...) {
                if (!error) error = std::current_exception();
            }
        }
    };
#ifdef _OPENMP
    const int team = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic) num_threads(team)
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) run(static_cast<std::size_t>(i));
#else
    (void)threads;
    for (std::size_t i = 0; i < n; ++i) run(i);
#endif
    if (error) std::rethrow_exception(error);
}

/// One cell of the 1-D phase diagram.
struct PhaseCell {
    double mu = 0, s = 0;
    Regime predicted = Regime::Undetermined;  ///< by classify()
    Regime observed = Regime::Undetermined;   ///< by simulate() up to t_end
    std::optional<double> t_blowup;           ///< when the simulation blew up
};

/// One cell of the 1-D phase diagram: the system dx_l/dt = μ x_l Σ_j x_j² Δ(x_j) e^{−a Σ Δ}
/// with Δ(u) = softplus(s u + b) and the given tokens, predicted by the theorem and
/// observed by integrating to t_end (options.record is ignored).
inline PhaseCell phase_cell(double mu, double s, const VectorX<double>& tokens, double a, double b, double t_end,
                            SimulateOptions<double> options = {}) {
    PhaseCell c;
    c.mu = mu;
    c.s = s;
    const auto params = S6Params<double>::one_dimensional(mu, s, a, b);
    c.predicted = classify(params, tokens).regime;
    options.record = Record::None;
    const auto r = simulate(SelectiveSystem<double>(params), tokens, t_end, options);
    c.observed = observed_regime(r, tokens, 1);
    c.t_blowup = r.t_blowup;
    return c;
}

/// The phase diagram on the grid mu × s (row-major: cell i·|s| + j is (mu[i], s[j])), for
/// fixed tokens, every cell by phase_cell, in parallel. A cell that would blow up after
/// t_end is observed as slow divergence: choose t_end beyond the blow-up times of interest.
inline std::vector<PhaseCell> phase_diagram(const std::vector<double>& mu, const std::vector<double>& s,
                                            const VectorX<double>& tokens, double a, double b, double t_end,
                                            const SimulateOptions<double>& options = {}, int threads = 0,
                                            const ProgressCallback& progress = {}) {
    if (mu.empty() || s.empty()) throw std::invalid_argument("the mu and s grids must not be empty");
    std::vector<PhaseCell> cells(mu.size() * s.size());
    parallel_for(
        cells.size(),
        [&](std::size_t k) { cells[k] = phase_cell(mu[k / s.size()], s[k % s.size()], tokens, a, b, t_end, options); },
        threads, progress);
    return cells;
}

}  // namespace ssmdyn
