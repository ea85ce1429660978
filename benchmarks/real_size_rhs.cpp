// One right-hand side S6(X) at the size of a real Mamba layer (mamba-130m: d_inner D = 1536,
// N = 16, dt_rank R = 48; L = 1024 tokens), in double and float, on 1 and 2 threads.
//
// The layer is drawn like a trained one would look to the scan: S_Δ of rank R as its two
// factors (never multiplied out), A = −exp(A_log) with A_log = log(n+1) perturbed by
// N(0, 0.1²) (so no structured-decay fast path applies), b_Δ = softplus⁻¹(dt) with dt
// log-uniform in [1e-3, 0.1] (Mamba's initialisation), S_B, S_C, S_Delta_down entries
// N(0, 1/D), S_Delta_up entries N(0, 1/R), tokens N(0, 1).
//
//   build/bin/real_size_rhs [--D 1536] [--N 16] [--L 1024] [--R 48] [--seed 1] [--repeats 5]
//                           [--out DIR]
//
// Prints one JSON object: milliseconds per right-hand side (best of --repeats after a
// warm-up) as double_1thread_ms, float_1thread_ms, double_2threads_ms, float_2threads_ms
// (the 2-thread figures only when the build has OpenMP), the relative difference of float
// and double, and whether 2 threads gave the same bits as 1. With --out DIR it also writes
// the problem and both outputs as NumPy .npy files for benchmarks/compare_torch.py: S_B,
// S_C (N×D), W_dt (D×R), W_x (R×D), b (D), A (D×N), X (D×L), Y_double, Y_float (D×L).
// Exit status 1 if 2 threads do not reproduce 1 thread bit for bit.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/selective_scan.hpp>

namespace {

struct Options {
    Eigen::Index D = 1536, N = 16, L = 1024, R = 48;
    unsigned seed = 1;
    int repeats = 5;
    std::string out;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
        const std::string value = argv[++i];
        auto positive = [&](long min) {
            const long v = std::stol(value);
            if (v < min) throw std::invalid_argument(flag + " must be >= " + std::to_string(min));
            return v;
        };
        if (flag == "--D") o.D = positive(1);
        else if (flag == "--N") o.N = positive(1);
        else if (flag == "--L") o.L = positive(1);
        else if (flag == "--R") o.R = positive(1);
        else if (flag == "--seed") o.seed = static_cast<unsigned>(positive(0));
        else if (flag == "--repeats") o.repeats = static_cast<int>(positive(1));
        else if (flag == "--out") o.out = value;
        else throw std::invalid_argument("unknown option " + flag);
    }
    return o;
}

struct Problem {
    ssmdyn::S6Params<double> params;
    Eigen::MatrixXd X;
};

Problem draw(const Options& o) {
    std::mt19937 rng(o.seed);
    std::normal_distribution<double> gauss(0.0, 1.0);
    auto gaussian = [&](Eigen::Index rows, Eigen::Index cols, double scale) {
        Eigen::MatrixXd m(rows, cols);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = scale * gauss(rng);
        return m;
    };
    const double s = 1 / std::sqrt(double(o.D));
    Problem p;
    p.params.S_B = gaussian(o.N, o.D, s);
    p.params.S_C = gaussian(o.N, o.D, s);
    p.params.S_Delta_down = gaussian(o.R, o.D, s);
    p.params.S_Delta_up = gaussian(o.D, o.R, 1 / std::sqrt(double(o.R)));
    std::uniform_real_distribution<double> log_dt(std::log(1e-3), std::log(0.1));
    p.params.delta_bias.resize(o.D);
    for (Eigen::Index d = 0; d < o.D; ++d) {
        const double dt = std::exp(log_dt(rng));
        p.params.delta_bias(d) = dt + std::log(-std::expm1(-dt));  // softplus⁻¹(dt)
    }
    p.params.A.resize(o.D, o.N);
    for (Eigen::Index d = 0; d < o.D; ++d)
        for (Eigen::Index n = 0; n < o.N; ++n) p.params.A(d, n) = -std::exp(std::log(double(n + 1)) + 0.1 * gauss(rng));
    p.params.validate();
    p.X = gaussian(o.D, o.L, 1.0);
    return p;
}

/// Best time of `repeats` scans (after one warm-up), in milliseconds; the output in Y.
template <typename Scalar>
double time_scan(const ssmdyn::S6Params<Scalar>& params, const ssmdyn::MatrixX<Scalar>& X,
                 ssmdyn::MatrixX<Scalar>& Y, int threads, int repeats) {
    const ssmdyn::LayerOptions<Scalar> none;
    Y.resize(X.rows(), X.cols());
    ssmdyn::selective_scan(params, ssmdyn::Softplus{}, X, Y, none, threads);
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        ssmdyn::selective_scan(params, ssmdyn::Softplus{}, X, Y, none, threads);
        best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
}

/// A column-major matrix as a NumPy .npy file (fortran_order, so the bytes are Eigen's).
template <typename Scalar>
void write_npy(const std::string& path, const ssmdyn::MatrixX<Scalar>& m, bool vector = false) {
    std::string header = std::string("{'descr': '<") + (sizeof(Scalar) == 8 ? "f8" : "f4") +
                         "', 'fortran_order': True, 'shape': (" + std::to_string(m.rows()) +
                         (vector ? ",), }" : ", " + std::to_string(m.cols()) + "), }");
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::ofstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot write " + path);
    const unsigned short length = static_cast<unsigned short>(header.size());
    f.write("\x93NUMPY\x01\x00", 8);
    f.put(static_cast<char>(length & 0xff)).put(static_cast<char>(length >> 8));
    f << header;
    f.write(reinterpret_cast<const char*>(m.data()), static_cast<std::streamsize>(sizeof(Scalar) * m.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) try {
    const Options o = parse(argc, argv);
    const Problem p = draw(o);
    const ssmdyn::S6Params<float> pf = p.params.cast<float>();
    const Eigen::MatrixXf Xf = p.X.cast<float>();
    Eigen::MatrixXd Y, Y2;
    Eigen::MatrixXf Yf, Yf2;
    const double d1 = time_scan(p.params, p.X, Y, 1, o.repeats);
    const double f1 = time_scan(pf, Xf, Yf, 1, o.repeats);
    std::printf("{\"D\": %ld, \"N\": %ld, \"L\": %ld, \"R\": %ld,\n", long(o.D), long(o.N), long(o.L), long(o.R));
    std::printf(" \"double_1thread_ms\": %.3f, \"float_1thread_ms\": %.3f,\n", d1, f1);
    bool identical = true;
#ifdef _OPENMP
    const double d2 = time_scan(p.params, p.X, Y2, 2, o.repeats);
    const double f2 = time_scan(pf, Xf, Yf2, 2, o.repeats);
    identical = Y2 == Y && Yf2 == Yf;
    std::printf(" \"double_2threads_ms\": %.3f, \"float_2threads_ms\": %.3f,\n", d2, f2);
#endif
    const double scale = Y.cwiseAbs().maxCoeff();
    std::printf(" \"float_vs_double_max_error\": %.3g, \"threads_bitwise_identical\": %s}\n",
                (Yf.cast<double>() - Y).cwiseAbs().maxCoeff() / scale, identical ? "true" : "false");
    if (!o.out.empty()) {
        write_npy(o.out + "/S_B.npy", p.params.S_B);
        write_npy(o.out + "/S_C.npy", p.params.S_C);
        write_npy(o.out + "/W_dt.npy", p.params.S_Delta_up);
        write_npy(o.out + "/W_x.npy", p.params.S_Delta_down);
        write_npy(o.out + "/b.npy", Eigen::MatrixXd(p.params.delta_bias), true);
        write_npy(o.out + "/A.npy", p.params.A);
        write_npy(o.out + "/X.npy", p.X);
        write_npy(o.out + "/Y_double.npy", Y);
        write_npy(o.out + "/Y_float.npy", Yf);
    }
    return identical ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "real_size_rhs: %s\n", e.what());
    return 2;
}
