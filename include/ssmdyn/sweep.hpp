#pragma once
/// \file sweep.hpp
/// Many independent integrations at once: a parallel loop (OpenMP when the build has it,
/// serial otherwise) and the 1-D phase diagram over a (μ, s) grid, each cell classified
/// by the theorem and by simulation.

#include <cstddef>
#include <exception>
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

/// Calls f(i) for i = 0 … n−1 on up to `threads` threads (0: OpenMP's default; without
/// OpenMP, serially). f must be safe to call concurrently for different i; results should
/// be written to slot i of a pre-sized container, so the output does not depend on the
/// thread count. An exception thrown by f is rethrown here (the first one).
template <typename F>
void parallel_for(std::size_t n, F f, int threads = 0) {
    std::exception_ptr error;
#ifdef _OPENMP
    const int team = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic) num_threads(team)
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) {
        try {
            f(static_cast<std::size_t>(i));
        } catch (...) {
#pragma omp critical(ssmdyn_parallel_for_error)
            if (!error) error = std::current_exception();
        }
    }
#else
    (void)threads;
    for (std::size_t i = 0; i < n; ++i) {
        try {
            f(i);
        } catch (...) {
            if (!error) error = std::current_exception();
        }
    }
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

/// The 1-D system dx_l/dt = μ x_l Σ_j x_j² Δ(x_j) e^{−a Σ Δ} with Δ(u) = softplus(s u + b)
/// on the grid mu × s (row-major: cell i·|s| + j is (mu[i], s[j])), for fixed tokens:
/// each cell predicted by the theorem and observed by integrating to t_end. A cell that
/// would blow up after t_end is observed as slow divergence: choose t_end beyond the
/// blow-up times of interest.
inline std::vector<PhaseCell> phase_diagram(const std::vector<double>& mu, const std::vector<double>& s,
                                            const VectorX<double>& tokens, double a, double b, double t_end,
                                            const SimulateOptions<double>& options = {}, int threads = 0) {
    if (mu.empty() || s.empty()) throw std::invalid_argument("the mu and s grids must not be empty");
    std::vector<PhaseCell> cells(mu.size() * s.size());
    SimulateOptions<double> o = options;
    o.record = Record::None;
    parallel_for(
        cells.size(),
        [&](std::size_t k) {
            PhaseCell& c = cells[k];
            c.mu = mu[k / s.size()];
            c.s = s[k % s.size()];
            const auto params = S6Params<double>::one_dimensional(c.mu, c.s, a, b);
            c.predicted = classify(params, tokens).regime;
            const auto r = simulate(SelectiveSystem<double>(params), tokens, t_end, o);
            c.observed = observed_regime(r, tokens, 1);
            c.t_blowup = r.t_blowup;
        },
        threads);
    return cells;
}

}  // namespace ssmdyn
