#pragma once
/// \file enum_names.hpp
/// Reading an enum back from its name: the inverse of the `to_string` every public enum
/// has, so that enums travel as names (JSON, CSV, MPI) and never as ordinals.

#include <cstddef>
#include <stdexcept>
#include <string>

namespace ssmdyn::detail {

/// The value of `values` whose to_string() is `name`; otherwise std::invalid_argument
/// "<what> '<name>' is unknown; use a, b or c".
template <typename Enum, std::size_t N>
Enum parse_enum(const std::string& name, const Enum (&values)[N], const char* what) {
    std::string names;
    for (std::size_t i = 0; i < N; ++i) {
        if (name == to_string(values[i])) return values[i];
        names += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + to_string(values[i]);
    }
    throw std::invalid_argument(std::string(what) + " '" + name + "' is unknown; use " + names);
}

}  // namespace ssmdyn::detail
