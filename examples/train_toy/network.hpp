#pragma once
// The model side of the train_toy example: a small classifier whose body is K residual
// selective-SSM layers, trained by the library's exact backpropagation.
//
//   X⁽⁰⁾ = E·u + e                      (embedding of the d_in × L input to D channels)
//   X⁽⁰⁾ ← X⁽⁰⁾ Pᵀ                       (optional: the paper's importance reordering)
//   X⁽ᵏ⁺¹⁾ = X⁽ᵏ⁾ + h·S6_k(X⁽ᵏ⁾)          (k = 0 … K−1; one S6 shared, or one per layer)
//   logits = R·z + r,  z = the last token of X⁽ᴷ⁾ (or the mean of its tokens)
//   loss = cross-entropy of softmax(logits) and the label.
//
// S_B and S_C of every layer are free (variant "free") or the paper's first refinement
// S_C = U, S_B = W U with W = ±diag(softplus(w) + θ) (psd: μ = Uᵀ W U ⪰ 0; nsd: its
// negative control; mixed: half of W negated), U the unit upper-triangular part of a free
// N × D matrix. A = −exp(A_log). The second refinement scores the embedded tokens with
// s_l = kᵀ(S_Δ x_l + b_Δ) (the first layer's S_Δ, b_Δ) and sorts them increasingly with
// SoftSort: the hard permutation in the forward pass, the soft one's gradient in the
// backward pass (the straight-through estimator, as the authors train it).
//
// Every gradient is exact (selective_scan_vjp, soft_sort_vjp, importance_scores_vjp,
// input_output_matrices_vjp and the chain rule), except the straight-through step, which
// is exact when `hard_reorder` is off (the forward pass then uses the soft matrix too).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/scan_derivatives.hpp>
#include <ssmdyn/core/selective_scan.hpp>
#include <ssmdyn/core/step_size.hpp>
#include <ssmdyn/refinements/parameterization.hpp>
#include <ssmdyn/refinements/reordering.hpp>

#include "tasks.hpp"

namespace ssmdyn::toy {

/// How S_B and S_C are parameterised: free, or the first refinement and its controls.
enum class Variant { Free, Psd, Nsd, Mixed };

inline const char* to_string(Variant v) {
    switch (v) {
        case Variant::Free: return "free";
        case Variant::Psd: return "psd";
        case Variant::Nsd: return "nsd";
        case Variant::Mixed: return "mixed";
    }
    return "?";
}

inline Variant parse_variant(const std::string& name) {
    for (Variant v : {Variant::Free, Variant::Psd, Variant::Nsd, Variant::Mixed})
        if (name == to_string(v)) return v;
    throw std::invalid_argument("unknown variant '" + name + "'; expected free, psd, nsd or mixed");
}

/// The sizes and switches of a network.
struct NetworkConfig {
    int d_in = 1, classes = 2;
    int D = 16, N = 8, layers = 4;
    double step = 1.0;         ///< h of the residual layers
    bool tied = true;          ///< one S6 for every layer (the ODE's setting) or one per layer
    bool mean_readout = false; ///< read out the mean of the tokens instead of the last token
    Variant variant = Variant::Free;
    bool reorder = false;      ///< the second refinement
    bool hard_reorder = true;  ///< forward with the hard permutation (off: the soft matrix, for gradient checks)
    double tau = 1.0;          ///< SoftSort's temperature
    double theta = 0.7;        ///< the floor of |W_nn| in the refinement (the authors' value)

    void validate() const {
        if (d_in < 1 || classes < 2 || D < 1 || N < 1 || layers < 1)
            throw std::invalid_argument("NetworkConfig: need d_in, D, N, layers >= 1 and classes >= 2");
        if (!(step > 0) || !(tau > 0) || !(theta > 0))
            throw std::invalid_argument("NetworkConfig: step, tau and theta must be > 0");
    }
};

/// One layer's trainable tensors.
struct LayerTensors {
    Eigen::MatrixXd B;       ///< N × D: S_B (free), unused otherwise (empty)
    Eigen::MatrixXd C;       ///< N × D: S_C (free), or the free matrix whose unit upper-triangular part is U
    Eigen::VectorXd w;       ///< N: W's free diagonal (refinement variants), else empty
    Eigen::MatrixXd S_Delta; ///< D × D
    Eigen::VectorXd b;       ///< D: b_Δ
    Eigen::MatrixXd A_log;   ///< D × N: A = −exp(A_log)
};

/// Every trainable tensor of a network (gradients have the same type and shapes).
struct Tensors {
    Eigen::MatrixXd E;  ///< D × d_in
    Eigen::VectorXd e;  ///< D
    std::vector<LayerTensors> layers;  ///< one (tied) or K
    Eigen::VectorXd k;  ///< D: the importance direction (reorder), else empty
    Eigen::MatrixXd R;  ///< classes × D
    Eigen::VectorXd r;  ///< classes

    /// f(tensor) for every tensor, in a fixed order (for the optimiser and for checks);
    /// f takes `auto&` (the tensors are matrices and vectors).
    template <typename F>
    void for_each(F f) {
        f(E), f(e);
        for (LayerTensors& l : layers) f(l.B), f(l.C), f(l.w), f(l.S_Delta), f(l.b), f(l.A_log);
        f(k), f(R), f(r);
    }

    /// Zeros shaped like *this.
    Tensors zeros_like() const {
        Tensors z = *this;
        z.for_each([](auto& m) { m.setZero(); });
        return z;
    }
};

/// The S6 parameters a layer's tensors stand for.
inline S6Params<double> s6_params(const NetworkConfig& c, const LayerTensors& l) {
    S6Params<double> p;
    if (c.variant == Variant::Free) {
        p.S_B = l.B;
        p.S_C = l.C;
    } else {
        const MuSign sign = c.variant == Variant::Psd   ? MuSign::PositiveSemidefinite
                            : c.variant == Variant::Nsd ? MuSign::NegativeSemidefinite
                                                        : MuSign::Mixed;
        InputOutputMatrices<double> io = input_output_matrices(unit_upper_triangular(l.C), l.w, c.theta, sign);
        p.S_B = std::move(io.S_B);
        p.S_C = std::move(io.S_C);
    }
    p.S_Delta = l.S_Delta;
    p.delta_bias = l.b;
    p.A = -l.A_log.array().exp().matrix();
    return p;
}

/// A network initialised as a Mamba layer is (A_log = log(1 … N), b_Δ = softplus⁻¹(dt)
/// with dt log-uniform in [1e-3, 1e-1]) with linear maps uniform in ±fan_in^(−1/2), and S_Δ
/// uniform in ±0.1·D^(−1/2). Deterministic for a seed.
inline Tensors init_network(const NetworkConfig& c, std::uint64_t seed) {
    c.validate();
    detail::Rng rng(seed, 7);
    auto uniform = [&](int rows, int cols, double bound) {
        Eigen::MatrixXd m(rows, cols);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = rng.uniform(-bound, bound);
        return m;
    };
    Tensors t;
    t.E = uniform(c.D, c.d_in, 1 / std::sqrt(double(c.d_in)));
    t.e = uniform(c.D, 1, 1 / std::sqrt(double(c.d_in)));
    for (int k = 0; k < (c.tied ? 1 : c.layers); ++k) {
        LayerTensors l;
        const double bound = 1 / std::sqrt(double(c.D));
        if (c.variant == Variant::Free) l.B = uniform(c.N, c.D, bound);
        l.C = uniform(c.N, c.D, bound);
        if (c.variant != Variant::Free) l.w = uniform(c.N, 1, 1.0);
        l.S_Delta = uniform(c.D, c.D, 0.1 * bound);
        l.b.resize(c.D);
        for (int d = 0; d < c.D; ++d) {
            const double dt = std::exp(rng.uniform(std::log(1e-3), std::log(1e-1)));
            l.b(d) = dt + std::log(-std::expm1(-dt));  // softplus⁻¹(dt)
        }
        l.A_log.resize(c.D, c.N);
        for (int n = 0; n < c.N; ++n) l.A_log.col(n).setConstant(std::log(double(n + 1)));
        t.layers.push_back(std::move(l));
    }
    if (c.reorder) t.k = uniform(c.D, 1, 1 / std::sqrt(double(c.D)));
    t.R = uniform(c.classes, c.D, 1 / std::sqrt(double(c.D)));
    t.r = Eigen::VectorXd::Zero(c.classes);
    return t;
}

/// What one sample's forward and backward pass gives.
struct SampleResult {
    double loss = 0;
    int predicted = -1;
    bool finite = true;        ///< false: a layer overflowed; no gradient (grads untouched)
    Eigen::VectorXd shares;    ///< ‖∂loss/∂x_l‖ at the first layer's input, l in scan order, summing to 1
                               ///< (all 0 when the gradient is 0: a saturated softmax)
};

/// The network on one sample: loss and prediction; with `grads` (shaped like `t`), adds
/// this sample's gradient to it.
inline SampleResult run_sample(const NetworkConfig& c, const Tensors& t, const Eigen::MatrixXd& u, int label,
                               Tensors* grads = nullptr) {
    const Eigen::Index L = u.cols();
    SampleResult out;
    const std::size_t n_sets = t.layers.size();
    std::vector<S6Params<double>> params;
    for (const LayerTensors& l : t.layers) params.push_back(s6_params(c, l));

    // Embedding, then the optional reordering.
    const Eigen::MatrixXd X0 = (t.E * u).colwise() + t.e;
    Eigen::VectorXd scores;
    Eigen::MatrixXd P_soft;
    std::vector<Eigen::MatrixXd> X(1, X0);
    if (c.reorder) {
        scores = importance_scores(params[0], t.k, X0);
        const Eigen::VectorXd neg = -scores;  // SoftSort sorts decreasingly: the most important token last
        P_soft = soft_sort(neg, c.tau);
        const Eigen::MatrixXd P = c.hard_reorder ? soft_sort(neg, c.tau, 1.0, true) : P_soft;
        X[0] = X0 * P.transpose();
    }
    // The residual layers.
    Eigen::MatrixXd Y(c.D, L);
    for (int k = 0; k < c.layers; ++k) {
        const S6Params<double>& p = params[c.tied ? 0 : std::size_t(k)];
        selective_scan(p, Softplus{}, X.back(), Y);
        X.push_back(X.back() + c.step * Y);
        if (!X.back().allFinite()) {
            out.finite = false;
            out.loss = std::numeric_limits<double>::infinity();
            return out;
        }
    }
    // Read-out and loss.
    const Eigen::VectorXd z = c.mean_readout ? Eigen::VectorXd(X.back().rowwise().mean()) : Eigen::VectorXd(X.back().col(L - 1));
    const Eigen::VectorXd logits = t.R * z + t.r;
    const double top = logits.maxCoeff();
    const Eigen::VectorXd expd = (logits.array() - top).exp();
    const double sum = expd.sum();
    out.loss = std::log(sum) + top - logits(label);
    logits.maxCoeff(&out.predicted);
    if (grads == nullptr) return out;

    // Backward.
    Eigen::VectorXd g_logits = expd / sum;
    g_logits(label) -= 1;
    grads->R += g_logits * z.transpose();
    grads->r += g_logits;
    const Eigen::VectorXd gz = t.R.transpose() * g_logits;
    Eigen::MatrixXd G = Eigen::MatrixXd::Zero(c.D, L);
    if (c.mean_readout)
        G.colwise() = gz / double(L);
    else
        G.col(L - 1) = gz;
    std::vector<S6Gradients<double>> layer_grads(n_sets);
    for (std::size_t s = 0; s < n_sets; ++s) layer_grads[s] = S6Gradients<double>::zeros_like(params[s]);
    S6Gradients<double> one;
    Eigen::MatrixXd gX(c.D, L);
    for (int k = c.layers; k-- > 0;) {
        const std::size_t s = c.tied ? 0 : std::size_t(k);
        selective_scan_vjp(params[s], Softplus{}, X[std::size_t(k)], Eigen::MatrixXd(c.step * G), gX, one);
        G += gX;
        layer_grads[s].add(one);
    }
    out.shares = G.colwise().norm().transpose();
    if (out.shares.sum() > 0) out.shares /= out.shares.sum();
    Eigen::MatrixXd gX0 = G;
    if (c.reorder) {
        // X = X0 Pᵀ: ∂/∂X0 = G P, ∂/∂P = Gᵀ X0, both through the soft matrix.
        gX0 = G * P_soft;
        const Eigen::MatrixXd gP = G.transpose() * X0;
        const Eigen::VectorXd g_scores = -soft_sort_vjp(Eigen::VectorXd(-scores), c.tau, 1.0, gP);
        const ImportanceScoreGradients<double> gs = importance_scores_vjp(params[0], t.k, X0, g_scores);
        grads->k += gs.k;
        gX0 += gs.X;
        layer_grads[0].S_Delta += gs.S_Delta;
        layer_grads[0].delta_bias += gs.delta_bias;
    }
    grads->E += gX0 * u.transpose();
    grads->e += gX0.rowwise().sum();
    // The S6 gradients to the tensors that make the parameters.
    for (std::size_t s = 0; s < n_sets; ++s) {
        const LayerTensors& l = t.layers[s];
        LayerTensors& g = grads->layers[s];
        const S6Gradients<double>& p = layer_grads[s];
        if (c.variant == Variant::Free) {
            g.B += p.S_B;
            g.C += p.S_C;
        } else {
            const MuSign sign = c.variant == Variant::Psd   ? MuSign::PositiveSemidefinite
                                : c.variant == Variant::Nsd ? MuSign::NegativeSemidefinite
                                                            : MuSign::Mixed;
            const InputOutputGradients<double> io =
                input_output_matrices_vjp(unit_upper_triangular(l.C), l.w, c.theta, sign, p.S_B, p.S_C);
            g.C += unit_upper_triangular_vjp(io.U);
            g.w += io.w;
        }
        g.S_Delta += p.S_Delta;
        g.b += p.delta_bias;
        g.A_log += p.A.cwiseProduct(params[s].A);  // ∂A/∂A_log = A
    }
    return out;
}

}  // namespace ssmdyn::toy
