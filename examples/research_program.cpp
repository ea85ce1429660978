// A research program in forty lines, written from the README and the headers alone: a layer
// under the paper's first refinement, its predicted and observed fate, the fitted rates, the
// same tokens reordered by importance, and the trajectory as CSV.
//
//   build/bin/research_program [OUT.csv]        (default: research_program.csv)
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include <ssmdyn/io.hpp>
#include <ssmdyn/ssmdyn.hpp>

int main(int argc, char** argv) {
    using namespace ssmdyn;
    const Eigen::Index D = 4, N = 4, L = 6;
    std::mt19937 rng(7);
    std::normal_distribution<double> gauss(0.0, 1.0);
    auto random = [&](Eigen::Index r, Eigen::Index c) {
        MatrixX<double> m(r, c);
        for (double& v : m.reshaped()) v = gauss(rng);
        return m;
    };

    const auto io = input_output_matrices(unit_upper_triangular(random(N, D)), random(N, 1), 0.7);
    S6Params<double> params{io.S_B, io.S_C, random(D, D) / 2, VectorX<double>::Constant(D, -1.0), -MatrixX<double>::Ones(D, N)};
    const MatrixX<double> X0 = random(D, L) / 2;  // column l is token l

    const Classification<double> c = classify(params, X0);
    std::printf("predicted: %s (%s)\n", to_string(c.regime), c.reason.c_str());

    SimulateOptions<double> options;
    options.record = Record::Times;
    for (int k = 0; k <= 30; ++k) options.output_times.push_back(1e-3 * std::pow(1e4, k / 30.0));  // 1e-3 .. 10
    const SelectiveSystem<double> system(params);
    const SimulateResult<double> result = simulate(system, X0, 10.0, options);
    std::printf("%s at t = %g after %zu steps\n", to_string(result.status), result.t_final, result.steps);
    const Observation<double> seen = observe(result);
    for (const TokenRates<double>& t : seen.tokens)
        std::printf("token %ld: |x| ~ t^%.3f (R^2 %.3f)\n", long(t.index + 1), t.time_power.slope, t.time_power.r_squared);
    if (seen.t_blowup) std::printf("max |x| ~ (T* - t)^%.3f before the blow-up\n", seen.blowup_growth.slope);

    const VectorX<double> k = VectorX<double>::Ones(D);
    const MatrixX<double> reordered = reorder(X0, increasing_order(importance_scores(params, k, X0)));
    const SimulateResult<double> again = simulate(system, reordered, 10.0, options);
    std::printf("reordered: %s at t = %g\n", to_string(again.status), again.t_final);

    const std::string path = argc > 1 ? argv[1] : "research_program.csv";
    std::ofstream csv = open_for_writing(path, "research_program");
    write_trajectory_csv(csv, result);
    close_checked(csv, path);
}
