#pragma once
/// \file demo.hpp
/// `ssmdyn demo`: the paper's three one-dimensional regimes (theory/scenarios.hpp),
/// integrated and shown as a table, with one CSV per scenario and, where gnuplot exists,
/// one PNG per scenario.

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/io/csv.hpp>
#include <ssmdyn/io/gnuplot.hpp>
#include <ssmdyn/io/table.hpp>
#include <ssmdyn/theory/scenarios.hpp>

#include "arguments.hpp"

namespace ssmdyn::cli {

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

/// Gnuplot axes on a log scale, chosen so that each regime's law is a straight line.
inline const char* log_axes(Regime r) {
    return r == Regime::Convergence ? "xy" : r == Regime::SlowDivergence ? "x" : "y";
}

/// What the theory predicts (gnuplot enhanced text).
inline const char* caption(Regime r) {
    return r == Regime::Convergence      ? "convergence ({/Symbol m} < 0): |x_l| decays like t^{-1/2}"
           : r == Regime::SlowDivergence ? "slow divergence ({/Symbol m} > 0, s x_l(0) < 0 for all l): |x_l| grows like ln t"
                                         : "fast divergence ({/Symbol m} > 0, s x_1(0) > 0): blow-up in finite time";
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
            << "set title \"" << caption(sc.regime) << "\"\n"
            << "unset logscale\n"
            << "set logscale " << log_axes(sc.regime) << '\n'
            << "plot for [l=1:" << sc.tokens.size() << "] '" << name << ".csv' skip 1"
            << " using 1:(abs(column(l+1))) with lines lw 2 title sprintf('|x_%d|', l)\n";
    }
}

}  // namespace detail

/// Dopri5 at tight tolerances: the runs are short, and the blow-up time should be sharp.
inline SimulateOptions<double> demo_options() {
    SimulateOptions<double> options;
    options.rtol = 1e-10;
    options.atol = 1e-12;
    return options;
}

/// The demo's horizon: long enough for every regime to show.
constexpr double demo_t_end = 100.0;

/// Integrates one scenario, writes <dir>/<name>.csv and returns its row of the table.
inline std::vector<std::string> run_scenario(const Scenario& sc, const std::filesystem::path& dir) {
    const SelectiveSystem<double> system(S6Params<double>::one_dimensional(sc.system));
    const StateVector<double> x0 =
        Eigen::Map<const StateVector<double>>(sc.tokens.data(), static_cast<Eigen::Index>(sc.tokens.size()));
    const SimulateResult<double> r = simulate(system, x0, demo_t_end, demo_options());

    const std::string csv = (dir / (std::string(sc.name) + ".csv")).string();
    std::ofstream file = open_for_writing(csv, "--out-dir");
    write_trajectory_csv(file, r);
    close_checked(file, csv);

    using detail::format;
    const OneDimensional<double>& s = sc.system;
    return {sc.name, format(s.mu), format(s.s), format(s.a), format(s.b), detail::format_tokens(x0),
            to_string(r.status), format(r.t_final),
            r.t_blowup ? "t_blowup = " + format(*r.t_blowup, 8) : "x(t_final) = " + detail::format_tokens(r.x_final)};
}

/// `ssmdyn demo [--out-dir DIR]`; returns the exit code.
inline int run_demo(const std::vector<std::string>& args) {
    const Arguments parsed = parse_arguments(args, {"--out-dir"}, "demo");
    if (!parsed.positional.empty())
        throw std::invalid_argument("demo: unexpected argument '" + parsed.positional[0] + "'");
    const std::filesystem::path dir = parsed.text("--out-dir").value_or("ssmdyn-demo");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::invalid_argument("--out-dir: cannot create '" + dir.string() + "': " + ec.message());

    const std::vector<Scenario> scenarios = paper_scenarios();
    std::vector<std::vector<std::string>> table = {
        {"scenario", "mu", "s", "a", "b", "x(0)", "status", "t_final", "outcome"}};
    for (const Scenario& sc : scenarios) table.push_back(run_scenario(sc, dir));

    const SimulateOptions<double> options = demo_options();
    std::cout << "The paper's three 1-D regimes, dx/dt = S6(x) with mu = S_C^T S_B, s = S_Delta,\n"
              << "A = -a, b = delta_bias (" << to_string(options.stepper) << ", rtol " << options.rtol << ", atol "
              << options.atol << "):\n\n";
    print_table(std::cout, table);
    std::cout << "\nCSV files (t,x1_1,x2_1,...): one per scenario, <scenario>.csv\n";
    const std::filesystem::path script = dir / "plots.gp";
    std::ofstream gp = open_for_writing(script.string(), "--out-dir");
    detail::write_plot_script(gp, scenarios);
    close_checked(gp, script.string());
    if (!gnuplot_available())
        std::cout << "gnuplot not found on PATH: PNG plots skipped\n";
    else if (run_gnuplot(script))
        std::cout << "PNG plots (gnuplot): " << scenarios.size() << " files, <scenario>.png\n";
    else
        std::cout << "gnuplot failed: PNG plots skipped (script: " << script.string() << ")\n";
    std::cout << "Output folder: " << dir.string() << '\n';
    return 0;
}

}  // namespace ssmdyn::cli
