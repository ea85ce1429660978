#include "support.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ssmdyn/io/csv.hpp>

TEST_CASE("csv: a trajectory as t,x{l}_{d} with 1-based names, numbers that read back exactly") {
    ssmdyn::SimulateResult<double> r;
    r.dim = 2;
    ssmdyn::StateVector<double> x0(4), x1(4);
    x0 << 0.1, 1.0 / 3.0, -2.0, 1e-300;
    x1 << 0.2, 2.0 / 3.0, -4.0, 2e-300;
    r.times = {0.0, 0.125};
    r.states = {x0, x1};
    r.x_initial = x0;
    r.x_final = x1;
    std::ostringstream out;
    ssmdyn::write_trajectory_csv(out, r);
    std::istringstream in(out.str());
    std::string line;
    std::getline(in, line);
    CHECK(line == "t,x1_1,x1_2,x2_1,x2_2");  // token 1 channels 1, 2; token 2 channels 1, 2
    for (const auto& x : {x0, x1}) {
        REQUIRE(std::getline(in, line));
        std::vector<double> v;
        std::stringstream cells(line);
        for (std::string cell; std::getline(cells, cell, ',');) v.push_back(std::strtod(cell.c_str(), nullptr));
        REQUIRE(v.size() == 5);
        for (int i = 0; i < 4; ++i) CHECK(v[std::size_t(i) + 1] == x(i));  // bit for bit
    }
    CHECK_FALSE(std::getline(in, line));
}

TEST_CASE("csv: a phase diagram with regimes by name and an empty t_blowup without blow-up") {
    std::vector<ssmdyn::PhaseCell> cells(2);
    cells[0].mu = -1;
    cells[0].s = 0.5;
    cells[0].predicted = cells[0].observed = ssmdyn::Regime::Convergence;
    cells[1].mu = 1;
    cells[1].s = 0.5;
    cells[1].predicted = cells[1].observed = ssmdyn::Regime::FastDivergence;
    cells[1].t_blowup = 0.25;
    std::ostringstream out;
    ssmdyn::write_phase_diagram_csv(out, cells);
    CHECK(out.str() == "mu,s,predicted,observed,t_blowup\n-1,0.5,convergence,convergence,\n"
                       "1,0.5,fast_divergence,fast_divergence,0.25\n");
}

TEST_CASE("csv: files that cannot be written are refused by name, failed writes reported") {
    const std::string m = test::message_of([] { (void)ssmdyn::open_for_writing("/nonexistent/x.csv", "--out"); });
    CHECK(m.find("--out: cannot write '/nonexistent/x.csv'") == 0);
    std::ifstream probe("/dev/full");
    if (probe) {  // Linux: every write to /dev/full fails with ENOSPC
        std::ofstream full = ssmdyn::open_for_writing("/dev/full", "--out");
        full << std::string(1 << 16, 'x');
        CHECK_THROWS_AS(ssmdyn::close_checked(full, "/dev/full"), std::runtime_error);
    }
}

TEST_CASE("csv: an influence matrix, one row per (l, j), 1-based") {
    Eigen::MatrixXd I(2, 2);
    I << 1.5, 0.0, 0.25, 2.0;
    std::ostringstream out;
    ssmdyn::write_influence_csv(out, I);
    CHECK(out.str() == "l,j,influence\n1,1,1.5\n1,2,0\n2,1,0.25\n2,2,2\n");
}
