#pragma once
// The training side of the train_toy example: Adam on mini-batches, the learning curve,
// the per-token gradient shares, and the regime of the trained layer.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/theory/classify.hpp>
#include <ssmdyn/theory/rates.hpp>

#include "network.hpp"
#include "tasks.hpp"

namespace ssmdyn::toy {

/// Adam (Kingma & Ba) with its usual defaults, on every tensor of a network.
class Adam {
public:
    explicit Adam(const Tensors& like, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
        : m_(like.zeros_like()), v_(like.zeros_like()), lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {}

    /// One step of t against the gradient g (shaped alike).
    void step(Tensors& t, Tensors g) {
        ++steps_;
        const double c1 = 1 - std::pow(beta1_, double(steps_)), c2 = 1 - std::pow(beta2_, double(steps_));
        // The four structures, walked in the same order, as flat arrays.
        auto flat = [](Tensors& x) {
            std::vector<Eigen::Map<Eigen::ArrayXd>> out;
            x.for_each([&](auto& m) { out.emplace_back(m.data(), m.size()); });
            return out;
        };
        auto T = flat(t), G = flat(g), M = flat(m_), V = flat(v_);
        for (std::size_t i = 0; i < T.size(); ++i) {
            M[i] = beta1_ * M[i] + (1 - beta1_) * G[i];
            V[i] = beta2_ * V[i] + (1 - beta2_) * G[i].square();
            T[i] -= lr_ * (M[i] / c1) / ((V[i] / c2).sqrt() + eps_);
        }
    }

private:
    Tensors m_, v_;
    double lr_, beta1_, beta2_, eps_;
    long steps_ = 0;
};

/// The global 2-norm of all tensors.
inline double global_norm(Tensors& g) {
    double sum = 0;
    g.for_each([&](auto& m) { sum += m.squaredNorm(); });
    return std::sqrt(sum);
}

struct TrainOptions {
    int epochs = 30;
    int batch = 32;
    double lr = 5e-3;
    double clip = 10.0;  ///< the gradient's global norm is clipped to this (the usual guard)
};

/// One epoch of the learning curve.
struct EpochRecord {
    int epoch = 0;
    double train_loss = 0;     ///< mean over the epoch's samples (those that stayed finite)
    double test_accuracy = 0;  ///< after the epoch
    Eigen::VectorXd shares;    ///< mean share of ‖∂loss/∂x_l‖ per scan position over the epoch's
                               ///< samples with a nonzero gradient (sums to 1)
    int skipped = 0;           ///< samples whose forward pass overflowed (no gradient)
    int skipped_batches = 0;   ///< batches whose gradient was not finite (no step)
};

struct Evaluation {
    double loss = 0, accuracy = 0;
    int overflowed = 0;
};

/// Mean loss (over the samples that stay finite) and accuracy (an overflow counts as wrong).
inline Evaluation evaluate(const NetworkConfig& c, const Tensors& t, const Dataset& data) {
    Evaluation e;
    int correct = 0, finite = 0;
    for (std::size_t i = 0; i < data.inputs.size(); ++i) {
        const SampleResult r = run_sample(c, t, data.inputs[i], data.labels[i]);
        if (!r.finite) {
            ++e.overflowed;
            continue;
        }
        ++finite;
        e.loss += r.loss;
        correct += r.predicted == data.labels[i];
    }
    e.loss = finite > 0 ? e.loss / finite : std::numeric_limits<double>::infinity();
    e.accuracy = data.inputs.empty() ? 0 : double(correct) / double(data.inputs.size());
    return e;
}

struct TrainResult {
    Tensors tensors;
    double initial_loss = 0, final_loss = 0;  ///< mean training loss before and after
    double test_accuracy = 0;
    std::vector<EpochRecord> curve;
};

/// Trains a network initialised from `seed` on task.train (batches in an order drawn
/// from the seed); deterministic for a seed.
inline TrainResult train(const NetworkConfig& c, const Task& task, const TrainOptions& o, std::uint64_t seed) {
    TrainResult out;
    out.tensors = init_network(c, seed);
    Tensors& t = out.tensors;
    Adam adam(t, o.lr);
    out.initial_loss = evaluate(c, t, task.train).loss;
    detail::Rng order_rng(seed, 11);
    std::vector<std::size_t> order(task.train.inputs.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    for (int epoch = 1; epoch <= o.epochs; ++epoch) {
        order_rng.shuffle(order);
        EpochRecord rec;
        rec.epoch = epoch;
        rec.shares = Eigen::VectorXd::Zero(task.length);
        int seen = 0, with_gradient = 0;
        for (std::size_t start = 0; start < order.size(); start += std::size_t(o.batch)) {
            const std::size_t stop = std::min(order.size(), start + std::size_t(o.batch));
            Tensors g = t.zeros_like();
            int used = 0;
            for (std::size_t i = start; i < stop; ++i) {
                const std::size_t s = order[i];
                const SampleResult r = run_sample(c, t, task.train.inputs[s], task.train.labels[s], &g);
                if (!r.finite) {
                    ++rec.skipped;
                    continue;
                }
                ++used;
                rec.train_loss += r.loss;
                if (r.shares.sum() > 0) {  // a saturated softmax gives no gradient: no shares either
                    rec.shares += r.shares;
                    ++with_gradient;
                }
            }
            if (used == 0) continue;
            seen += used;
            g.for_each([&](auto& m) { m /= double(used); });
            const double norm = global_norm(g);
            if (!std::isfinite(norm)) {  // an overflow inside the backward pass: no step
                ++rec.skipped_batches;
                continue;
            }
            if (norm > o.clip) g.for_each([&](auto& m) { m *= o.clip / norm; });
            adam.step(t, std::move(g));
        }
        if (seen > 0) rec.train_loss /= seen;
        if (with_gradient > 0) rec.shares /= with_gradient;
        rec.test_accuracy = evaluate(c, t, task.test).accuracy;
        out.curve.push_back(std::move(rec));
    }
    out.final_loss = evaluate(c, t, task.train).loss;
    out.test_accuracy = out.curve.empty() ? evaluate(c, t, task.test).accuracy : out.curve.back().test_accuracy;
    return out;
}

/// What the trained (first) S6 layer does as an ODE, dX/dt = S6(X), from the embedded
/// (and reordered) tokens of `u`: the theorems' prediction (classify) and the regime a
/// run to t_end shows (observed_regime).
struct LayerRegime {
    Regime predicted = Regime::Undetermined;
    Regime observed = Regime::Undetermined;
};

inline LayerRegime trained_regime(const NetworkConfig& c, const Tensors& t, const Eigen::MatrixXd& u,
                                  double t_end = 100) {
    const S6Params<double> p = s6_params(c, t.layers.front());
    Eigen::MatrixXd X0 = (t.E * u).colwise() + t.e;
    if (c.reorder) X0 = reorder(X0, increasing_order(importance_scores(p, t.k, X0)));
    SimulateOptions<double> options;
    options.record = Record::None;
    options.max_steps = 200000;
    LayerRegime out;
    out.predicted = classify(p, X0).regime;
    out.observed = observed_regime(simulate(SelectiveSystem<double>(p), X0, t_end, options));
    return out;
}

}  // namespace ssmdyn::toy
