// The deep selective SSM is forward Euler on dX/dt = S6(X): at a fixed depth-time T = K·h
// the tokens after K residual layers converge to the ODE solution at first order.
// Prints depth K, step h, the error against the ODE (Fehlberg 7/8 at rtol 1e-13), and the
// observed order log2(error(K/2) / error(K)), which tends to 1. (With fewer than 16
// layers, h >= 1/8, this model's Euler steps are unstable and the tokens explode although
// the ODE's stay bounded: a shallow residual stack is not near its continuous limit.)
//
//   build/bin/depth_limit [SEED]

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include <ssmdyn/ssmdyn.hpp>

int main(int argc, char** argv) {
    using namespace ssmdyn;
    const Eigen::Index D = 8, N = 8, L = 16;
    const double T = 1.0;

    // A random layer like a trained one: S_* entries N(0, 1/D), Mamba's decays A_{d,n} = −n,
    // and μ = −S_Cᵀ S_C (negative semi-definite), so the tokens stay bounded up to T.
    std::mt19937 rng(argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 7u);
    std::normal_distribution<double> gauss(0.0, 1.0 / std::sqrt(double(D)));
    auto random = [&](Eigen::Index r, Eigen::Index c) {
        return MatrixX<double>(MatrixX<double>::NullaryExpr(r, c, [&] { return gauss(rng); }));
    };
    S6Params<double> p;
    p.S_C = random(N, D);
    p.S_B = -p.S_C;
    p.S_Delta = random(D, D);
    p.delta_bias = random(D, 1);
    p.A = -VectorX<double>::LinSpaced(N, 1, double(N)).transpose().replicate(D, 1);
    const MatrixX<double> X0 = std::sqrt(double(D)) * random(D, L);

    SimulateOptions<double> ode_options;
    ode_options.stepper = Stepper::Fehlberg78;
    ode_options.rtol = ode_options.atol = 1e-13;
    ode_options.record = Record::None;
    const auto ode = simulate(SelectiveSystem<double>(p), to_state(X0), T, ode_options);
    if (ode.status != Status::Completed) {
        std::printf("the ODE run ended with %s\n", to_string(ode.status));
        return 1;
    }
    const auto X_T = token_matrix(ode.x_final, D);

    std::printf("D = %ld, N = %ld, L = %ld, T = K h = %g, |X(T) - X(0)|_max = %.3g\n\n", long(D),
                long(N), long(L), T, (X_T - X0).cwiseAbs().maxCoeff());
    std::printf("%8s  %12s  %14s  %8s\n", "depth K", "step h", "max error", "order");
    double previous = 0;
    for (Eigen::Index K = 16; K <= 4096; K *= 2) {
        DeepModelOptions<double> o;
        o.depth = K;
        o.step = T / double(K);
        const auto deep = deep_forward(p, X0, o);
        if (!deep.finite) {
            std::printf("%8ld  %12.6g  overflow after %ld layers\n", long(K), o.step, long(deep.layers_completed));
            continue;
        }
        const double error = (deep.tokens - X_T).cwiseAbs().maxCoeff();
        if (previous > 0)
            std::printf("%8ld  %12.6g  %14.6e  %8.4f\n", long(K), o.step, error, std::log2(previous / error));
        else
            std::printf("%8ld  %12.6g  %14.6e  %8s\n", long(K), o.step, error, "-");
        previous = error;
    }
}
