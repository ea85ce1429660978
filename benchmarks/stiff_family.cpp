// The stiff family of issue 12: random D = 16, N = 16, L = 256 systems with an indefinite
// μ = S_Cᵀ S_B, integrated to t = 10 with simulate() at rtol 1e-8 (every other setting at
// its default unless a flag below changes it), one CSV row per seed:
//
//   seed,status,t_final,t_blowup,steps,rejected,rhs_evaluations,stiff_steps,switches,seconds,cpu_seconds
//
// (t_blowup empty when the run did not blow up; switches = the number of stiffness
// switches; seconds = the wall time of simulate() alone, cpu_seconds its processor time,
// which a loaded machine does not inflate). Most seeds blow up within a
// second; some approach their blow-up along a stiff path on which an explicit stepper
// crawls. The check: every seed ends in blow_up (or completed), none in
// max_steps, each within 10 s, and the blow-up times agree to 1e-6 relative with an
// independent implicit solver, benchmarks/stiff_family_radau.py (SciPy's Radau with an
// exact Jacobian), which reads the files that --dump writes.
//
// The problem of seed s: std::mt19937 seeded with s, std::normal_distribution<double>(0, 1),
// the draws in this order, each matrix filled in column-major order (entry (i, j) of an
// R×C matrix is draw i + j·R), every entry scaled by 1/√D:
//   S_B (N×D), S_C (N×D), S_Δ (D×D), then the tokens X (D×L, column l = token l).
// A[d, n] = −(n + 1) and delta_bias = −1 for every channel (no draws).
// std::normal_distribution is implementation-defined, so the numbers are those of this
// standard library (libstdc++ here); --dump writes them down for other tools.
//
// Usage:
//   stiff_family [--seeds N] [--first S] [--dump DIR] [--stepper NAME] [--max-steps M]
//                [--max-seconds S] [--no-stiff-switching] [--t-end T] [--rtol R] [--atol A]
//     --seeds N             number of seeds (default 30)
//     --first S             first seed (default 1): seeds S .. S+N−1
//     --dump DIR            write DIR/seed_<s>.txt for each seed (parameters, tokens and
//                           ssmdyn's right-hand side at the tokens, %.17g), see dump()
//     --stepper NAME        SimulateOptions::stepper (default dopri5)
//     --max-steps M         SimulateOptions::max_steps (default: simulate's, 1000000)
//     --max-seconds S       SimulateOptions::max_wall_seconds (default 0: none)
//     --no-stiff-switching  SimulateOptions::stiff_switching = false (default: on)
//     --t-end T             the horizon (default 10)
//     --rtol R, --atol A    the tolerances (default 1e-8 and simulate's 1e-10; for convergence
//                           studies: the check uses the defaults)
// Exit status 0, or 2 for invalid arguments (and for options simulate() refuses).
//
// Build (Release) and run:
//   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
//   cmake --build build --target stiff_family && build/bin/stiff_family --dump stiff_dump > ssmdyn.csv
//   /usr/bin/python3 benchmarks/stiff_family_radau.py stiff_dump --ssmdyn-csv ssmdyn.csv

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>

namespace {

constexpr Eigen::Index kD = 16, kN = 16, kL = 256;

struct Problem {
    ssmdyn::S6Params<double> params;
    Eigen::MatrixXd tokens;  // D×L, column l = token l
};

/// The problem of one seed (see the file comment for the order of the draws).
Problem make_problem(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    const double scale = 1.0 / std::sqrt(double(kD));
    auto draw = [&](Eigen::Index rows, Eigen::Index cols) {
        Eigen::MatrixXd m(rows, cols);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = scale * gauss(rng);  // column-major
        return m;
    };
    Problem p;
    p.params.S_B = draw(kN, kD);
    p.params.S_C = draw(kN, kD);
    p.params.S_Delta = draw(kD, kD);
    p.tokens = draw(kD, kL);
    p.params.delta_bias = Eigen::VectorXd::Constant(kD, -1.0);
    p.params.A.resize(kD, kN);
    for (Eigen::Index n = 0; n < kN; ++n) p.params.A.col(n).setConstant(-double(n + 1));
    p.params.validate();
    return p;
}

void write_matrix(std::FILE* f, const char* name, const Eigen::MatrixXd& m) {
    std::fprintf(f, "%s %ld %ld\n", name, long(m.rows()), long(m.cols()));
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
        for (Eigen::Index j = 0; j < m.cols(); ++j) std::fprintf(f, j ? " %.17g" : "%.17g", m(i, j));
        std::fputc('\n', f);
    }
}

/// DIR/seed_<s>.txt: a line "stiff_family seed <s> D <D> N <N> L <L> t_end <T> rtol <r> atol <a>
/// blowup_norm <b>", then the matrices, each as a line "<name> <rows> <cols>" and its rows
/// (%.17g, space-separated): S_B (N×D), S_C (N×D), S_Delta (D×D), delta_bias (D×1),
/// A (D×N), X0 (D×L, column l = token l) and F0 (D×L): ssmdyn's right-hand side S6(X0).
void dump(const std::filesystem::path& dir, std::uint32_t seed, const Problem& p,
          const ssmdyn::SelectiveSystem<double>& system, const ssmdyn::SimulateOptions<double>& o, double t_end) {
    const ssmdyn::StateVector<double> x0 = Eigen::Map<const Eigen::VectorXd>(p.tokens.data(), p.tokens.size());
    ssmdyn::StateVector<double> f0(x0.size());
    system(x0, f0, 0.0);
    const auto path = dir / ("seed_" + std::to_string(seed) + ".txt");
    std::FILE* f = std::fopen(path.string().c_str(), "w");
    if (!f) throw std::runtime_error("cannot write " + path.string());
    std::fprintf(f, "stiff_family seed %u D %ld N %ld L %ld t_end %.17g rtol %.17g atol %.17g blowup_norm %.17g\n",
                 unsigned(seed), long(kD), long(kN), long(kL), t_end, o.rtol, o.atol, o.blowup_norm);
    write_matrix(f, "S_B", p.params.S_B);
    write_matrix(f, "S_C", p.params.S_C);
    write_matrix(f, "S_Delta", p.params.S_Delta);
    write_matrix(f, "delta_bias", p.params.delta_bias);
    write_matrix(f, "A", p.params.A);
    write_matrix(f, "X0", p.tokens);
    write_matrix(f, "F0", Eigen::Map<const Eigen::MatrixXd>(f0.data(), kD, kL));
    const bool ok = std::ferror(f) == 0;
    if (std::fclose(f) != 0 || !ok) throw std::runtime_error("error writing " + path.string());
}

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "stiff_family: %s\nusage: stiff_family [--seeds N] [--first S] [--dump DIR] [--stepper NAME] "
                 "[--max-steps M] [--max-seconds S] [--no-stiff-switching] [--t-end T] [--rtol R] [--atol A]\n",
                 why.c_str());
    std::exit(2);
}

/// A non-negative decimal integer, whole string.
unsigned long long parse_count(const std::string& flag, const std::string& s) {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) usage(flag + " needs a decimal integer, got '" + s + "'");
    try {
        return std::stoull(s);
    } catch (const std::exception&) {
        usage(flag + " is out of range: '" + s + "'");
    }
}

/// A finite decimal number >= 0, whole string (no hexadecimal, no inf/nan).
double parse_number(const std::string& flag, const std::string& s) {
    if (s.empty() || s.find_first_not_of("0123456789.eE+-") != std::string::npos) usage(flag + " needs a decimal number, got '" + s + "'");
    std::size_t used = 0;
    double v = 0;
    try {
        v = std::stod(s, &used);
    } catch (const std::exception&) {
        usage(flag + " needs a decimal number, got '" + s + "'");
    }
    if (used != s.size() || !std::isfinite(v) || v < 0) usage(flag + " needs a finite decimal number >= 0, got '" + s + "'");
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    unsigned long long seeds = 30, first = 1;
    std::string dump_dir;
    double t_end = 10.0;
    ssmdyn::SimulateOptions<double> options;
    options.rtol = 1e-8;
    options.record = ssmdyn::Record::None;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "--seeds") seeds = parse_count(a, value());
        else if (a == "--first") first = parse_count(a, value());
        else if (a == "--dump") dump_dir = value();
        else if (a == "--stepper") {
            const std::string name = value();
            try {
                options.stepper = ssmdyn::parse_stepper(name);
            } catch (const std::exception& e) {
                usage(e.what());
            }
        } else if (a == "--max-steps") {
            options.max_steps = std::size_t(parse_count(a, value()));
            if (options.max_steps == 0) usage("--max-steps must be >= 1");
        } else if (a == "--max-seconds") options.max_wall_seconds = parse_number(a, value());
        else if (a == "--no-stiff-switching") options.stiff_switching = false;
        else if (a == "--t-end") t_end = parse_number(a, value());
        else if (a == "--rtol") options.rtol = parse_number(a, value());
        else if (a == "--atol") options.atol = parse_number(a, value());
        else if (a == "-h" || a == "--help") usage("help");
        else usage("unknown argument '" + a + "'");
    }
    if (first > 0xffffffffULL || seeds > 0xffffffffULL - first + 1) usage("seeds must fit in 32 bits");
    if (!dump_dir.empty()) std::filesystem::create_directories(dump_dir);

    std::printf("seed,status,t_final,t_blowup,steps,rejected,rhs_evaluations,stiff_steps,switches,seconds,cpu_seconds\n");
    std::fflush(stdout);
    std::map<std::string, int> tally;
    double slowest = 0;
    for (unsigned long long k = 0; k < seeds; ++k) {
        const auto seed = std::uint32_t(first + k);
        const Problem p = make_problem(seed);
        const ssmdyn::SelectiveSystem<double> system(p.params);
        try {
            if (!dump_dir.empty()) dump(dump_dir, seed, p, system, options, t_end);
            const auto start = std::chrono::steady_clock::now();
            const std::clock_t cpu_start = std::clock();
            const auto r = ssmdyn::simulate(system, p.tokens, t_end, options);
            const double cpu_seconds = double(std::clock() - cpu_start) / CLOCKS_PER_SEC;
            const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            char blowup[40] = "";
            if (r.t_blowup) std::snprintf(blowup, sizeof blowup, "%.17g", *r.t_blowup);
            std::printf("%u,%s,%.17g,%s,%zu,%zu,%zu,%zu,%zu,%.3f,%.3f\n", unsigned(seed), ssmdyn::to_string(r.status),
                        r.t_final, blowup, r.steps, r.rejected_steps, r.rhs_evaluations, r.stiff_steps,
                        r.stiff_switches.size(), seconds, cpu_seconds);
            std::fflush(stdout);
            ++tally[ssmdyn::to_string(r.status)];
            if (seconds > slowest) slowest = seconds;
        } catch (const std::invalid_argument& e) {
            usage(std::string("seed ") + std::to_string(seed) + ": " + e.what());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "stiff_family: seed %u: %s\n", unsigned(seed), e.what());
            return 1;
        }
    }
    std::fprintf(stderr, "stiff_family: %llu seeds from %llu, stepper %s, stiff switching %s:", seeds, first,
                 ssmdyn::to_string(options.stepper), options.stiff_switching ? "on" : "off");
    for (const auto& [status, count] : tally) std::fprintf(stderr, " %s %d", status.c_str(), count);
    std::fprintf(stderr, "; slowest %.3f s\n", slowest);
    return 0;
}
