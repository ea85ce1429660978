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
/// S_Δ may instead be given low rank, as its factors S_Δ = W_dt · W_x (D rows of R and R
/// rows of D, as a checkpoint's dt_proj.weight and x_proj.weight[:dt_rank]), in place of
/// "S_Delta": "S_Delta_factors": {"W_dt": [[..]], "W_x": [[..]]}.
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
///
/// The file is untrusted input: only a regular file is read (a FIFO, a device, a socket or
/// a directory is refused without blocking or reading from it), its size is checked
/// against the memory limit (core/memory_limit.hpp) before it is read, and the JSON is
/// strict: a key given twice in one object (`"tokens"` twice: nlohmann keeps the last
/// silently), anything but whitespace after the JSON value (a NUL byte included, which
/// nlohmann takes for the end of the input) and nesting deeper than 64 levels are errors
/// naming the key or the byte offset (0-based). Matrices and tokens are checked against
/// the memory limit before they are allocated.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <set>
#include <utility>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include <ssmdyn/core/memory_limit.hpp>
#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/state.hpp>

namespace ssmdyn::cli {

/// A parsed configuration: validated parameters and the flat initial state.
struct Config {
    S6Params<double> params;
    /// The D×L token matrix column by column: token l is entries l·D … l·D+D−1.
    StateVector<double> tokens;
    /// With --checkpoint, the layer's skip weights (Mamba's D); else empty.
    VectorX<double> D_skip;
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
    check_allocation(checked_bytes(j.size(), first.size(), sizeof(double)),
                     field + " (" + std::to_string(j.size()) + " x " + std::to_string(first.size()) + " numbers)");
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

/// A message of S6Params::validate with the factors named as the configuration names them.
inline std::string renamed_factors(std::string message) {
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"S_Delta_up", "S_Delta_factors.W_dt"},
                                   std::pair<std::string, std::string>{"S_Delta_down", "S_Delta_factors.W_x"}})
        for (std::size_t at = message.find(from); at != std::string::npos; at = message.find(from, at + to.size()))
            message.replace(at, from.size(), to);
    return message;
}

inline S6Params<double> full_model(const Json& model) {
    expect_only(model, "model.", {"S_B", "S_C", "S_Delta", "S_Delta_factors", "A", "delta_bias"},
                "S_B, S_C, S_Delta (or S_Delta_factors), A and optionally delta_bias");
    const auto required = [&](const char* key) {
        return matrix(member(model, "model.", key), std::string("model.") + key);
    };
    S6Params<double> p;
    p.S_B = required("S_B");
    p.S_C = required("S_C");
    if (model.contains("S_Delta_factors")) {
        if (model.contains("S_Delta"))
            throw std::invalid_argument("model: give S_Delta or S_Delta_factors, not both");
        const Json& factors = model.at("S_Delta_factors");
        const std::string prefix = "model.S_Delta_factors.";
        if (!factors.is_object())
            fail("model.S_Delta_factors", "expected an object {\"W_dt\": [[..]], \"W_x\": [[..]]}, " + got(factors));
        expect_only(factors, prefix, {"W_dt", "W_x"}, "W_dt (D rows of R) and W_x (R rows of D)");
        p.S_Delta_up = matrix(member(factors, prefix, "W_dt"), prefix + "W_dt");
        p.S_Delta_down = matrix(member(factors, prefix, "W_x"), prefix + "W_x");
    } else {
        p.S_Delta = required("S_Delta");
    }
    p.A = required("A");
    p.delta_bias = model.contains("delta_bias")
                       ? vector(model.at("delta_bias"), "model.delta_bias")
                       : VectorX<double>::Zero(p.dim());
    try {  // shapes across matrices and the sign of A; its messages start with the field
        p.validate();
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("model.") + renamed_factors(e.what()));
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
    check_allocation(checked_bytes(j.size(), d, sizeof(double)),
                     "tokens (L x D = " + std::to_string(j.size()) + " x " + std::to_string(d) + " numbers)");
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

/// Deepest nesting of arrays and objects accepted in a configuration (it needs 3).
constexpr int max_json_depth = 64;

/// A parser callback for nlohmann::json::parse that refuses what its DOM parser lets
/// through: a key given twice in one object (it keeps the last silently) and nesting
/// deeper than max_json_depth. Throws std::invalid_argument naming the key and where it is.
class StrictKeys {
public:
    explicit StrictKeys(std::string field) : m_field(std::move(field)) {}

    bool operator()(int depth, Json::parse_event_t event, Json& parsed) {
        using Event = Json::parse_event_t;
        switch (event) {
            case Event::object_start:
            case Event::array_start:
                if (depth >= max_json_depth)
                    fail("invalid JSON: arrays and objects nested deeper than " + std::to_string(max_json_depth) +
                         " levels");
                m_stack.push_back(Level{event == Event::object_start, {}, {}, 0});
                break;
            case Event::key: {
                Level& top = m_stack.back();
                const std::string& key = parsed.get_ref<const std::string&>();
                if (!top.keys.insert(key).second)
                    fail("invalid JSON: duplicate key " + Json(key).dump(-1, ' ', false, Json::error_handler_t::replace) +
                         " in " + where() + " (each key may appear once)");
                top.key = key;
                break;
            }
            case Event::object_end:
            case Event::array_end:
                m_stack.pop_back();
                element_done();
                break;
            case Event::value: element_done(); break;
        }
        return true;
    }

private:
    struct Level {
        bool object;
        std::set<std::string> keys;  // an object's keys so far
        std::string key;             // an object's current key
        std::size_t index;           // an array's current index
    };

    void element_done() {
        if (!m_stack.empty() && !m_stack.back().object) ++m_stack.back().index;
    }

    // The object at the top of the stack, as a field name: "the top-level object", "model".
    std::string where() const {
        std::string path;
        for (std::size_t i = 0; i + 1 < m_stack.size(); ++i) {
            const Level& level = m_stack[i];
            if (level.object) path += (path.empty() ? "" : ".") + level.key;
            else path += "[" + std::to_string(level.index) + "]";
        }
        return path.empty() ? "the top-level object" : path;
    }

    [[noreturn]] void fail(const std::string& problem) const { throw std::invalid_argument(m_field + ": " + problem); }

    std::string m_field;
    std::vector<Level> m_stack;
};

/// Where the top-level array or object starting `text` ends (one past its closing
/// bracket), found by bracket counting outside strings; npos when text does not start
/// (after whitespace) with '[' or '{', or the brackets never balance.
inline std::size_t json_container_end(const std::string& text) {
    std::size_t i = text.find_first_not_of(" \t\n\r");
    if (i == std::string::npos || (text[i] != '{' && text[i] != '[')) return std::string::npos;
    std::size_t depth = 0;
    bool in_string = false;
    for (; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            ++depth;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return i + 1;
        }
    }
    return std::string::npos;
}

/// `text` for a message: at most 20 bytes, those outside printable ASCII as \xNN.
inline std::string quoted_excerpt(const std::string& text, std::size_t from) {
    static const char* const hex = "0123456789ABCDEF";
    std::string out;
    const std::size_t to = std::min(text.size(), from + 20);
    for (std::size_t i = from; i < to; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7F) {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xF];
        }
    }
    return "'" + out + (to < text.size() ? "...'" : "'");
}

/// Parses `text` as one strict JSON value (see the file comment); throws
/// std::invalid_argument starting with `field`.
inline Json parse_strict(const std::string& text, const std::string& field) {
    const std::size_t end = json_container_end(text);
    // nlohmann's lexer takes a NUL byte for the end of the input, so that "{..}\0junk"
    // would pass: a NUL is never valid in JSON text (a string holds it escaped, \u0000).
    const void* nul = std::memchr(text.data(), 0, text.size());
    if (nul) {
        const auto at = static_cast<std::size_t>(static_cast<const char*>(nul) - text.data());
        fail(field, "invalid JSON: unexpected byte 0x00 (NUL) at byte offset " + std::to_string(at) +
                        (end != std::string::npos && at >= end ? ", after the JSON value" : ""));
    }
    // The value alone first, so that what follows it is named as such, with its offset.
    const bool trailing = end != std::string::npos && text.find_first_not_of(" \t\n\r", end) != std::string::npos;
    try {
        Json root = Json::parse(trailing ? text.substr(0, end) : text, StrictKeys(field));
        if (trailing) {
            const std::size_t at = text.find_first_not_of(" \t\n\r", end);
            fail(field, "invalid JSON: unexpected content after the JSON value at byte offset " + std::to_string(at) +
                            ": " + quoted_excerpt(text, at));
        }
        return root;
    } catch (const Json::exception& e) {
        fail(field, "invalid JSON: " + brief(e));
    }
}

/// The bytes of the configuration file at `path`, read only if it is a regular file (a
/// FIFO would block, a device can be endless) whose size fits the memory limit; throws
/// std::invalid_argument starting with `field`.
inline std::string read_regular_file(const std::string& path, const std::string& field) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; fstat on the open file then
    // tells what it is (no race between a check of the path and the open).
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) fail(field, "cannot be opened: " + std::generic_category().message(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail(field, "cannot be read: " + std::generic_category().message(errno));
    if (S_ISDIR(st.st_mode)) fail(field, "is a directory");
    if (S_ISFIFO(st.st_mode)) fail(field, "is a FIFO (named pipe), not a regular file; write the configuration to a file");
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) fail(field, "is a device, not a regular file");
    if (!S_ISREG(st.st_mode)) fail(field, "is not a regular file");
    const auto size = static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 0);
    // The text, and nlohmann's document of it: up to 16 bytes per byte of text (a 16-byte
    // value for each number of two characters, "0,").
    check_allocation(checked_bytes(size, 17), field + " (" + std::to_string(size) + " bytes: its text and its parsed JSON)");
    // Read to the end, but not beyond the size stat reported (and 64 MiB for files that
    // report none, as in /proc): a file that grows while being read is refused.
    const std::size_t cap = std::max<std::size_t>(size, std::size_t(64) << 20);
    std::string text;
    text.reserve(size);
    char buffer[1 << 16];
    for (;;) {
        const ::ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(field, "could not be read: " + std::generic_category().message(errno));
        }
        if (n == 0) break;
        if (static_cast<std::size_t>(n) > cap - text.size())
            fail(field, "is larger than " + std::to_string(cap) + " bytes (it grew while being read?)");
        text.append(buffer, static_cast<std::size_t>(n));
    }
    return text;
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

/// Reads a configuration that holds only "tokens" (the model comes from a checkpoint:
/// --checkpoint), each of `dim` numbers; throws std::invalid_argument naming the field.
inline StateVector<double> load_tokens(const std::string& path, Eigen::Index dim) {
    using namespace detail;
    const std::string field = "config file '" + path + "'";
    const Json root = parse_strict(read_regular_file(path, field), field);
    if (!root.is_object()) fail("config", "expected an object with \"tokens\", " + got(root));
    if (root.contains("model"))
        fail("model", "not allowed with --checkpoint (the model is the checkpoint's layer); give only \"tokens\"");
    expect_only(root, "", {"tokens"}, "tokens (the model is the checkpoint's layer)");
    return detail::tokens(member(root, "", "tokens"), dim);
}

/// Reads and parses the configuration file at `path` (a regular file, strict JSON: see
/// the file comment); throws std::invalid_argument naming the file, field, key or offset.
inline Config load_config(const std::string& path) {
    const std::string field = "config file '" + path + "'";
    const std::string text = detail::read_regular_file(path, field);
    return parse_config(detail::parse_strict(text, field));
}

}  // namespace ssmdyn::cli
