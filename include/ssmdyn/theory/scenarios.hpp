#pragma once
/// \file scenarios.hpp
/// The paper's three one-dimensional scenarios (DESIGN.md §2), one per regime: the
/// built-in default of `ssmdyn demo` and of the example `regimes`.

#include <vector>

#include "../core/params.hpp"
#include "regime.hpp"

namespace ssmdyn {

/// A 1-D system with its initial tokens and the regime the theorem predicts for it.
struct Scenario {
    /// The regime's name (to_string(regime)); also the base name of files written for it.
    const char* name;
    OneDimensional<double> system;
    std::vector<double> tokens;
    Regime regime;
};

/// Convergence (μ = −1), slow divergence (μ = 1, every s·x_l(0) < 0) and fast divergence
/// (μ = 1, s·x_1(0) > 0), with s = a = 1, b = 0 and three tokens each.
inline std::vector<Scenario> paper_scenarios() {
    return {
        {"convergence", {-1.0, 1.0, 1.0, 0.0}, {1.0, -0.5, 2.0}, Regime::Convergence},
        {"slow_divergence", {1.0, 1.0, 1.0, 0.0}, {-1.0, -0.5, -2.0}, Regime::SlowDivergence},
        {"fast_divergence", {1.0, 1.0, 1.0, 0.0}, {1.0, -0.5, -2.0}, Regime::FastDivergence},
    };
}

}  // namespace ssmdyn
