#pragma once
/// \file json.hpp
/// The library's results as JSON (nlohmann::ordered_json, keys in a fixed order): what the
/// `ssmdyn` program prints (DESIGN.md §4), for any program that wants the same. Token
/// indices printed here are 1-based, as x_1 … x_L in the paper.

#include <vector>

#include <nlohmann/json.hpp>

#include "../core/state.hpp"
#include "../integrate/status.hpp"
#include "../theory/classify.hpp"
#include "../theory/influence.hpp"

namespace ssmdyn {

/// A matrix as a JSON array of its rows.
template <typename Derived>
nlohmann::ordered_json json_rows(const Eigen::MatrixBase<Derived>& m) {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
        nlohmann::ordered_json row = nlohmann::ordered_json::array();
        for (Eigen::Index j = 0; j < m.cols(); ++j) row.push_back(static_cast<double>(m(i, j)));
        rows.push_back(std::move(row));
    }
    return rows;
}

/// A simulation: {"status", "t_final", "t_blowup" (null without a blow-up), "tokens" (one
/// array of D values per token), "steps", "rhs_evaluations", "stiff_steps" (accepted steps
/// of the stiff method), "stiff_switches" (the times the run switched between the explicit
/// and the stiff method, the first one to the stiff method)}.
template <typename Scalar>
nlohmann::ordered_json to_json(const SimulateResult<Scalar>& r) {
    const Eigen::Index dim = r.dim > 0 ? r.dim : 1;
    nlohmann::ordered_json out;
    out["status"] = to_string(r.status);
    out["t_final"] = static_cast<double>(r.t_final);
    out["t_blowup"] = r.t_blowup ? nlohmann::ordered_json(static_cast<double>(*r.t_blowup)) : nullptr;
    out["tokens"] = json_rows(token_matrix(r.x_final, dim).transpose());  // token l = row l
    out["steps"] = r.steps;
    out["rhs_evaluations"] = r.rhs_evaluations;
    out["stiff_steps"] = r.stiff_steps;
    nlohmann::ordered_json switches = nlohmann::ordered_json::array();
    for (const Scalar& t : r.stiff_switches) switches.push_back(static_cast<double>(t));
    out["stiff_switches"] = std::move(switches);
    return out;
}

/// A classification: {"regime", "mu", "mu_sym_eigenvalues", "scenario", "theorem_applies",
/// "reason", "first_token_blowup_time", "tokens": [{"index" (1-based), "prediction"}, ..]}.
template <typename Scalar>
nlohmann::ordered_json to_json(const Classification<Scalar>& c) {
    nlohmann::ordered_json out;
    out["regime"] = to_string(c.regime);
    out["mu"] = json_rows(c.mu);
    out["mu_sym_eigenvalues"] = std::vector<double>(c.mu_sym_eigenvalues.data(),
                                                    c.mu_sym_eigenvalues.data() + c.mu_sym_eigenvalues.size());
    out["scenario"] = to_string(c.scenario);
    out["theorem_applies"] = c.theorem_applies;
    out["reason"] = c.reason;
    out["first_token_blowup_time"] =
        c.first_token_blowup_time ? nlohmann::ordered_json(static_cast<double>(*c.first_token_blowup_time)) : nullptr;
    nlohmann::ordered_json tokens = nlohmann::ordered_json::array();
    for (const TokenPrediction& t : c.tokens) tokens.push_back({{"index", t.index + 1}, {"prediction", to_string(t.fate)}});
    out["tokens"] = std::move(tokens);
    return out;
}

/// Token influence: {"status", "t_final", "influence" (L rows of L, row l = output token l),
/// "tokens" (X(T), one array of D values per token)}.
template <typename Scalar>
nlohmann::ordered_json to_json(const TokenInfluence<Scalar>& r) {
    nlohmann::ordered_json out;
    out["status"] = to_string(r.status);
    out["t_final"] = static_cast<double>(r.t_final);
    out["influence"] = json_rows(r.influence);
    out["tokens"] = json_rows(r.tokens.transpose());  // token l = row l
    return out;
}

}  // namespace ssmdyn
