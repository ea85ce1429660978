#pragma once
// The benchmarks' seeded random problems, drawn in one order so that every benchmark means
// the same thing by "a random layer": S_B, S_C, S_Δ and b_Δ with entries N(0, 1/D), then
// the decays A uniform in [-2, -0.1] (general decays: D·N exponentials per token).

#include <cmath>
#include <random>

#include <Eigen/Core>

#include <ssmdyn/core/params.hpp>

namespace bench {

/// A rows×cols matrix of independent N(0, scale²) entries.
inline Eigen::MatrixXd gaussian(std::mt19937& rng, Eigen::Index rows, Eigen::Index cols, double scale = 1.0) {
    std::normal_distribution<double> gauss(0.0, 1.0);
    Eigen::MatrixXd m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = scale * gauss(rng);
    return m;
}

/// A random D-channel layer with N states per channel (see the file comment).
inline ssmdyn::S6Params<double> random_layer(std::mt19937& rng, Eigen::Index D, Eigen::Index N) {
    const double s = 1.0 / std::sqrt(double(D));
    ssmdyn::S6Params<double> p;
    p.S_B = gaussian(rng, N, D, s);
    p.S_C = gaussian(rng, N, D, s);
    p.S_Delta = gaussian(rng, D, D, s);
    p.delta_bias = gaussian(rng, D, 1, s);
    std::uniform_real_distribution<double> decay(0.1, 2.0);
    p.A.resize(D, N);
    for (Eigen::Index i = 0; i < p.A.size(); ++i) p.A(i) = -decay(rng);
    p.validate();
    return p;
}

}  // namespace bench
