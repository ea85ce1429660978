#pragma once
/// \file rates.hpp
/// What a simulation actually did: the observed regime, and least-squares rates on the
/// tail of the trajectory (t^p for convergence, (ln t)^q and c·ln t for slow divergence,
/// (T* − t)^(−α) before a blow-up), each with its fit quality.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "regime.hpp"
#include "../integrate/status.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// Least-squares line v ≈ slope·u + intercept, with its coefficient of determination.
template <typename Scalar = double>
struct LineFit {
    Scalar slope = std::numeric_limits<Scalar>::quiet_NaN();
    Scalar intercept = std::numeric_limits<Scalar>::quiet_NaN();
    /// R² in [0, 1]: 1 is a perfect fit (NaN with fewer than 3 points).
    Scalar r_squared = std::numeric_limits<Scalar>::quiet_NaN();
    std::size_t points = 0;
};

/// Least-squares fit of v ≈ slope·u + intercept; NaN fields with fewer than 3 points.
template <typename Scalar>
LineFit<Scalar> fit_line(const std::vector<Scalar>& u, const std::vector<Scalar>& v) {
    LineFit<Scalar> fit;
    fit.points = u.size();
    if (u.size() < 3 || v.size() != u.size()) return fit;
    const auto n = static_cast<Eigen::Index>(u.size());
    const Eigen::Map<const VectorX<Scalar>> U(u.data(), n), V(v.data(), n);
    const Scalar mu = U.mean(), mv = V.mean();
    const VectorX<Scalar> du = U.array() - mu, dv = V.array() - mv;
    const Scalar suu = du.squaredNorm(), svv = dv.squaredNorm();
    if (suu == 0) return fit;
    fit.slope = du.dot(dv) / suu;
    fit.intercept = mv - fit.slope * mu;
    fit.r_squared = svv == 0 ? Scalar(1) : (du.dot(dv) * du.dot(dv)) / (suu * svv);
    return fit;
}

/// The rates of one token on the tail of a trajectory.
template <typename Scalar = double>
struct TokenRates {
    Eigen::Index index = 0;  ///< 0-based token index (token x_{index+1} of the paper)
    Scalar initial_magnitude = 0, final_magnitude = 0;  ///< |x_l| at the start and the end
    /// |x_l| ≈ c·t^p: slope = p (−1/2 for the 1-D convergence theorem).
    LineFit<Scalar> time_power;
    /// |x_l| ≈ c·(ln t)^q: slope = q (the paper bounds q ≤ l for slow divergence).
    LineFit<Scalar> log_power;
    /// |x_l| ≈ c_l·ln t + d: slope = c_l, the slow-divergence constant.
    LineFit<Scalar> log_linear;
};

/// What observe() finds.
template <typename Scalar = double>
struct Observation {
    Regime regime = Regime::Undetermined;
    std::string reason;
    std::vector<TokenRates<Scalar>> tokens;
    /// √t·|x_1| at the final time (→ 1/√(2|μ| softplus(b)) under 1-D convergence).
    Scalar sqrt_t_first = std::numeric_limits<Scalar>::quiet_NaN();
    /// With a blow-up: its time, and the growth law max_l |x_l| ≈ c (T* − t)^(−α) fitted in
    /// log-log on the last recorded steps that are at least 1e-7·max(1, T*) before T*
    /// (slope = −α: −1/2 for s = 0, −1/3 for s·x > 0 in 1-D).
    std::optional<Scalar> t_blowup;
    LineFit<Scalar> blowup_growth;
};

/// The regime a finished simulation shows: blow-up → fast divergence; completed with
/// every moving token smaller in norm than it started → convergence, larger → slow
/// divergence (at this horizon: a later blow-up would not be seen), none moving →
/// stationary; any other ending or a mix → undetermined. `reason` (optional) says why.
/// \param r a result of simulate() (it carries its initial state and token dimension)
template <typename Scalar>
Regime observed_regime(const SimulateResult<Scalar>& r, std::string* reason = nullptr) {
    auto say = [&](Regime g, const char* why) {
        if (reason) *reason = why;
        return g;
    };
    if (r.status == Status::BlowUp) return say(Regime::FastDivergence, "the run blew up");
    if (r.status != Status::Completed)
        return say(Regime::Undetermined, "the run ended before t_end without a blow-up");
    const auto X0 = token_matrix(r.x_initial, r.dim), X = token_matrix(r.x_final, r.dim);
    const Scalar tol = Scalar(1e3) * std::numeric_limits<Scalar>::epsilon();
    int shrank = 0, grew = 0, still = 0;
    for (Eigen::Index l = 0; l < X0.cols(); ++l) {
        const Scalar a = X0.col(l).norm(), b = X.col(l).norm();
        if (a == 0) continue;  // a token at 0 stays there and says nothing
        if (b < a * (1 - tol))
            ++shrank;
        else if (b > a * (1 + tol))
            ++grew;
        else
            ++still;
    }
    if (shrank + grew == 0) return say(Regime::Stationary, "no token moved");
    if (grew == 0 && still == 0) return say(Regime::Convergence, "every token shrank");
    if (shrank == 0 && still == 0)
        return say(Regime::SlowDivergence, "every token grew, without blowing up by t_end");
    return say(Regime::Undetermined, "some tokens shrank and others grew or stayed");
}

/// The observed regime and the rates of every token on the tail t ≥ tail_start·t_final
/// of a recorded trajectory (record steps or, better, log-spaced output times).
/// With Record::Times the driver also keeps the accepted states between the last output
/// time reached and an early end, so a blow-up's growth law can be fitted without knowing
/// its time in advance.
/// \param r a result of simulate() with a recorded trajectory (it carries x(0) and D)
/// \param tail_start the fraction of t_final where the tail begins, in [0, 1)
template <typename Scalar>
Observation<Scalar> observe(const SimulateResult<Scalar>& r, Scalar tail_start = Scalar(0.1)) {
    if (!(tail_start >= 0 && tail_start < 1)) throw std::invalid_argument("tail_start must be in [0, 1)");
    if (r.dim < 1 || r.x_initial.size() != r.x_final.size() || r.x_initial.size() % r.dim != 0)
        throw std::invalid_argument("observe: the result carries no initial state of D*L entries (not from simulate?)");
    const StateVector<Scalar>& x0 = r.x_initial;
    const Eigen::Index dim = r.dim;
    Observation<Scalar> obs;
    obs.regime = observed_regime(r, &obs.reason);
    const Eigen::Index L = x0.size() / dim;
    const Scalar t_end = r.t_final;
    obs.sqrt_t_first = std::sqrt(t_end) * token_matrix(r.x_final, dim).col(0).norm();

    for (Eigen::Index l = 0; l < L; ++l) {
        TokenRates<Scalar> tr;
        tr.index = l;
        tr.initial_magnitude = token_matrix(x0, dim).col(l).norm();
        tr.final_magnitude = token_matrix(r.x_final, dim).col(l).norm();
        std::vector<Scalar> log_t, log_log_t, log_x, ln_t, x;
        for (std::size_t k = 0; k < r.times.size(); ++k) {
            const Scalar t = r.times[k];
            const Scalar m = token_matrix(r.states[k], dim).col(l).norm();
            if (t < tail_start * t_end || !(t > 0) || !(m > 0)) continue;
            log_t.push_back(std::log(t));
            log_x.push_back(std::log(m));
            if (t > 1) {  // (ln t) must be positive for its logarithm
                ln_t.push_back(std::log(t));
                x.push_back(m);
                log_log_t.push_back(std::log(std::log(t)));
            }
        }
        tr.time_power = fit_line(log_t, log_x);
        std::vector<Scalar> log_x_late(log_x.end() - static_cast<std::ptrdiff_t>(log_log_t.size()),
                                       log_x.end());
        tr.log_power = fit_line(log_log_t, log_x_late);
        tr.log_linear = fit_line(ln_t, x);
        obs.tokens.push_back(tr);
    }

    if (r.status == Status::BlowUp && r.t_blowup) {
        obs.t_blowup = r.t_blowup;
        const Scalar T = *r.t_blowup;
        // The last 30 recorded states at least 1e-7·max(1, T) before T: closer in, the
        // uncertainty of T itself (about the integration tolerance) would bend the fit.
        const Scalar min_gap = Scalar(1e-7) * std::max(Scalar(1), std::abs(T));
        std::vector<Scalar> log_gap, log_norm;
        for (std::size_t k = r.times.size(); k-- > 0 && log_gap.size() < 30;) {
            const Scalar gap = T - r.times[k];
            if (gap < min_gap) continue;
            log_gap.push_back(std::log(gap));
            log_norm.push_back(std::log(r.states[k].cwiseAbs().maxCoeff()));
        }
        obs.blowup_growth = fit_line(log_gap, log_norm);
    }
    return obs;
}

}  // namespace ssmdyn
