#pragma once
/// \file gnuplot.hpp
/// Figures through gnuplot, when it is installed: the one place that starts it. The
/// script is run from the folder it is in, so that it can name its data files by their
/// bare names; every path reaches the shell quoted.

#include <cstdlib>
#include <filesystem>
#include <string>

namespace ssmdyn {

/// `text` quoted for a POSIX shell: in single quotes, each ' written as '\''.
inline std::string shell_quote(const std::string& text) {
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

/// Whether a `gnuplot` program is on PATH.
inline bool gnuplot_available() { return std::system("command -v gnuplot > /dev/null 2>&1") == 0; }

/// Runs `gnuplot SCRIPT` inside the script's folder; false when gnuplot is missing or fails
/// (the script stays, for the user to run later).
inline bool run_gnuplot(const std::filesystem::path& script) {
    if (!gnuplot_available()) return false;
    const std::filesystem::path dir = script.has_parent_path() ? script.parent_path() : ".";
    const std::string command = "cd " + shell_quote(dir.string()) + " && gnuplot " +
                                shell_quote(script.filename().string()) + " > /dev/null 2>&1";
    return std::system(command.c_str()) == 0;
}

}  // namespace ssmdyn
