#pragma once
/// \file csv.hpp
/// A recorded trajectory as CSV: header `t,x1_1,x1_2,..,xL_D` (x{l}_{d}: token l,
/// channel d, 1-based), then one row per recorded state, every number at 17 significant
/// digits so that it reads back as the same double.

#include <cerrno>
#include <cstddef>
#include <fstream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>

#include <ssmdyn/integrate/simulate.hpp>

namespace ssmdyn::cli {

/// Opens `path` for writing, throwing std::invalid_argument naming `flag` when it cannot.
/// Called before a solve so that a bad path fails at once rather than after the work.
inline std::ofstream open_for_writing(const std::string& path, const std::string& flag) {
    errno = 0;
    std::ofstream out(path);
    if (!out)
        throw std::invalid_argument(flag + ": cannot write '" + path +
                                    "': " + std::generic_category().message(errno));
    return out;
}

/// Writes result.times / result.states (as recorded with Record::Steps or Record::Times).
inline void write_csv(std::ostream& out, const SimulateResult<double>& result, Eigen::Index dim) {
    const Eigen::Index tokens = result.x_final.size() / dim;
    out << 't';
    for (Eigen::Index l = 1; l <= tokens; ++l)
        for (Eigen::Index d = 1; d <= dim; ++d) out << ",x" << l << '_' << d;
    out << '\n';
    out.precision(std::numeric_limits<double>::max_digits10);  // %.17g
    for (std::size_t k = 0; k < result.times.size(); ++k) {
        out << result.times[k];
        const StateVector<double>& x = result.states[k];
        for (Eigen::Index i = 0; i < x.size(); ++i) out << ',' << x(i);
        out << '\n';
    }
}

/// write_csv() into a file from open_for_writing(); throws std::runtime_error on failure.
inline void save_csv(std::ofstream& file, const std::string& path,
                     const SimulateResult<double>& result, Eigen::Index dim) {
    write_csv(file, result, dim);
    file.close();
    if (!file) throw std::runtime_error("writing '" + path + "' failed");
}

}  // namespace ssmdyn::cli
