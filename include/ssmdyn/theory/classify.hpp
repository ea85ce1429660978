#pragma once
/// \file classify.hpp
/// Predict what the tokens do from the parameters and X(0), by the paper's theorems
/// (DESIGN.md §2) where their hypotheses hold, and say "undetermined" where they do not.

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>

#include "../core/detail/enum_names.hpp"
#include "blowup_time.hpp"
#include "../core/params.hpp"
#include "regime.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// Sign structure of the symmetric part of μ, the label of the paper's experiments.
enum class MuScenario {
    PositiveDefinite,
    NegativeDefinite,
    PositiveSemidefinite,
    NegativeSemidefinite,
    Indefinite,
    Zero
};

/// "positive_definite", "negative_definite", "positive_semidefinite",
/// "negative_semidefinite", "indefinite", "zero".
inline const char* to_string(MuScenario s) {
    switch (s) {
        case MuScenario::PositiveDefinite: return "positive_definite";
        case MuScenario::NegativeDefinite: return "negative_definite";
        case MuScenario::PositiveSemidefinite: return "positive_semidefinite";
        case MuScenario::NegativeSemidefinite: return "negative_semidefinite";
        case MuScenario::Indefinite: return "indefinite";
        case MuScenario::Zero: return "zero";
    }
    return "unknown";
}

/// The MuScenario called `name` (as printed by to_string); throws std::invalid_argument.
inline MuScenario parse_mu_scenario(const std::string& name) {
    static constexpr MuScenario all[] = {MuScenario::PositiveDefinite,     MuScenario::NegativeDefinite,
                                         MuScenario::PositiveSemidefinite, MuScenario::NegativeSemidefinite,
                                         MuScenario::Indefinite,           MuScenario::Zero};
    return detail::parse_enum(name, all, "mu scenario");
}

/// The prediction for one token.
struct TokenPrediction {
    Eigen::Index index = 0;  ///< 0-based token index (token x_{index+1} of the paper)
    TokenFate fate = TokenFate::Undetermined;
};

/// What classify() predicts.
template <typename Scalar = double>
struct Classification {
    Regime regime = Regime::Undetermined;
    /// True when one of the paper's theorems (D = 1, equal decays) decides the regime.
    bool theorem_applies = false;
    /// Why, in words: the hypothesis used or the one that fails.
    std::string reason;
    /// μ = S_Cᵀ S_B, the eigenvalues of (μ + μᵀ)/2 in increasing order, and their sign label.
    MatrixX<Scalar> mu;
    VectorX<Scalar> mu_sym_eigenvalues;
    MuScenario scenario = MuScenario::Zero;
    /// T* of token 1 by quadrature when it blows up (D = 1 only).
    std::optional<Scalar> first_token_blowup_time;
    /// One prediction per token, in order.
    std::vector<TokenPrediction> tokens;
};

namespace detail {

template <typename Scalar>
MuScenario mu_scenario(const VectorX<Scalar>& eig) {
    const Scalar scale = eig.cwiseAbs().maxCoeff();
    const Scalar tol = Scalar(64) * std::numeric_limits<Scalar>::epsilon() * scale;
    const bool pos = eig.maxCoeff() > tol, neg = eig.minCoeff() < -tol;
    const bool zero = (eig.array().abs() <= tol).any();
    if (scale == 0) return MuScenario::Zero;
    if (pos && neg) return MuScenario::Indefinite;
    if (pos) return zero ? MuScenario::PositiveSemidefinite : MuScenario::PositiveDefinite;
    if (neg) return zero ? MuScenario::NegativeSemidefinite : MuScenario::NegativeDefinite;
    return MuScenario::Zero;
}

/// Fate of token 1 in 1-D: its equation dx/dt = μ x³ Δ(x) holds for any decays.
template <typename Scalar>
TokenFate first_token_fate(Scalar mu, Scalar s, Scalar x1) {
    if (x1 == 0) return TokenFate::StaysAtZero;
    if (mu < 0) return TokenFate::Converges;
    if (mu == 0) return TokenFate::Stays;
    return s * x1 >= 0 ? TokenFate::BlowsUp : TokenFate::DivergesSlowly;
}

/// The 1-D fates when the kernel is positive (μ > 0, every μ_n ≥ 0): tokens before the
/// first self-blowing token (s·x_l > 0, or s = 0) form a slowly diverging prefix, since a
/// token sees only the tokens before it; that token blows up; later tokens either blow
/// up on their own or are dragged along (the coupling to a blowing-up token integrates
/// to infinity). `slow_known` says whether slow divergence is a theorem (equal decays).
template <typename Scalar>
void growing_fates(const VectorX<Scalar>& x, Scalar s, bool slow_known,
                   std::vector<TokenPrediction>& out) {
    bool blown = false;
    for (Eigen::Index l = 0; l < x.size(); ++l) {
        TokenFate f;
        if (x(l) == 0)
            f = TokenFate::StaysAtZero;
        else if (s * x(l) >= 0)
            f = TokenFate::BlowsUp;
        else if (blown)
            f = TokenFate::Dragged;
        else
            f = (slow_known || l == 0) ? TokenFate::DivergesSlowly : TokenFate::Grows;
        blown = blown || f == TokenFate::BlowsUp;
        out.push_back({l, f});
    }
}

}  // namespace detail

/// Predict the regime of dX/dt = S6(X) from X(0), with softplus step sizes.
///
/// One-dimensional tokens with equal decays (D = 1, A = −a·1): the paper's theorems.
/// μ < 0: convergence; μ > 0 with s·x_l(0) < 0 for every l: slow divergence; μ > 0 with
/// s·x_l(0) ≥ 0 for some l (s = 0 included): fast divergence; μ = 0: stationary.
/// Tokens at 0 stay there and are left out. Unequal decays: the products μ_n =
/// S_C[n]·S_B[n] decide whether every kernel keeps one sign; if they all do, the
/// monotonicity argument still gives convergence (μ_n ≤ 0) or a blow-up (μ_n ≥ 0 and a
/// self-blowing token), otherwise the regime is undetermined. D > 1: undetermined, with
/// the spectrum of the symmetric part of μ and what it implies for token 1.
///
/// \param params the layer (validated here)
/// \param tokens the initial tokens X(0), D×L or flat (see to_token_matrix; validated here)
template <typename Scalar, typename Derived>
Classification<Scalar> classify(const S6Params<Scalar>& params, const Eigen::MatrixBase<Derived>& tokens) {
    params.validate();
    const StateVector<Scalar> x0 = to_state(tokens, params.dim());
    validate_tokens(params, x0);
    Classification<Scalar> c;
    c.mu = params.mu();
    const MatrixX<Scalar> sym = (c.mu + c.mu.transpose()) / Scalar(2);
    c.mu_sym_eigenvalues = Eigen::SelfAdjointEigenSolver<MatrixX<Scalar>>(sym, Eigen::EigenvaluesOnly)
                               .eigenvalues();
    c.scenario = detail::mu_scenario(c.mu_sym_eigenvalues);
    const Eigen::Index D = params.dim(), N = params.state_dim(), L = x0.size() / D;

    // A zero kernel (every n has S_B[n] = 0 or S_C[n] = 0): S6(X) = 0 for every X.
    bool zero_kernel = true;
    for (Eigen::Index n = 0; n < N; ++n)
        zero_kernel = zero_kernel && (params.S_B.row(n).isZero(0) || params.S_C.row(n).isZero(0));
    const bool all_zero = x0.isZero(0);
    if (zero_kernel || all_zero) {
        c.regime = Regime::Stationary;
        c.theorem_applies = true;
        c.reason = zero_kernel ? "every S_C[n]·S_B[n] term vanishes: the layer is zero"
                               : "every token is 0 and stays there";
        for (Eigen::Index l = 0; l < L; ++l)
            c.tokens.push_back({l, all_zero ? TokenFate::StaysAtZero : TokenFate::Stays});
        return c;
    }

    if (D > 1) {
        c.regime = Regime::Undetermined;
        c.reason = std::string("D > 1: no theorem; the symmetric part of mu is ") +
                   to_string(c.scenario) + ", and d|x_1|^2/dt = 2 (x_1' mu x_1) sum_d Delta_1^d (x_1^d)^2";
        TokenFate first = TokenFate::Undetermined;
        if (x0.head(D).isZero(0))
            first = TokenFate::StaysAtZero;
        else if (c.scenario == MuScenario::NegativeDefinite)
            first = TokenFate::Converges;
        else if (c.scenario == MuScenario::PositiveDefinite)
            first = TokenFate::Grows;
        c.reason += first == TokenFate::Converges ? ", so |x_1| decreases to 0"
                    : first == TokenFate::Grows   ? ", so |x_1| increases"
                                                  : "";
        c.tokens.push_back({0, first});
        for (Eigen::Index l = 1; l < L; ++l) c.tokens.push_back({l, TokenFate::Undetermined});
        return c;
    }

    // D = 1 from here: μ is the scalar Σ_n μ_n and token 1 is always exact.
    const Scalar mu = c.mu(0, 0), s = params.step_matrix()(0, 0), b = params.delta_bias(0);
    const Scalar x1 = x0(0);
    if (detail::first_token_fate(mu, s, x1) == TokenFate::BlowsUp)
        c.first_token_blowup_time = first_token_blowup_time(OneDimensional<Scalar>{mu, s, Scalar(1), b}, x1);
    const bool equal_decays = (params.A.array() == params.A(0, 0)).all();
    const VectorX<Scalar> mu_n = params.S_C.col(0).cwiseProduct(params.S_B.col(0));
    const bool kernel_nonpositive = (mu_n.array() <= 0).all();
    const bool kernel_nonnegative = (mu_n.array() >= 0).all();
    const bool some_self_blowing = (s * x0.array() > 0).any() || s == 0;
    const std::string zeros = x0.isZero(0) || (x0.array() != 0).all()
                                  ? ""
                                  : " (tokens at 0 stay there and do not affect the others)";

    if (equal_decays || (mu < 0 && kernel_nonpositive) ||
        (mu > 0 && kernel_nonnegative && some_self_blowing)) {
        c.theorem_applies = equal_decays;
        const std::string basis =
            equal_decays ? "D = 1 with equal decays: the paper's theorem"
                         : "unequal decays, outside the theorem, but every S_C[n]*S_B[n] has the sign "
                           "of mu, so each |x_l| is monotone and its own term decides";
        if (mu < 0) {
            c.regime = Regime::Convergence;
            c.reason = basis + ": mu < 0, every token tends to 0" +
                       (equal_decays ? " at rate t^(-1/2)" : "") + zeros;
            for (Eigen::Index l = 0; l < x0.size(); ++l)
                c.tokens.push_back({l, x0(l) == 0 ? TokenFate::StaysAtZero : TokenFate::Converges});
        } else if (mu == 0) {
            c.regime = Regime::Stationary;
            c.reason = basis + ": mu = 0, nothing moves";
            for (Eigen::Index l = 0; l < x0.size(); ++l) c.tokens.push_back({l, TokenFate::Stays});
        } else {
            detail::growing_fates<Scalar>(x0, s, equal_decays, c.tokens);
            c.regime = some_self_blowing ? Regime::FastDivergence : Regime::SlowDivergence;
            c.reason = basis + (some_self_blowing
                                    ? ": mu > 0 and s*x_l(0) >= 0 for some token (or s = 0): finite-time blow-up"
                                    : ": mu > 0 and s*x_l(0) < 0 for every token: divergence without blow-up") +
                       zeros;
        }
        return c;
    }

    c.regime = Regime::Undetermined;
    c.reason = mu > 0 && kernel_nonnegative
                   ? "unequal decays: every |x_l| grows, but whether a later token blows up is not "
                     "settled without the theorem's equal decays"
                   : "unequal decays with S_C[n]*S_B[n] of both signs: the kernel can change sign, "
                     "the monotonicity argument fails";
    c.tokens.push_back({0, detail::first_token_fate(mu, s, x1)});
    for (Eigen::Index l = 1; l < x0.size(); ++l)
        c.tokens.push_back({l, x0(l) == 0 ? TokenFate::StaysAtZero : TokenFate::Undetermined});
    return c;
}

}  // namespace ssmdyn
