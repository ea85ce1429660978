#pragma once
/// \file csv.hpp
/// The library's CSV files, each written by one function: a trajectory (header
/// `t,x1_1,x1_2,..,xL_D`, where x{l}_{d} is token l, channel d, both 1-based as in the
/// paper's x_1 … x_L), a phase diagram (`mu,s,predicted,observed,t_blowup`) and an influence
/// matrix (`l,j,influence`); each also as a header and rows, so that a program can write
/// the header, check it with flush_checked() before a long computation, and stream rows
/// (a trajectory row by row from SimulateOptions::observer, say). Every number
/// has 17 significant digits, so that it reads back as the same double.
///
/// \code
/// std::ofstream out = ssmdyn::open_for_writing(path, "--out");
/// ssmdyn::write_trajectory_header(out, L, D);
/// ssmdyn::flush_checked(out, path);  // /dev/full, a full disk: fails here, not at the end
/// options.record = ssmdyn::Record::None;
/// options.observer = [&](double t, const ssmdyn::StateVector<double>& x) {
///     ssmdyn::write_trajectory_row(out, t, x);
///     ssmdyn::check_writing(out, path);
/// };
/// \endcode

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

namespace detail {

[[noreturn]] inline void write_failed(const std::string& path, int error) {
    throw std::runtime_error("writing '" + path + "' failed" +
                             (error != 0 ? ": " + std::generic_category().message(error) : std::string()));
}

}  // namespace detail

/// Pushes what `file` buffered to the system; throws std::runtime_error naming `path` and
/// the system's reason when any write so far failed (a full disk, say). Call it after
/// writing a header, before a long computation, so that an unwritable file fails at once.
inline void flush_checked(std::ostream& file, const std::string& path) {
    errno = 0;
    if (file) file.flush();
    if (!file) detail::write_failed(path, errno);
}

/// Throws std::runtime_error naming `path` when a write to `file` has failed (the stream
/// is in a failed state); cheap enough to call after every row of a streamed file.
inline void check_writing(const std::ostream& file, const std::string& path) {
    if (!file) detail::write_failed(path, errno);
}

/// Closes a file from open_for_writing(); throws std::runtime_error naming it (and the
/// system's reason) when any write failed (a full disk, say).
inline void close_checked(std::ofstream& file, const std::string& path) {
    errno = 0;
    if (file) file.close();
    if (!file) detail::write_failed(path, errno);
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

/// The phase-diagram header `mu,s,predicted,observed,t_blowup` (and 17-digit numbers from here on).
inline void write_phase_diagram_header(std::ostream& out) {
    out << "mu,s,predicted,observed,t_blowup\n";
    out.precision(std::numeric_limits<double>::max_digits10);
}

/// The phase-diagram rows, one per cell in grid order (regimes by name, t_blowup empty
/// when the run did not blow up), after write_phase_diagram_header().
inline void write_phase_diagram_rows(std::ostream& out, const std::vector<PhaseCell>& cells) {
    for (const PhaseCell& c : cells) {
        out << c.mu << ',' << c.s << ',' << to_string(c.predicted) << ',' << to_string(c.observed) << ',';
        if (c.t_blowup) out << *c.t_blowup;
        out << '\n';
    }
}

/// A phase diagram as CSV, one row per cell in grid order: `mu,s,predicted,observed,t_blowup`
/// (regimes by name, t_blowup empty when the run did not blow up).
inline void write_phase_diagram_csv(std::ostream& out, const std::vector<PhaseCell>& cells) {
    write_phase_diagram_header(out);
    write_phase_diagram_rows(out, cells);
}

/// The influence header `l,j,influence` (and 17-digit numbers from here on).
inline void write_influence_header(std::ostream& out) {
    out << "l,j,influence\n";
    out.precision(std::numeric_limits<double>::max_digits10);
}

/// The influence rows, after write_influence_header(): one per pair (l, j), all L·L of
/// them in order l = 1..L, j = 1..L, both 1-based as x_1 … x_L.
template <typename Derived>
void write_influence_rows(std::ostream& out, const Eigen::MatrixBase<Derived>& influence) {
    for (Eigen::Index l = 0; l < influence.rows(); ++l)
        for (Eigen::Index j = 0; j < influence.cols(); ++j)
            out << l + 1 << ',' << j + 1 << ',' << static_cast<double>(influence(l, j)) << '\n';
}

/// An influence matrix (theory/influence.hpp) as CSV: `l,j,influence`, one row per pair
/// (l, j), all L·L of them in order l = 1..L, j = 1..L, both 1-based as x_1 … x_L.
template <typename Derived>
void write_influence_csv(std::ostream& out, const Eigen::MatrixBase<Derived>& influence) {
    write_influence_header(out);
    write_influence_rows(out, influence);
}

}  // namespace ssmdyn
