// What a trained Mamba layer's S6 does to its tokens: reads one mixer layer of a
// .safetensors checkpoint, summarises the spectrum of mu = S_C^T S_B (the paper labels
// its scenarios by the signs of the eigenvalues of its symmetric part), then runs a few
// random token sets through the continuous system dX/dt = S6(X) and through the deep
// residual model, and says what the tokens did.
//
//   build/bin/inspect_checkpoint CHECKPOINT [LAYER] [--json] [--tokens L] [--sets K]
//   build/bin/inspect_checkpoint --make-demo FILE     (writes a small random 2-layer
//                                                      Mamba-shaped checkpoint to try it on)
//
// Nothing is downloaded. Exit status 2 with one line on stderr for bad input: a file that
// is not a regular file or not a valid checkpoint, a LAYER, --tokens or --sets that is not
// a whole number in range (99999999999 is refused, not truncated), or a layer whose dense
// d_inner x d_inner matrices would not fit in memory (physical memory, or
// SSMDYN_MEMORY_LIMIT=bytes with an optional K, M, G suffix), refused before they are built.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <ssmdyn/io.hpp>
#include <ssmdyn/ssmdyn.hpp>

namespace {

using namespace ssmdyn;

struct Arguments {
    std::string path;
    int layer = 0;
    bool json = false;
    Eigen::Index tokens = 8, sets = 3;
};

/// `text` as a whole number from 0 to max: decimal digits only, no sign or spaces, and
/// never truncated (99999999999 as a layer is refused, not read as 1215752191).
std::int64_t whole_number(const std::string& flag, const std::string& text, std::int64_t max) {
    std::int64_t v = 0;
    bool ok = !text.empty();
    for (char c : text) {
        if (c < '0' || c > '9' || v > (max - (c - '0')) / 10) {
            ok = false;
            break;
        }
        v = v * 10 + (c - '0');
    }
    if (!ok)
        throw std::invalid_argument(flag + ": expected a whole number from 0 to " + std::to_string(max) + ", got '" +
                                    text + "'");
    return v;
}

/// A random Mamba-1-shaped checkpoint (d_inner = 32, N = 8, dt_rank = 4, two layers), with
/// Mamba's initialisation of A_log = log(1..N) and dt_proj.bias = softplus^-1(dt) for dt
/// log-uniform in [1e-3, 1e-1]: a stand-in for a real file.
void make_demo(const std::string& path) {
    const Eigen::Index d = 32, n = 8, r = 4;
    std::mt19937 rng(2025);
    std::normal_distribution<double> g(0, 1);
    std::uniform_real_distribution<double> u(std::log(1e-3), std::log(1e-1));
    auto gauss = [&](Eigen::Index rows, Eigen::Index cols, double scale) {
        return MatrixX<double>(MatrixX<double>::NullaryExpr(rows, cols, [&] { return scale * g(rng); }));
    };
    std::vector<NamedTensor> tensors;
    for (int layer = 0; layer < 2; ++layer) {
        const std::string p = "backbone.layers." + std::to_string(layer) + ".mixer.";
        VectorX<double> bias(d);
        for (Eigen::Index i = 0; i < d; ++i) {
            const double dt = std::exp(u(rng));
            bias(i) = dt + std::log(-std::expm1(-dt));  // inverse softplus
        }
        const MatrixX<double> a_log =
            VectorX<double>::LinSpaced(n, 1, double(n)).array().log().matrix().transpose().replicate(d, 1);
        tensors.push_back(NamedTensor::from_matrix(p + "x_proj.weight", gauss(r + 2 * n, d, 1 / std::sqrt(double(d))), DType::F32));
        tensors.push_back(NamedTensor::from_matrix(p + "dt_proj.weight", gauss(d, r, 1 / std::sqrt(double(r))), DType::F32));
        tensors.push_back(NamedTensor::from_vector(p + "dt_proj.bias", bias, DType::F32));
        tensors.push_back(NamedTensor::from_matrix(p + "A_log", a_log, DType::F32));
        tensors.push_back(NamedTensor::from_vector(p + "D", VectorX<double>::Ones(d), DType::F32));
    }
    write_safetensors(path, tensors, {{"format", "pt"}, {"note", "ssmdyn inspect_checkpoint demo"}});
}

Arguments parse(int argc, char** argv) {
    Arguments a;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string w = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(w + ": needs a value");
            return argv[++i];
        };
        if (w == "--json")
            a.json = true;
        else if (w == "--tokens")
            a.tokens = whole_number(w, value(), 1000000000);
        else if (w == "--sets")
            a.sets = whole_number(w, value(), 1000000);
        else if (w == "--make-demo") {
            const std::string path = value();
            make_demo(path);
            std::cout << "wrote " << path << '\n';
            std::exit(0);
        } else if (!w.empty() && w[0] == '-')
            throw std::invalid_argument(w + ": unknown option");
        else
            positional.push_back(w);
    }
    if (positional.empty() || positional.size() > 2)
        throw std::invalid_argument("usage: inspect_checkpoint CHECKPOINT [LAYER] [--json] [--tokens L] [--sets K]");
    a.path = positional[0];
    if (positional.size() == 2)
        a.layer = static_cast<int>(whole_number("LAYER", positional[1], std::numeric_limits<int>::max()));
    if (a.tokens < 1) throw std::invalid_argument("--tokens: need at least one token");
    return a;
}

std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

}  // namespace

/// Refuses, before anything of that size exists, a layer whose d_inner (as its A_log
/// declares it) makes the dense matrices below, or the token sets, too large for memory.
void check_memory(const SafetensorsFile& file, const Arguments& args) {
    const std::string key = "backbone.layers." + std::to_string(args.layer) + ".mixer.A_log";
    if (!file.contains(key) || file.info(key).shape.size() != 2) return;  // load_mamba_layer names the problem
    const std::int64_t d = file.info(key).shape[0];
    const std::string layer = "layer " + std::to_string(args.layer) + " of '" + args.path + "' (d_inner = " +
                              std::to_string(d) + ")";
    // S_Delta, the system's copy of it, mu, its symmetric part, the eigenvectors and the
    // eigensolver's workspace: six d_inner x d_inner matrices.
    check_allocation(checked_bytes(6, d, d, sizeof(double)),
                     layer + ": six dense " + std::to_string(d) + " x " + std::to_string(d) +
                         " matrices of doubles (S_Delta and a copy, mu, its symmetric part, eigenvectors, workspace)");
    // One token set: X0 (D x L) and the integrator's working copies of the state.
    check_allocation(checked_bytes(17, d, args.tokens, sizeof(double)),
                     layer + ": a token set of L = " + std::to_string(args.tokens) +
                         " tokens and the integrator's copies of it (--tokens)");
}

int main(int argc, char** argv) try {
    const Arguments args = parse(argc, argv);
    const SafetensorsFile file(args.path);
    check_memory(file, args);
    const MambaLayer layer = load_mamba_layer(file, args.layer);
    const S6Params<double>& p = layer.params;
    const Eigen::Index D = layer.d_inner;

    // The spectrum of the symmetric part of μ, as classify() reports it.
    const Classification<double> c = classify(p, StateVector<double>::Ones(D));
    const VectorX<double>& eig = c.mu_sym_eigenvalues;
    const double tol = 64 * std::numeric_limits<double>::epsilon() * eig.cwiseAbs().maxCoeff();
    const long positive = (eig.array() > tol).count(), negative = (eig.array() < -tol).count();

    // A few random token sets through the ODE (t up to 10) and the deep model (24 layers, h = 1).
    std::mt19937 rng(1);
    std::normal_distribution<double> g(0, 1);
    const SelectiveSystem<double> system(p);
    std::vector<std::string> runs;
    for (Eigen::Index k = 0; k < args.sets; ++k) {
        const MatrixX<double> X0 = MatrixX<double>::NullaryExpr(D, args.tokens, [&] { return g(rng); });
        SimulateOptions<double> so;
        so.record = Record::None;
        so.max_steps = 20000;  // a bounded look, not a full study: status max_steps says so
        const StateVector<double> x0 = to_state(X0);
        const auto ode = simulate(system, x0, 10.0, so);
        DeepModelOptions<double> deep_options;
        deep_options.depth = 24;
        const auto deep = deep_forward(p, X0, deep_options);
        const double n0 = X0.cwiseAbs().maxCoeff();
        runs.push_back("{\"ode_status\": \"" + std::string(to_string(ode.status)) + "\", \"ode_t_final\": " +
                       number(ode.t_final) + ", \"ode_observed_regime\": \"" +
                       to_string(observed_regime(ode)) + "\", \"ode_growth\": " +
                       number(ode.x_final.cwiseAbs().maxCoeff() / n0) + ", \"deep_layers\": " +
                       std::to_string(deep.layers_completed) + ", \"deep_finite\": " +
                       (deep.finite ? "true" : "false") + ", \"deep_growth\": " +
                       number(deep.tokens.cwiseAbs().maxCoeff() / n0) + "}");
    }

    if (args.json) {
        std::cout << "{\"path\": \"" << args.path << "\", \"layer\": " << args.layer
                  << ", \"d_inner\": " << D << ", \"n_state\": " << layer.n_state
                  << ", \"dt_rank\": " << layer.dt_rank << ", \"mu_sym_positive\": " << positive
                  << ", \"mu_sym_negative\": " << negative << ", \"mu_sym_max\": " << number(eig.maxCoeff())
                  << ", \"mu_sym_min\": " << number(eig.minCoeff()) << ", \"scenario\": \""
                  << to_string(c.scenario) << "\", \"runs\": [";
        for (std::size_t i = 0; i < runs.size(); ++i) std::cout << (i ? ", " : "") << runs[i];
        std::cout << "]}\n";
        return 0;
    }
    std::printf("%s, layer %d: d_inner = %ld, N = %ld, dt_rank = %ld\n", args.path.c_str(), args.layer,
                long(D), long(layer.n_state), long(layer.dt_rank));
    std::printf("mu = S_C^T S_B (%ldx%ld, rank <= N): symmetric part has %ld positive and %ld negative "
                "eigenvalues,\n  largest %.6g, smallest %.6g: scenario %s\n",
                long(D), long(D), positive, negative, eig.maxCoeff(), eig.minCoeff(), to_string(c.scenario));
    std::printf("\n%ld random token sets (L = %ld, entries N(0,1)):\n", long(args.sets), long(args.tokens));
    for (const std::string& r : runs) std::printf("  %s\n", r.c_str());
    return 0;
} catch (const std::invalid_argument& e) {
    std::cerr << "inspect_checkpoint: " << e.what() << '\n';
    return 2;
} catch (const std::exception& e) {
    std::cerr << "inspect_checkpoint: " << e.what() << '\n';
    return 1;
}
