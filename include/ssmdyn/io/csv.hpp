#pragma once
/// \file csv.hpp
/// The library's CSV files, each written by one function: a trajectory (header
/// `t,x1_1,x1_2,..,xL_D`, where x{l}_{d} is token l, channel d, both 1-based as in the
/// paper's x_1 … x_L), a phase diagram (`mu,s,predicted,observed,t_blowup`) and an influence
/// matrix (`l,j,influence`). Every number
/// has 17 significant digits, so that it reads back as the same double.

#include <cerrno>
#include <cstddef>
#include <fstream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "../core/state.hpp"
#include "../integrate/status.hpp"
#include "../theory/phase_diagram.hpp"

namespace ssmdyn {

/// Opens `path` for writing; throws std::invalid_argument naming `what` (e.g. a flag) and
/// the system's reason. Open files before a long computation, so a bad path fails at once.
inline std::ofstream open_for_writing(const std::string& path, const std::string& what) {
    errno = 0;
    std::ofstream out(path);
    if (!out)
        throw std::invalid_argument(what + ": cannot write '" + path + "': " + std::generic_category().message(errno));
    return out;
}

/// Closes a file from open_for_writing(); throws std::runtime_error naming it when any
/// write failed (a full disk, say).
inline void close_checked(std::ofstream& file, const std::string& path) {
    file.close();
    if (!file) throw std::runtime_error("writing '" + path + "' failed");
}

/// The trajectory header `t,x1_1,..,xL_D` for L tokens of dimension `dim`.
inline void write_trajectory_header(std::ostream& out, Eigen::Index tokens, Eigen::Index dim) {
    out << 't';
    for (Eigen::Index l = 1; l <= tokens; ++l)
        for (Eigen::Index d = 1; d <= dim; ++d) out << ",x" << l << '_' << d;
    out << '\n';
    out.precision(std::numeric_limits<double>::max_digits10);
}

/// One trajectory row: the time, then the flat state (token by token).
template <typename Derived>
void write_trajectory_row(std::ostream& out, double t, const Eigen::MatrixBase<Derived>& x) {
    out << t;
    for (Eigen::Index i = 0; i < x.size(); ++i) out << ',' << static_cast<double>(x(i));
    out << '\n';
}

/// A recorded trajectory (SimulateResult::times and states) as CSV, header included.
template <typename Scalar>
void write_trajectory_csv(std::ostream& out, const SimulateResult<Scalar>& result) {
    const Eigen::Index dim = result.dim > 0 ? result.dim : 1;
    write_trajectory_header(out, result.x_final.size() / dim, dim);
    for (std::size_t k = 0; k < result.times.size(); ++k)
        write_trajectory_row(out, static_cast<double>(result.times[k]), result.states[k]);
}

/// A phase diagram as CSV, one row per cell in grid order: `mu,s,predicted,observed,t_blowup`
/// (regimes by name, t_blowup empty when the run did not blow up).
inline void write_phase_diagram_csv(std::ostream& out, const std::vector<PhaseCell>& cells) {
    out << "mu,s,predicted,observed,t_blowup\n";
    out.precision(std::numeric_limits<double>::max_digits10);
    for (const PhaseCell& c : cells) {
        out << c.mu << ',' << c.s << ',' << to_string(c.predicted) << ',' << to_string(c.observed) << ',';
        if (c.t_blowup) out << *c.t_blowup;
        out << '\n';
    }
}

/// An influence matrix (theory/influence.hpp) as CSV: `l,j,influence`, one row per pair
/// (l, j), all L·L of them in order l = 1..L, j = 1..L, both 1-based as x_1 … x_L.
template <typename Derived>
void write_influence_csv(std::ostream& out, const Eigen::MatrixBase<Derived>& influence) {
    out << "l,j,influence\n";
    out.precision(std::numeric_limits<double>::max_digits10);
    for (Eigen::Index l = 0; l < influence.rows(); ++l)
        for (Eigen::Index j = 0; j < influence.cols(); ++j)
            out << l + 1 << ',' << j + 1 << ',' << static_cast<double>(influence(l, j)) << '\n';
}

}  // namespace ssmdyn
