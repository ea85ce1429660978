#pragma once
/// \file phase_diagram.hpp
/// The 1-D phase diagram over a (μ, s) grid: each cell classified by the theorem and by
/// simulation, the cells integrated in parallel (parallel_for).

#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/parallel_for.hpp"
#include "classify.hpp"
#include "../core/params.hpp"
#include "rates.hpp"
#include "regime.hpp"
#include "../integrate/simulate.hpp"
#include "../core/system.hpp"

namespace ssmdyn {

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
