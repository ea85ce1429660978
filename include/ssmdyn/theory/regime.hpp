#pragma once
/// \file regime.hpp
/// The vocabulary of the paper's theorems: what the tokens do as t grows.

#include <string>

#include "../core/detail/enum_names.hpp"

namespace ssmdyn {

/// What a system does (predicted by classify(), observed by observe()).
enum class Regime {
    Convergence,     ///< every token tends to 0 (rate t^{-1/2} in the 1-D theorem)
    SlowDivergence,  ///< every moving token tends to ±∞ without blowing up
    FastDivergence,  ///< some token reaches infinity in finite time
    Stationary,      ///< nothing moves
    Undetermined     ///< the theorems do not decide (or the observation is inconclusive)
};

/// What one token does.
enum class TokenFate {
    StaysAtZero,  ///< x_l(0) = 0: it stays there
    Stays,        ///< the layer is zero (μ = 0): nothing moves
    Converges,    ///< |x_l| decreases to 0
    Grows,        ///< |x_l| increases; whether it blows up is not decided
    DivergesSlowly,  ///< |x_l| → ∞ without blowing up
    BlowsUp,      ///< reaches infinity in finite time on its own (s·x_l(0) > 0 or s = 0)
    Dragged,      ///< dragged to infinity no later than an earlier token that blows up
    Undetermined  ///< not decided by the theory
};

/// "convergence", "slow_divergence", "fast_divergence", "stationary", "undetermined".
inline const char* to_string(Regime r) {
    switch (r) {
        case Regime::Convergence: return "convergence";
        case Regime::SlowDivergence: return "slow_divergence";
        case Regime::FastDivergence: return "fast_divergence";
        case Regime::Stationary: return "stationary";
        case Regime::Undetermined: return "undetermined";
    }
    return "unknown";
}

/// "stays_at_zero", "stays", "converges", "grows", "diverges_slowly", "blows_up",
/// "dragged_to_infinity", "undetermined".
inline const char* to_string(TokenFate f) {
    switch (f) {
        case TokenFate::StaysAtZero: return "stays_at_zero";
        case TokenFate::Stays: return "stays";
        case TokenFate::Converges: return "converges";
        case TokenFate::Grows: return "grows";
        case TokenFate::DivergesSlowly: return "diverges_slowly";
        case TokenFate::BlowsUp: return "blows_up";
        case TokenFate::Dragged: return "dragged_to_infinity";
        case TokenFate::Undetermined: return "undetermined";
    }
    return "unknown";
}

/// The Regime called `name` (as printed by to_string); throws std::invalid_argument.
inline Regime parse_regime(const std::string& name) {
    static constexpr Regime all[] = {Regime::Convergence, Regime::SlowDivergence, Regime::FastDivergence,
                                     Regime::Stationary, Regime::Undetermined};
    return detail::parse_enum(name, all, "regime");
}

/// The TokenFate called `name` (as printed by to_string); throws std::invalid_argument.
inline TokenFate parse_token_fate(const std::string& name) {
    static constexpr TokenFate all[] = {TokenFate::StaysAtZero, TokenFate::Stays,   TokenFate::Converges,
                                        TokenFate::Grows,       TokenFate::DivergesSlowly, TokenFate::BlowsUp,
                                        TokenFate::Dragged,     TokenFate::Undetermined};
    return detail::parse_enum(name, all, "token fate");
}

}  // namespace ssmdyn
