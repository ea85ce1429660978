// Which input tokens move the output, regime by regime: the token influence matrix
// I(l, j) = |dx_l(T)/dx_j(0)|_F from forward sensitivities, and each input token's share
// of the gradient of the loss 1/2 |X(T)|^2 -- the measurable side of the paper's remark
// that diverging tokens "contribute unequally to the updates during training".
//
// The paper's three 1-D scenarios (convergence and slow divergence at t = 10 and 100; fast
// divergence at 0.5, 0.9 and 0.99 T*, T* the quadrature blow-up time of token 1), and a
// random D = N = 4, L = 8 layer (seeded): as drawn (indefinite mu; it blows up) at 0.5, 0.9
// and 0.99 of its blow-up time, and with mu = -S_C^T S_C (negative definite) at t = 10 and
// 100. For each: the influence matrix, the gradient shares (also averaged over random loss
// gradients G ~ N(0, I), "rand G": which inputs the flow amplifies whatever the loss, since
// 1/2 |X(T)|^2 weights the large final tokens), the size of the whole gradient, a CSV
// (l,j,influence, 1-based) and, with gnuplot, a heatmap of log10 I per scenario.
//
//   build/bin/token_influence [OUTPUT_FOLDER]        (default: token-influence-out)

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ssmdyn/io.hpp>
#include <ssmdyn/ssmdyn.hpp>

namespace {

using namespace ssmdyn;

std::string number(double v, const char* format = "%.3g") {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

/// One system with its tokens and the horizons to look at.
struct Case {
    std::string name;  ///< also the base name of its files
    std::string label;
    S6Params<double> params;
    MatrixX<double> tokens;  ///< D×L
    std::vector<double> horizons;
    std::vector<std::string> horizon_labels;
};

/// A random layer like the tests' (entries N(0, 1/D), decays in [-2, -0.1], no bias) and
/// N(0, 1) tokens, fixed by the seed.
Case random_case(unsigned seed, Eigen::Index D, Eigen::Index N, Eigen::Index L) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    std::uniform_real_distribution<double> decay(0.1, 2.0);
    auto matrix = [&](Eigen::Index rows, Eigen::Index cols, double scale) {
        MatrixX<double> m(rows, cols);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = scale * gauss(rng);
        return m;
    };
    Case c;
    c.params.S_B = matrix(N, D, 1 / std::sqrt(double(D)));
    c.params.S_C = matrix(N, D, 1 / std::sqrt(double(D)));
    c.params.S_Delta = matrix(D, D, 1 / std::sqrt(double(D)));
    c.params.delta_bias = VectorX<double>::Zero(D);
    c.params.A.resize(D, N);
    for (Eigen::Index i = 0; i < c.params.A.size(); ++i) c.params.A(i) = -decay(rng);
    c.tokens = matrix(D, L, 1.0);
    return c;
}

/// Mean shares over `samples` random loss gradients G ~ N(0, I) at X(T): which input
/// tokens the flow amplifies, whatever the loss (½|X(T)|² weights the large final tokens).
VectorX<double> mean_random_shares(const TokenInfluence<double>& r, int samples, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    VectorX<double> mean = VectorX<double>::Zero(r.tokens.cols());
    MatrixX<double> G(r.tokens.rows(), r.tokens.cols());
    for (int k = 0; k < samples; ++k) {
        for (Eigen::Index i = 0; i < G.size(); ++i) G(i) = gauss(rng);
        mean += gradient_shares(r, G).shares;
    }
    return mean / samples;
}

}  // namespace

int main(int argc, char** argv) {
    const std::filesystem::path dir = argc > 1 ? argv[1] : "token-influence-out";
    std::filesystem::create_directories(dir);
    SimulateOptions<double> options;
    options.rtol = 1e-10;
    options.atol = 1e-12;
    options.record = Record::None;

    std::vector<Case> cases;
    for (const Scenario& sc : paper_scenarios()) {
        Case c;
        c.name = sc.name;
        c.label = std::string(sc.name) + " (1-D, mu = " + number(sc.system.mu) + ", s = " + number(sc.system.s) + ")";
        c.params = S6Params<double>::one_dimensional(sc.system);
        c.tokens = Eigen::Map<const MatrixX<double>>(sc.tokens.data(), 1, static_cast<Eigen::Index>(sc.tokens.size()));
        const Classification<double> predicted = classify(c.params, c.tokens);
        if (predicted.first_token_blowup_time) {
            const double T = *predicted.first_token_blowup_time;
            c.horizons = {0.5 * T, 0.9 * T, 0.99 * T};
            c.horizon_labels = {"0.5 T*", "0.9 T*", "0.99 T*"};
        } else {
            c.horizons = {10.0, 100.0};
            c.horizon_labels = {"t = 10", "t = 100"};
        }
        cases.push_back(c);
    }
    {
        Case c = random_case(1, 4, 4, 8);
        const SimulateResult<double> run = simulate(SelectiveSystem<double>(c.params), c.tokens, 100.0, options);
        c.name = "random_d4";
        c.label = "random D = N = 4, L = 8, seed 1 (mu indefinite)";
        if (run.status == Status::BlowUp) {
            c.horizons = {0.5 * run.t_final, 0.9 * run.t_final, 0.99 * run.t_final};
            c.horizon_labels = {"0.5 t_blowup", "0.9 t_blowup", "0.99 t_blowup"};
            c.label += ": blows up at t = " + number(run.t_final, "%.6f");
        } else {
            c.horizons = {10.0, 100.0};
            c.horizon_labels = {"t = 10", "t = 100"};
            c.label += ": " + std::string(to_string(run.status)) + " at t = 100";
        }
        cases.push_back(c);
        c.name = "random_d4_negative";
        c.label = "the same layer with S_B = -S_C (mu = -S_C^T S_C, negative definite)";
        c.params.S_B = -c.params.S_C;
        c.horizons = {10.0, 100.0};
        c.horizon_labels = {"t = 10", "t = 100"};
        cases.push_back(c);
    }

    std::vector<std::vector<std::string>> summary = {
        {"scenario", "horizon", "status", "share of token 1..L of the gradient of 1/2|X(T)|^2", "max/min share",
         "|dl/dX(0)|"}};
    for (const Case& c : cases) {
        const SelectiveSystem<double> system(c.params);
        const Eigen::Index L = c.tokens.cols();
        std::cout << "== " << c.label << "\n   x(0) norms:";
        for (Eigen::Index l = 0; l < L; ++l) std::cout << ' ' << number(c.tokens.col(l).norm());
        std::cout << "\n";
        for (std::size_t h = 0; h < c.horizons.size(); ++h) {
            const TokenInfluence<double> r = token_influence(system, c.tokens, c.horizons[h], options);
            const GradientShares<double> shares = gradient_shares(r, r.tokens);  // G = X(T)
            const VectorX<double> random = mean_random_shares(r, 200, 7);
            const std::string csv_path = (dir / (c.name + "_" + std::to_string(h + 1) + ".csv")).string();
            std::ofstream csv = open_for_writing(csv_path, "token_influence");
            write_influence_csv(csv, r.influence);
            close_checked(csv, csv_path);

            std::cout << "\n-- " << c.horizon_labels[h] << " (t = " << number(r.t_final, "%.6g") << ", "
                      << to_string(r.status) << ", " << r.simulation.steps << " steps)\n";
            std::vector<std::vector<std::string>> table = {{"I(l,j)"}};
            for (Eigen::Index j = 0; j < L; ++j) table[0].push_back("j=" + std::to_string(j + 1));
            table[0].push_back("|x_l(T)|");
            for (Eigen::Index l = 0; l < L; ++l) {
                std::vector<std::string> row = {"l=" + std::to_string(l + 1)};
                for (Eigen::Index j = 0; j < L; ++j) row.push_back(j > l ? "." : number(r.influence(l, j)));
                row.push_back(number(r.tokens.col(l).norm()));
                table.push_back(row);
            }
            std::vector<std::string> share_row = {"share"}, random_row = {"share(rand G)"};
            for (Eigen::Index j = 0; j < L; ++j) {
                share_row.push_back(number(shares.shares(j), "%.3f"));
                random_row.push_back(number(random(j), "%.3f"));
            }
            table.push_back(share_row);
            table.push_back(random_row);
            print_table(std::cout, table);

            std::string compact;
            for (Eigen::Index j = 0; j < L; ++j) compact += (j ? " " : "") + number(shares.shares(j), "%.3f");
            const double smallest = shares.shares.minCoeff();
            summary.push_back({c.name, c.horizon_labels[h], to_string(r.status), compact,
                               smallest > 0 ? number(shares.shares.maxCoeff() / smallest) : "inf",
                               number(shares.gradient.norm())});
        }
        std::cout << "\n";

        // One heatmap per horizon side by side: log10 I(l, j) on and below the diagonal.
        const std::filesystem::path script = dir / (c.name + ".gp");
        std::ofstream gp(script);
        gp << "set terminal pngcairo size " << 520 * c.horizons.size() << ",480 font ',10'\n"
           << "set output '" << c.name << ".png'\nset datafile separator ','\n"
           << "set multiplot layout 1," << c.horizons.size() << " title \"" << c.label << "\" noenhanced\n"
           << "set xlabel 'input token j'\nset ylabel 'output token l'\nset yrange [" << L + 0.5 << ":0.5]\n"
           << "set xrange [0.5:" << L + 0.5 << "]\nset cblabel 'log10 I(l,j)'\nset palette rgb 33,13,10\n"
           << "set xtics 1\nset ytics 1\n";
        for (std::size_t h = 0; h < c.horizons.size(); ++h)
            gp << "set title '" << c.horizon_labels[h] << "' noenhanced\nplot '" << c.name << "_" << h + 1
               << ".csv' skip 1 using 2:1:(($3 > 0) ? log10($3) : NaN) with image notitle\n";
        gp << "unset multiplot\n";
        gp.close();
        if (run_gnuplot(script)) std::cout << "heatmap: " << (dir / (c.name + ".png")).string() << "\n\n";
    }

    std::cout << "== Summary: each input token's share of |dl/dx_j(0)| for l = 1/2 |X(T)|^2\n";
    print_table(std::cout, summary);
    std::cout << "\ndata: " << dir.string() << "/<scenario>_<k>.csv for the k-th horizon (l,j,influence; 1-based l, j)\n";
}
