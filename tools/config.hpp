#pragma once
/// \file config.hpp
/// The `ssmdyn` program's JSON configuration: the S6 parameters and the initial tokens.
///
/// Full form (N rows of D for S_B and S_C, D rows of D for S_Delta, D rows of N for A,
/// delta_bias optional and zero by default):
///
///     { "model":  { "S_B": [[..],..], "S_C": [[..],..], "S_Delta": [[..],..],
///                   "delta_bias": [..], "A": [[..],..] },
///       "tokens": [[x_1 ..D values], .., [x_L]] }
///
/// One-dimensional shorthand (N = D = 1, S_C = [[1]], S_B = [[mu]], A = [[-a]]); with
/// D = 1 the tokens may also be a flat list of L numbers:
///
///     { "model": {"mu": m, "s_delta": s, "a": a, "delta_bias": b}, "tokens": [x_1, .., x_L] }
///
/// Every problem is reported as std::invalid_argument whose message starts with the
/// offending field, e.g. `model.S_B[2]: has 3 entries, expected 4 like model.S_B[0]`
/// (matrix rows and entries are 0-based JSON indices; tokens and channels are 1-based,
/// as x_1 … x_L in the paper). Unknown fields are errors too, so that a misspelt optional
/// field such as "delta_bais" is not silently ignored.

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/state.hpp>

namespace ssmdyn::cli {

/// A parsed configuration: validated parameters and the flat initial state.
struct Config {
    S6Params<double> params;
    /// The D×L token matrix column by column: token l is entries l·D … l·D+D−1.
    StateVector<double> tokens;
};

namespace detail {

using Json = nlohmann::json;

[[noreturn]] inline void fail(const std::string& field, const std::string& problem) {
    throw std::invalid_argument(field + ": " + problem);
}

inline std::string got(const Json& j) { return std::string("got ") + j.type_name(); }

inline std::string entries(std::size_t n) {
    return std::to_string(n) + (n == 1 ? " entry" : " entries");
}

inline std::string index(const std::string& field, std::size_t i) {
    return field + "[" + std::to_string(i) + "]";
}

/// The member `key` of `object`, reported as `prefix + key` when missing.
inline const Json& member(const Json& object, const std::string& prefix, const char* key) {
    const auto it = object.find(key);
    if (it == object.end()) fail(prefix + key, "required field is missing");
    return *it;
}

/// Rejects any member of `object` not listed in `known`.
inline void expect_only(const Json& object, const std::string& prefix,
                        std::initializer_list<const char*> known, const char* allowed) {
    for (const auto& item : object.items()) {
        bool listed = false;
        for (const char* k : known) listed = listed || item.key() == k;
        if (!listed) fail(prefix + item.key(), std::string("unknown field; expected ") + allowed);
    }
}

inline double number(const Json& j, const std::string& field) {
    if (!j.is_number()) fail(field, "expected a number, " + got(j));
    const double v = j.get<double>();
    if (!std::isfinite(v)) fail(field, "is not finite");
    return v;
}

inline VectorX<double> vector(const Json& j, const std::string& field) {
    if (!j.is_array() || j.empty()) fail(field, "expected a non-empty array of numbers, " + got(j));
    VectorX<double> v(static_cast<Eigen::Index>(j.size()));
    for (std::size_t i = 0; i < j.size(); ++i)
        v(static_cast<Eigen::Index>(i)) = number(j[i], index(field, i));
    return v;
}

/// A matrix given as a non-empty array of equally long, non-empty rows of numbers.
inline MatrixX<double> matrix(const Json& j, const std::string& field) {
    if (!j.is_array() || j.empty()) fail(field, "expected a non-empty array of rows, " + got(j));
    const Json& first = j.front();
    if (!first.is_array() || first.empty())
        fail(index(field, 0), "expected a non-empty array of numbers, " + got(first));
    MatrixX<double> m(static_cast<Eigen::Index>(j.size()), static_cast<Eigen::Index>(first.size()));
    for (std::size_t i = 0; i < j.size(); ++i) {
        const std::string row = index(field, i);
        if (!j[i].is_array()) fail(row, "expected an array of numbers, " + got(j[i]));
        if (j[i].size() != first.size())
            fail(row, "has " + entries(j[i].size()) + ", expected " +
                          std::to_string(first.size()) + " like " + index(field, 0));
        for (std::size_t k = 0; k < first.size(); ++k)
            m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(k)) =
                number(j[i][k], index(row, k));
    }
    return m;
}

inline S6Params<double> full_model(const Json& model) {
    expect_only(model, "model.", {"S_B", "S_C", "S_Delta", "A", "delta_bias"},
                "S_B, S_C, S_Delta, A and optionally delta_bias");
    const auto required = [&](const char* key) {
        return matrix(member(model, "model.", key), std::string("model.") + key);
    };
    S6Params<double> p;
    p.S_B = required("S_B");
    p.S_C = required("S_C");
    p.S_Delta = required("S_Delta");
    p.A = required("A");
    p.delta_bias = model.contains("delta_bias")
                       ? vector(model.at("delta_bias"), "model.delta_bias")
                       : VectorX<double>::Zero(p.dim());
    try {  // shapes across matrices and the sign of A; its messages start with the field
        p.validate();
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("model.") + e.what());
    }
    return p;
}

inline S6Params<double> one_dimensional_model(const Json& model) {
    expect_only(model, "model.", {"mu", "s_delta", "a", "delta_bias"},
                "mu, s_delta, a and optionally delta_bias (the 1-D shorthand)");
    const auto required = [&](const char* key) {
        return number(member(model, "model.", key), std::string("model.") + key);
    };
    const double mu = required("mu"), s = required("s_delta"), a = required("a");
    const double b =
        model.contains("delta_bias") ? number(model.at("delta_bias"), "model.delta_bias") : 0.0;
    // Checked here because the library would name A(0,0) = -a, which the user never wrote.
    if (!(a > 0))
        throw std::invalid_argument("model.a = " + Json(a).dump() + " must be > 0 (A = -a)");
    return S6Params<double>::one_dimensional({mu, s, a, b});
}

/// The tokens as a flat state; each token is an array of D numbers, or a number when D = 1.
inline StateVector<double> tokens(const Json& j, Eigen::Index dim) {
    if (!j.is_array()) fail("tokens", "expected an array of tokens, " + got(j));
    if (j.empty()) fail("tokens", "expected at least one token, got an empty array");
    const auto d = static_cast<std::size_t>(dim);
    StateVector<double> x(static_cast<Eigen::Index>(j.size() * d));
    for (std::size_t l = 0; l < j.size(); ++l) {
        const std::string token = "tokens: token " + std::to_string(l + 1);
        const Json& t = j[l];
        if (d == 1 && t.is_number()) {
            x(static_cast<Eigen::Index>(l)) = number(t, token);
            continue;
        }
        if (!t.is_array())
            fail(token, "expected an array of D = " + std::to_string(d) + " numbers, " + got(t));
        if (t.size() != d)
            fail("tokens", "token " + std::to_string(l + 1) + " has " + entries(t.size()) +
                               ", expected D = " + std::to_string(d));
        for (std::size_t c = 0; c < d; ++c)
            x(static_cast<Eigen::Index>(l * d + c)) =
                number(t[c], token + ", channel " + std::to_string(c + 1));
    }
    return x;
}

/// The part of nlohmann's message after its "[json.exception.…] " tag.
inline std::string brief(const Json::exception& e) {
    const std::string what = e.what();
    const auto tag_end = what.find("] ");
    return tag_end == std::string::npos ? what : what.substr(tag_end + 2);
}

}  // namespace detail

/// Parses a configuration already read as JSON; throws std::invalid_argument naming the field.
inline Config parse_config(const nlohmann::json& root) {
    using namespace detail;
    if (!root.is_object())
        fail("config", "expected an object with \"model\" and \"tokens\", " + got(root));
    expect_only(root, "", {"model", "tokens"}, "model and tokens");
    const Json& model = member(root, "", "model");
    if (!model.is_object()) fail("model", "expected an object, " + got(model));
    // Any shorthand key selects the shorthand; a full-form key next to it is then unknown.
    const bool shorthand = model.contains("mu") || model.contains("s_delta") || model.contains("a");
    Config config;
    config.params = shorthand ? one_dimensional_model(model) : full_model(model);
    config.tokens = detail::tokens(member(root, "", "tokens"), config.params.dim());
    return config;
}

/// Reads and parses the configuration file at `path`; throws std::invalid_argument.
inline Config load_config(const std::string& path) {
    const std::string field = "config file '" + path + "'";
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) detail::fail(field, "is a directory");
    errno = 0;
    std::ifstream in(path);
    if (!in) detail::fail(field, "cannot be opened: " + std::generic_category().message(errno));
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) detail::fail(field, "could not be read");
    nlohmann::json root;
    try {
        root = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        detail::fail(field, "invalid JSON: " + detail::brief(e));
    }
    return parse_config(root);
}

}  // namespace ssmdyn::cli
