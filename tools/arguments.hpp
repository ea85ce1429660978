#pragma once
/// \file arguments.hpp
/// Command-line arguments of one subcommand: positional words and `--flag value` pairs,
/// in any order. Every flag takes exactly one value; a flag given twice keeps the last.

#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ssmdyn::cli {

struct Arguments {
    std::vector<std::string> positional;
    std::map<std::string, std::string> values;  ///< flag (with its dashes) -> value

    bool has(const std::string& flag) const { return values.count(flag) != 0; }

    std::optional<std::string> text(const std::string& flag) const {
        const auto it = values.find(flag);
        return it == values.end() ? std::nullopt : std::optional<std::string>(it->second);
    }

    /// The value of `flag` as a finite number; throws std::invalid_argument naming the flag.
    std::optional<double> number(const std::string& flag) const {
        const auto value = text(flag);
        if (!value) return std::nullopt;
        char* end = nullptr;
        const double v = std::strtod(value->c_str(), &end);
        if (value->empty() || end != value->c_str() + value->size() || !std::isfinite(v))
            throw std::invalid_argument(flag + ": '" + *value + "' is not a finite number");
        return v;
    }

    /// The value of `flag` as a number >= 0, or `fallback` when the flag is absent.
    double non_negative(const std::string& flag, double fallback) const {
        const double v = number(flag).value_or(fallback);
        if (v < 0) throw std::invalid_argument(flag + ": must be >= 0, got " + *text(flag));
        return v;
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
/// in `flags` or has no value. A word starting with '-' is a flag, except where it is a
/// flag's value (so `--t-end -1` reaches the range check rather than failing here).
inline Arguments parse_arguments(const std::vector<std::string>& args,
                                 std::initializer_list<const char*> flags,
                                 const std::string& command) {
    Arguments parsed;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& word = args[i];
        if (word.size() < 2 || word[0] != '-') {
            parsed.positional.push_back(word);
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

}  // namespace ssmdyn::cli
