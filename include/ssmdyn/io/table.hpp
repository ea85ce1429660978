#pragma once
/// \file table.hpp
/// Plain-text tables for people: columns padded to their widest cell.

#include <algorithm>
#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

namespace ssmdyn {

/// Prints rows (the first one usually a header) as columns two spaces apart.
inline void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
    if (rows.empty()) return;
    std::vector<std::size_t> width;
    for (const auto& row : rows) {
        width.resize(std::max(width.size(), row.size()), 0);
        for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    }
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c) line += row[c] + std::string(width[c] - row[c].size() + 2, ' ');
        out << line.substr(0, line.find_last_not_of(' ') + 1) << '\n';
    }
}

}  // namespace ssmdyn
