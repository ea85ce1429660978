#pragma once
/// \file demo.hpp
/// `ssmdyn demo`: the paper's three one-dimensional regimes, integrated and shown as a
/// table, with one CSV per scenario and, where gnuplot exists, one PNG per scenario.

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/core/system.hpp>

#include "arguments.hpp"
#include "csv.hpp"

namespace ssmdyn::cli {

/// One 1-D scenario (DESIGN.md section 2): dx_l/dt = μ x_l Σ_{j≤l} x_j² Δ(x_j) e^{−a Σ_k Δ(x_k)},
/// Δ(u) = softplus(s u + b).
struct Scenario {
    const char* name;  ///< the regime; also the base name of its CSV and PNG
    double mu, s, a, b;
    std::vector<double> tokens;
    double t_end;
    const char* log_axes;  ///< gnuplot axes on a log scale, chosen so the law is a line
    const char* caption;   ///< what the theory predicts (gnuplot enhanced text)
};

/// The three regimes of the paper, for b = 0 and nonzero tokens.
inline std::vector<Scenario> demo_scenarios() {
    return {
        {"convergence", -1.0, 1.0, 1.0, 0.0, {1.0, -0.5, 2.0}, 100.0, "xy",
         "convergence ({/Symbol m} < 0): |x_l| decays like t^{-1/2}"},
        {"slow_divergence", 1.0, 1.0, 1.0, 0.0, {-1.0, -0.5, -2.0}, 100.0, "x",
         "slow divergence ({/Symbol m} > 0, s x_l(0) < 0 for all l): |x_l| grows like ln t"},
        {"fast_divergence", 1.0, 1.0, 1.0, 0.0, {1.0, -0.5, -2.0}, 100.0, "y",
         "fast divergence ({/Symbol m} > 0, s x_1(0) > 0): blow-up in finite time"},
    };
}

namespace detail {

inline std::string format(double v, int digits = 4) {
    std::ostringstream os;
    os.precision(digits);
    os << v;
    return os.str();
}

inline std::string format_tokens(const StateVector<double>& x) {
    std::string s = "(";
    for (Eigen::Index i = 0; i < x.size(); ++i) s += (i ? ", " : "") + format(x(i));
    return s + ")";
}

/// Prints rows as columns padded to their widest cell, two spaces apart.
inline void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width(rows.front().size(), 0);
    for (const auto& row : rows)
        for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c)
            line += row[c] + std::string(width[c] - row[c].size() + 2, ' ');
        out << line.substr(0, line.find_last_not_of(' ') + 1) << '\n';
    }
}

inline std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

/// A gnuplot script drawing |x_l(t)| of every scenario from its CSV into <name>.png.
inline void write_plot_script(std::ostream& out, const std::vector<Scenario>& scenarios) {
    out << "# Renders the demo's CSV files; run from this folder: gnuplot plots.gp\n"
           "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
           "  set terminal pngcairo enhanced size 900,600\n"
           "} else {\n"
           "  set terminal png enhanced size 900,600\n"
           "}\n"
           "set datafile separator ','\n"
           "set xlabel 't'\n"
           "set ylabel '|x_l(t)|'\n"
           "set key left top\n"
           "set grid\n";
    for (const Scenario& sc : scenarios) {
        const std::string name = sc.name;
        out << "\nset output '" << name << ".png'\n"
            << "set title \"" << sc.caption << "\"\n"
            << "unset logscale\n"
            << "set logscale " << sc.log_axes << '\n'
            << "plot for [l=1:" << sc.tokens.size() << "] '" << name << ".csv' skip 1"
            << " using 1:(abs(column(l+1))) with lines lw 2 title sprintf('|x_%d|', l)\n";
    }
}

/// Renders the PNGs with gnuplot if it is on PATH; says what happened in one line.
inline void plot(const std::filesystem::path& dir, const std::vector<Scenario>& scenarios) {
    if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
        std::cout << "gnuplot not found on PATH: PNG plots skipped\n";
        return;
    }
    std::ofstream script(dir / "plots.gp");
    write_plot_script(script, scenarios);
    script.close();
    const std::string command = "cd " + shell_quote(dir.string()) + " && gnuplot plots.gp";
    if (!script || std::system(command.c_str()) != 0)
        std::cout << "gnuplot failed: PNG plots skipped (script: " << (dir / "plots.gp").string()
                  << ")\n";
    else
        std::cout << "PNG plots (gnuplot): " << scenarios.size() << " files, <scenario>.png\n";
}

}  // namespace detail

/// Dopri5 at tight tolerances: the runs are short, and the blow-up time should be sharp.
inline SimulateOptions<double> demo_options() {
    SimulateOptions<double> options;
    options.rtol = 1e-10;
    options.atol = 1e-12;
    return options;
}

/// Integrates one scenario, writes <dir>/<name>.csv and returns its row of the table.
inline std::vector<std::string> run_scenario(const Scenario& sc, const std::filesystem::path& dir) {
    const auto params = S6Params<double>::one_dimensional(sc.mu, sc.s, sc.a, sc.b);
    const SelectiveSystem<double> system(params);
    const StateVector<double> x0 = Eigen::Map<const StateVector<double>>(
        sc.tokens.data(), static_cast<Eigen::Index>(sc.tokens.size()));
    const SimulateResult<double> r = simulate(system, x0, sc.t_end, demo_options());

    const std::string csv = (dir / (std::string(sc.name) + ".csv")).string();
    std::ofstream file = open_for_writing(csv, "--out-dir");
    save_csv(file, csv, r, 1);

    using detail::format;
    return {sc.name, format(sc.mu), format(sc.s), format(sc.a), format(sc.b),
            detail::format_tokens(x0), to_string(r.status), format(r.t_final),
            r.t_blowup ? "t_blowup = " + format(*r.t_blowup, 8)
                       : "x(t_final) = " + detail::format_tokens(r.x_final)};
}

/// `ssmdyn demo [--out-dir DIR]`; returns the exit code.
inline int run_demo(const std::vector<std::string>& args) {
    const Arguments parsed = parse_arguments(args, {"--out-dir"}, "demo");
    if (!parsed.positional.empty())
        throw std::invalid_argument("demo: unexpected argument '" + parsed.positional[0] + "'");
    const std::filesystem::path dir = parsed.text("--out-dir").value_or("ssmdyn-demo");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec)
        throw std::invalid_argument("--out-dir: cannot create '" + dir.string() +
                                    "': " + ec.message());

    const std::vector<Scenario> scenarios = demo_scenarios();
    std::vector<std::vector<std::string>> table = {
        {"scenario", "mu", "s", "a", "b", "x(0)", "status", "t_final", "outcome"}};
    for (const Scenario& sc : scenarios) table.push_back(run_scenario(sc, dir));

    const SimulateOptions<double> options = demo_options();
    std::cout << "The paper's three 1-D regimes, dx/dt = S6(x) with mu = S_C^T S_B, s = S_Delta,\n"
              << "A = -a, b = delta_bias (" << to_string(options.stepper) << ", rtol "
              << options.rtol << ", atol " << options.atol << "):\n\n";
    detail::print_table(std::cout, table);
    std::cout << "\nCSV files (t,x1_1,x2_1,...): one per scenario, <scenario>.csv\n";
    detail::plot(dir, scenarios);
    std::cout << "Output folder: " << dir.string() << '\n';
    return 0;
}

}  // namespace ssmdyn::cli
