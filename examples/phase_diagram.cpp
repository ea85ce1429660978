// The 1-D phase diagram: for fixed tokens, every (mu, s) on a grid classified by the
// theorem and by simulation (in parallel with OpenMP when available), the agreement
// reported, and the observed regimes drawn as a PNG with gnuplot when it is installed.
//
//   build/bin/phase_diagram [N] [OUTPUT_FOLDER]     (an N x N grid, default 101)

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <ssmdyn/io.hpp>
#include <ssmdyn/ssmdyn.hpp>

int main(int argc, char** argv) {
    using namespace ssmdyn;
    const int n = argc > 1 ? std::atoi(argv[1]) : 101;
    const std::filesystem::path dir = argc > 2 ? argv[2] : "phase-diagram-out";
    if (n < 2) {
        std::fprintf(stderr, "phase_diagram: N must be >= 2\n");
        return 2;
    }
    std::filesystem::create_directories(dir);
    PhaseGrid grid;  // a = 1, b = 0
    grid.mu.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) grid.mu[std::size_t(i)] = -2.0 + 4.0 * i / (n - 1);
    grid.s = grid.mu;
    // Every token negative: s > 0 gives s·x_l < 0 for all l (slow divergence when mu > 0),
    // s <= 0 makes every token blow up on its own (fast divergence when mu > 0).
    const StateVector<double> tokens = (StateVector<double>(4) << -0.5, -1.0, -0.2, -1.5).finished();
    const double t_end = 100.0;

    const auto start = std::chrono::steady_clock::now();
    ProgressBar bar("phase diagram");  // on stderr, when it is a terminal
    const std::vector<PhaseCell> cells = phase_diagram(grid, tokens, t_end, {}, 0, std::ref(bar));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::size_t agree = 0;
    for (const PhaseCell& c : cells) agree += c.predicted == c.observed;
    const std::string csv_path = (dir / "phase_diagram.csv").string();
    std::ofstream csv = open_for_writing(csv_path, "phase_diagram");
    write_phase_diagram_csv(csv, cells);
    close_checked(csv, csv_path);
    std::printf("tokens x(0) = (-0.5, -1, -0.2, -1.5), a = 1, b = 0, t_end = %g\n", t_end);
    std::printf("%zu cells in %.2f s: prediction = observation in %zu (%.2f%%)\n", cells.size(), seconds, agree,
                100.0 * double(agree) / double(cells.size()));
    std::printf("(disagreements: fast divergence predicted, blow-up after t_end for mu near 0)\n");

    std::ofstream gp(dir / "phase_diagram.gp");
    gp << "set terminal pngcairo size 860,600 font ',11'\nset output 'phase_diagram.png'\n"
          "set datafile separator ','\nset xlabel '{/Symbol m}'\nset ylabel 's'\n"
          "set title 'observed regime, x(0) = (-0.5, -1, -0.2, -1.5), t <= 100'\n"
          "set palette defined (0 '#2b83ba', 1 '#fdae61', 2 '#d7191c', 3 '#999999', 4 '#000000')\n"
          "set cbrange [0:4]\nset rmargin 18\nset cbtics ('convergence' 0, 'slow divergence' 1, 'fast divergence' 2, "
          "'stationary' 3, 'undetermined' 4)\nset size ratio -1\n"
          // The CSV names the regimes; colour them by a code given here.
          "code(r) = r eq 'convergence' ? 0 : r eq 'slow_divergence' ? 1 : r eq 'fast_divergence' ? 2 : "
          "r eq 'stationary' ? 3 : 4\n"
          "plot 'phase_diagram.csv' skip 1 using 1:2:(code(strcol(4))) with image notitle\n";
    gp.close();
    if (run_gnuplot(dir / "phase_diagram.gp"))
        std::printf("figure: %s\n", (dir / "phase_diagram.png").string().c_str());
    return 0;
}
