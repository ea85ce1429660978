#pragma once
/// \file arguments.hpp
/// Command-line arguments of one subcommand: positional words, `--flag value` pairs and
/// value-less `--switch`es, in any order. A flag given twice keeps the last value.
///
/// Numbers are read strictly, in decimal notation only: `16`, `-2.5`, `1e-3`, but not
/// `0x10`, `inf`, `nan`, ` 5` or `5 `; whole numbers are decimal digits only and must fit
/// in their range (no silent truncation of `99999999999`).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ssmdyn::cli {

/// Whether `text` is a number in decimal notation: an optional sign, digits with at most
/// one decimal point (at least one digit), then optionally e or E, an optional sign and
/// digits. Nothing else: no spaces, no hexadecimal, no inf or nan.
inline bool is_decimal_number(const std::string& text) {
    std::size_t i = 0;
    const std::size_t n = text.size();
    const auto digits = [&] {
        const std::size_t start = i;
        while (i < n && text[i] >= '0' && text[i] <= '9') ++i;
        return i - start;
    };
    if (i < n && (text[i] == '+' || text[i] == '-')) ++i;
    std::size_t mantissa = digits();
    if (i < n && text[i] == '.') {
        ++i;
        mantissa += digits();
    }
    if (mantissa == 0) return false;
    if (i < n && (text[i] == 'e' || text[i] == 'E')) {
        ++i;
        if (i < n && (text[i] == '+' || text[i] == '-')) ++i;
        if (digits() == 0) return false;
    }
    return i == n;
}

/// `text` as a finite double if it is a decimal number (is_decimal_number) within the
/// range of double; nullopt otherwise (1e999 included).
inline std::optional<double> parse_decimal(const std::string& text) {
    if (!is_decimal_number(text)) return std::nullopt;
    const double v = std::strtod(text.c_str(), nullptr);  // the grammar above is a subset of strtod's
    if (!std::isfinite(v)) return std::nullopt;
    return v;
}

/// `text` as a whole number in [0, max] if it is decimal digits only (no sign, no
/// exponent, no spaces); nullopt otherwise, including when it is larger than max.
inline std::optional<std::uint64_t> parse_whole(const std::string& text, std::uint64_t max) {
    if (text.empty()) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto d = static_cast<std::uint64_t>(c - '0');
        if (d > max || v > (max - d) / 10) return std::nullopt;  // v * 10 + d > max
        v = v * 10 + d;
    }
    return v;
}

struct Arguments {
    std::vector<std::string> positional;
    std::map<std::string, std::string> values;  ///< flag (with its dashes) -> value ("" for a switch)

    bool has(const std::string& flag) const { return values.count(flag) != 0; }

    /// The one positional argument of `command` (`what` names it in the message when it
    /// is missing); throws std::invalid_argument, also when another one follows.
    const std::string& single_positional(const std::string& command, const std::string& what) const {
        if (positional.empty()) throw std::invalid_argument(command + ": missing the " + what);
        if (positional.size() > 1)
            throw std::invalid_argument(command + ": unexpected argument '" + positional[1] + "'");
        return positional.front();
    }

    std::optional<std::string> text(const std::string& flag) const {
        const auto it = values.find(flag);
        return it == values.end() ? std::nullopt : std::optional<std::string>(it->second);
    }

    /// The value of `flag` as a finite number in decimal notation (see parse_decimal);
    /// throws std::invalid_argument naming the flag.
    std::optional<double> number(const std::string& flag) const {
        const auto value = text(flag);
        if (!value) return std::nullopt;
        const std::optional<double> v = parse_decimal(*value);
        if (!v)
            throw std::invalid_argument(flag + ": '" + *value +
                                        "' is not a finite number (decimal notation, e.g. 16, 0.5 or 1e-8)");
        return v;
    }

    /// The value of `flag` as a number >= 0, or `fallback` when the flag is absent.
    double non_negative(const std::string& flag, double fallback) const {
        const double v = number(flag).value_or(fallback);
        if (v < 0) throw std::invalid_argument(flag + ": must be >= 0, got " + *text(flag));
        return v;
    }

    /// The value of `flag` as a whole number in [0, max] (decimal digits only), or
    /// `fallback` when the flag is absent; throws naming the flag, `meaning` and the range.
    std::uint64_t whole(const std::string& flag, std::uint64_t fallback, std::uint64_t max,
                        const std::string& meaning) const {
        const auto value = text(flag);
        if (!value) return fallback;
        if (const auto v = parse_whole(*value, max)) return *v;
        throw std::invalid_argument(flag + ": expected " + meaning + ", a whole number from 0 to " +
                                    std::to_string(max) + " in decimal digits, got '" + *value + "'");
    }

    /// parse(value of `flag`), or `fallback` without the flag; a std::invalid_argument
    /// from parse gets the flag's name in front.
    template <typename T, typename Parse>
    T parsed(const std::string& flag, T fallback, Parse parse) const {
        const auto value = text(flag);
        if (!value) return fallback;
        try {
            return parse(*value);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(flag + ": " + e.what());
        }
    }
};

/// Splits the arguments of `command`; throws std::invalid_argument on a flag that is not
/// in `flags` or `switches`, or a flag (not a switch) without a value. A word starting
/// with '-' is a flag, except where it is a flag's value (so `--t-end -1` reaches the range
/// check rather than failing here). `switches` take no value (has() tells they were given).
inline Arguments parse_arguments(const std::vector<std::string>& args,
                                 std::initializer_list<const char*> flags,
                                 const std::string& command,
                                 std::initializer_list<const char*> switches = {}) {
    Arguments parsed;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& word = args[i];
        if (word.size() < 2 || word[0] != '-') {
            parsed.positional.push_back(word);
            continue;
        }
        bool is_switch = false;
        for (const char* s : switches) is_switch = is_switch || word == s;
        if (is_switch) {
            parsed.values[word] = "";
            continue;
        }
        bool known = false;
        for (const char* f : flags) known = known || word == f;
        if (!known)
            throw std::invalid_argument(word + ": unknown option for '" + command +
                                        "' (see ssmdyn --help)");
        if (i + 1 == args.size()) throw std::invalid_argument(word + ": needs a value");
        parsed.values[word] = args[++i];
    }
    return parsed;
}

/// --threads P (0: all), capped to the hardware's thread count with a one-line note on
/// stderr: more threads than that only compete, and thousands fail inside OpenMP. Returns
/// 0 for "all" when P is 0 or `fallback` is and the flag is absent.
inline int thread_count(const Arguments& args, std::uint64_t fallback = 0) {
    const std::uint64_t asked = args.whole("--threads", fallback, 1000000, "the number of threads (0: all)");
    const unsigned hardware = std::thread::hardware_concurrency();  // 0: unknown
    if (hardware > 0 && asked > hardware) {
        std::cerr << "ssmdyn: note: --threads " << asked << " is more than the " << hardware
                  << " hardware threads; using " << hardware << '\n';
        return static_cast<int>(hardware);
    }
    if (hardware == 0 && asked > 4096)  // unknown hardware: still a bound OpenMP can meet
        throw std::invalid_argument("--threads: at most 4096 when the hardware's thread count is unknown");
    return static_cast<int>(asked);
}

/// --threads P of the commands that thread inside one right-hand side (simulate, forward,
/// influence, trace): a count >= 1, all the hardware's threads by default or for 0.
inline int inner_thread_count(const Arguments& args) {
    const int asked = thread_count(args);
    if (asked > 0) return asked;
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

/// --precision f64|f32 (default f64): true for f32.
inline bool single_precision(const Arguments& args) {
    const std::string precision = args.text("--precision").value_or("f64");
    if (precision != "f64" && precision != "f32")
        throw std::invalid_argument("--precision: expected f64 or f32, got '" + precision + "'");
    return precision == "f32";
}

}  // namespace ssmdyn::cli
