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

#include "../core/memory_limit.hpp"
#include "../core/parallel_for.hpp"
#include "classify.hpp"
#include "../core/params.hpp"
#include "rates.hpp"
#include "regime.hpp"
#include "../integrate/simulate.hpp"
#include "../core/params.hpp"
#include "../core/system.hpp"

namespace ssmdyn {

/// One cell of the 1-D phase diagram.
struct PhaseCell {
    double mu = 0, s = 0;
    Regime predicted = Regime::Undetermined;  ///< by classify()
    Regime observed = Regime::Undetermined;   ///< by simulate() up to t_end
    std::optional<double> t_blowup;           ///< when the simulation blew up
};

/// The grid of a phase diagram: every (μ, s) of mu × s, in row-major order (cell
/// k = i·|s| + j is (mu[i], s[j])), with the decay a and bias b of `fixed`.
struct PhaseGrid {
    std::vector<double> mu, s;
    /// a and b of every cell (its mu and s are not used).
    OneDimensional<double> fixed;

    /// Number of cells, |mu|·|s|.
    std::size_t size() const { return mu.size() * s.size(); }
    /// The system of cell k: `fixed` with μ = mu[k / |s|] and s = s[k % |s|].
    OneDimensional<double> cell(std::size_t k) const {
        OneDimensional<double> system = fixed;
        system.mu = mu[k / s.size()];
        system.s = s[k % s.size()];
        return system;
    }
};

/// One cell of the 1-D phase diagram: the 1-D system with the given tokens (a vector of
/// L numbers), predicted by the theorem and observed by integrating to t_end
/// (options.record is ignored). A template only so that simulate() and its steppers are
/// compiled where a phase diagram is used, not wherever this header is included.
template <typename Derived>
PhaseCell phase_cell(const OneDimensional<double>& system, const Eigen::MatrixBase<Derived>& tokens, double t_end,
                     SimulateOptions<double> options = {}) {
    PhaseCell c;
    c.mu = system.mu;
    c.s = system.s;
    const auto params = S6Params<double>::one_dimensional(system);
    c.predicted = classify(params, tokens).regime;
    options.record = Record::None;
    const auto r = simulate(SelectiveSystem<double>(params), tokens, t_end, options);
    c.observed = observed_regime(r);
    c.t_blowup = r.t_blowup;
    return c;
}

/// The phase diagram: every cell of `grid` by phase_cell, for fixed tokens, in parallel
/// (cells in grid order whatever the thread count). A cell that would blow up after
/// t_end is observed as slow divergence: choose t_end beyond the blow-up times of interest.
/// \throws std::invalid_argument for an empty grid, or one whose cells need more than
///   memory_limit() (core/memory_limit.hpp), checked before anything is allocated
template <typename Derived>
std::vector<PhaseCell> phase_diagram(const PhaseGrid& grid, const Eigen::MatrixBase<Derived>& tokens, double t_end,
                                     const SimulateOptions<double>& options = {}, int threads = 0,
                                     const ProgressCallback& progress = {}) {
    if (grid.mu.empty() || grid.s.empty()) throw std::invalid_argument("the mu and s grids must not be empty");
    check_allocation(checked_bytes(grid.mu.size(), grid.s.size(), sizeof(PhaseCell)),
                     "the phase diagram's " + std::to_string(grid.mu.size()) + " x " + std::to_string(grid.s.size()) +
                         " grid of cells");
    std::vector<PhaseCell> cells(grid.size());
    parallel_for(
        cells.size(), [&](std::size_t k) { cells[k] = phase_cell(grid.cell(k), tokens, t_end, options); }, threads,
        progress);
    return cells;
}

}  // namespace ssmdyn
