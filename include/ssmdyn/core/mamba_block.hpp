#pragma once
/// \file mamba_block.hpp
/// The whole Mamba-1 model, as `mamba_ssm`'s `Mamba` computes it without its fused kernels:
/// the mixer, the residual block with its norm, the stack, `norm_f` and the tied `lm_head`,
/// in double or float. Its selective scan is the ODE's right-hand side (selective_scan with
/// the skip D and the SiLU(z) gate), so the paper's S6 is exactly the part of a real layer
/// that this library integrates.
///
/// For the hidden states H (d_model × L, token l in column l) and the residual stream R:
///
///     R ← H + R (R = H at the first block),   H ← mixer(norm(R))
///     mixer(x): [x_in; z] = in_proj·x,  u = SiLU(conv1d(x_in)),  [δ; B; C] = x_proj·u,
///               Δ = softplus(dt_proj.weight·δ + dt_proj.bias),  A = −exp(A_log),
///               y = (S6(u) + D ⊙ u) ⊙ SiLU(z),  out_proj·y
///     logits = lm_head · norm_f(H + R)
///
/// with conv1d depthwise and causal (width d_conv, left zero padding, with its bias) and
/// norm RMSNorm (mamba_ssm's default) or LayerNorm. In the library's terms the S6 layer of
/// a block acts on u (d_inner channels): S_B, S_C are x_proj's rows after the first
/// dt_rank, S_Δ = dt_proj.weight · x_proj[:dt_rank] (rank ≤ dt_rank), b_Δ = dt_proj.bias.
///
/// \code
/// ssmdyn::MambaModel<double> model = ssmdyn::load_mamba_model("model.safetensors");  // io
/// ssmdyn::MambaTrace<double> trace;
/// MatrixXd logits = ssmdyn::mamba_forward(model, std::vector<int>{1, 2, 3}, &trace);
/// \endcode

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "parallel_for.hpp"
#include "params.hpp"
#include "selective_scan.hpp"
#include "state.hpp"
#include "step_size.hpp"

namespace ssmdyn {

/// Sizes and switches of a Mamba-1 model (the names of mamba_ssm's MambaConfig).
struct MambaConfig {
    Eigen::Index n_layers = 0, d_model = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0, vocab_size = 0;
    /// RMSNorm (true, mamba_ssm's default) or LayerNorm with a bias.
    bool rms_norm = true;
    /// mamba_ssm keeps the residual stream in float32 when the model runs in half precision;
    /// here every computation is in one Scalar (float or double), so it changes nothing.
    bool residual_in_fp32 = true;
    /// The norms' ε.
    double norm_epsilon = 1e-5;
};

/// One mixer's weights. Optional biases are empty when the layer has none.
template <typename Scalar = double>
struct MambaMixer {
    MatrixX<Scalar> in_proj;       ///< 2·d_inner × d_model: rows [0, d_inner) give x_in, the rest z
    VectorX<Scalar> in_proj_bias;  ///< 2·d_inner, or empty
    MatrixX<Scalar> conv_weight;   ///< d_inner × d_conv (conv1d.weight without its middle axis)
    VectorX<Scalar> conv_bias;     ///< d_inner, or empty
    /// The S6 layer on u: S_B, S_C, S_Δ low rank (S_Delta_up = dt_proj.weight, d_inner ×
    /// dt_rank; S_Delta_down = x_proj.weight[:dt_rank], dt_rank × d_inner), b_Δ =
    /// dt_proj.bias, A = −exp(A_log).
    S6Params<Scalar> s6;
    VectorX<Scalar> D_skip;        ///< Mamba's D, d_inner
    MatrixX<Scalar> out_proj;      ///< d_model × d_inner
    VectorX<Scalar> out_proj_bias; ///< d_model, or empty

    Eigen::Index d_inner() const { return conv_weight.rows(); }
};

/// One residual block: the norm before the mixer, and the mixer.
template <typename Scalar = double>
struct MambaBlock {
    VectorX<Scalar> norm_weight;  ///< d_model
    VectorX<Scalar> norm_bias;    ///< d_model for LayerNorm; empty for RMSNorm
    MambaMixer<Scalar> mixer;
};

/// A whole Mamba-1 language model.
template <typename Scalar = double>
struct MambaModel {
    MambaConfig config;
    MatrixX<Scalar> embedding;    ///< vocab_size × d_model (row i embeds token i)
    std::vector<MambaBlock<Scalar>> layers;
    VectorX<Scalar> norm_f_weight;  ///< d_model
    VectorX<Scalar> norm_f_bias;    ///< d_model for LayerNorm; empty for RMSNorm
    MatrixX<Scalar> lm_head;      ///< vocab_size × d_model; empty: tied to the embedding

    const MatrixX<Scalar>& head() const { return lm_head.size() != 0 ? lm_head : embedding; }

    /// The same model in another scalar type (e.g. float for speed), every weight converted.
    template <typename Other>
    MambaModel<Other> cast() const;

    /// Checks every shape against `config` and every weight for finiteness (A < 0 through
    /// S6Params::validate); throws std::invalid_argument naming the layer and the field.
    void validate() const;
};

/// What one mixer computed for a prompt (all d_inner × L).
template <typename Scalar = double>
struct MixerTrace {
    MatrixX<Scalar> u;      ///< the S6 input, SiLU(conv1d(x_in))
    MatrixX<Scalar> z;      ///< the gate input
    MatrixX<Scalar> delta;  ///< the step sizes Δ
    MatrixX<Scalar> s6;     ///< S6(u), the paper's layer (no skip, no gate)
};

/// What the model computed for a prompt.
template <typename Scalar = double>
struct MambaTrace {
    /// The residual stream as mamba_ssm keeps it: hidden[0] the embeddings, hidden[k] =
    /// H + R after block k (before the next block's norm); d_model × L each.
    std::vector<MatrixX<Scalar>> hidden;
    /// Block k's mixer.
    std::vector<MixerTrace<Scalar>> mixers;
};

namespace detail {

template <typename Scalar, typename Derived>
MatrixX<Scalar> silu(const Eigen::MatrixBase<Derived>& z) {
    return (z.array() / (1 + (-z.array()).exp())).matrix();
}

/// Tokens per chunk of linear_tokens: wide enough for GEMM speed, fixed so that the
/// arithmetic does not depend on the thread count.
constexpr Eigen::Index kLinearChunk = 64;

/// W·X plus `bias` (empty: none) on every column, in chunks of kLinearChunk tokens shared
/// out over `threads` threads. Each chunk is the same serial product whichever thread
/// computes it, so the result is bitwise the same for every thread count (Eigen threading
/// one product itself would change its blocking, and its sums, with the count).
template <typename Scalar>
MatrixX<Scalar> linear_tokens(const MatrixX<Scalar>& W, const VectorX<Scalar>& bias, const MatrixX<Scalar>& X,
                              int threads) {
    MatrixX<Scalar> out(W.rows(), X.cols());
    const Eigen::Index chunks = (X.cols() + kLinearChunk - 1) / kLinearChunk;
    parallel_for(
        static_cast<std::size_t>(chunks),
        [&](std::size_t c) {
            const SerialEigenProducts serial;
            const Eigen::Index first = static_cast<Eigen::Index>(c) * kLinearChunk;
            const Eigen::Index n = std::min(kLinearChunk, X.cols() - first);
            out.middleCols(first, n).noalias() = W * X.middleCols(first, n);
            if (bias.size() != 0) out.middleCols(first, n).colwise() += bias;
        },
        std::max(threads, 1));
    return out;
}

}  // namespace detail

/// RMSNorm (x / sqrt(mean(x²) + ε) ⊙ w) or LayerNorm ((x − mean) / sqrt(var + ε) ⊙ w + b)
/// of every column of X, as the config says.
template <typename Scalar>
MatrixX<Scalar> mamba_norm(const MambaConfig& config, const VectorX<Scalar>& weight, const VectorX<Scalar>& bias,
                           const MatrixX<Scalar>& X) {
    const Scalar eps = Scalar(config.norm_epsilon);
    const Scalar n = Scalar(X.rows());
    MatrixX<Scalar> out(X.rows(), X.cols());
    for (Eigen::Index l = 0; l < X.cols(); ++l) {
        const auto x = X.col(l).array();
        if (config.rms_norm) {
            const Scalar scale = Scalar(1) / std::sqrt(x.square().sum() / n + eps);
            out.col(l).array() = x * scale * weight.array();
        } else {
            const Scalar mean = x.sum() / n;
            const Scalar scale = Scalar(1) / std::sqrt((x - mean).square().sum() / n + eps);
            out.col(l).array() = (x - mean) * scale * weight.array() + bias.array();
        }
    }
    return out;
}

/// The depthwise causal convolution: out[d, l] = b[d] + Σ_k w[d, k] · x[d, l − (K − 1) + k],
/// x taken as zero before the first token.
template <typename Scalar>
MatrixX<Scalar> mamba_causal_conv(const MatrixX<Scalar>& weight, const VectorX<Scalar>& bias,
                                  const MatrixX<Scalar>& X) {
    const Eigen::Index K = weight.cols(), L = X.cols();
    MatrixX<Scalar> out(X.rows(), L);
    if (bias.size() != 0)
        out.colwise() = bias;
    else
        out.setZero();
    for (Eigen::Index k = 0; k < K; ++k) {
        const Eigen::Index shift = K - 1 - k;  // tap k reads token l − shift
        if (shift >= L) continue;
        out.rightCols(L - shift).array() += X.leftCols(L - shift).array().colwise() * weight.col(k).array();
    }
    return out;
}

/// One mixer on normalised hidden states X (d_model × L) → d_model × L; with `trace`,
/// also what it computed inside. `threads` (>= 1) share the projections and the scan; the
/// result is bitwise the same for every count.
template <typename Scalar>
MatrixX<Scalar> mamba_mixer(const MambaMixer<Scalar>& m, const MatrixX<Scalar>& X,
                            MixerTrace<Scalar>* trace = nullptr, int threads = 1) {
    const Eigen::Index d_inner = m.d_inner(), L = X.cols();
    const MatrixX<Scalar> xz = detail::linear_tokens(m.in_proj, m.in_proj_bias, X, threads);
    MatrixX<Scalar> u = detail::silu<Scalar>(mamba_causal_conv(m.conv_weight, m.conv_bias, MatrixX<Scalar>(xz.topRows(d_inner))));
    MatrixX<Scalar> y(d_inner, L);
    if (trace == nullptr) {
        LayerOptions<Scalar> options;
        options.D_skip = m.D_skip;
        options.gate = xz.bottomRows(d_inner);
        selective_scan(m.s6, Softplus{}, u, y, options, threads);
    } else {
        // The same arithmetic as the scan's own skip and gate, with S6(u) kept.
        trace->s6.resize(d_inner, L);
        selective_scan(m.s6, Softplus{}, u, trace->s6, LayerOptions<Scalar>{}, threads);
        trace->z = xz.bottomRows(d_inner);
        y = trace->s6 + (u.array().colwise() * m.D_skip.array()).matrix();
        y.array() *= trace->z.array() / (1 + (-trace->z.array()).exp());
        trace->delta = m.s6.step_projection(u);
        trace->delta.colwise() += m.s6.delta_bias;
        auto delta = trace->delta.array();
        detail::apply_step_size(Softplus{}, delta, delta);
        trace->u = u;
    }
    return detail::linear_tokens(m.out_proj, m.out_proj_bias, y, threads);
}

/// The model on given embeddings (d_model × L): the logits, vocab_size × L. With `trace`,
/// the residual stream after every block and what every mixer computed. `threads` (>= 1)
/// share every projection, scan and the head; the result is bitwise the same for every count.
template <typename Scalar>
MatrixX<Scalar> mamba_forward_embeddings(const MambaModel<Scalar>& model, const MatrixX<Scalar>& embeddings,
                                         MambaTrace<Scalar>* trace = nullptr, int threads = 1) {
    const MambaConfig& c = model.config;
    if (embeddings.rows() != c.d_model || embeddings.cols() < 1)
        throw std::invalid_argument("mamba_forward: the embeddings are " + std::to_string(embeddings.rows()) + "x" +
                                    std::to_string(embeddings.cols()) + ", expected d_model = " +
                                    std::to_string(c.d_model) + " rows and at least one token");
    if (!embeddings.allFinite()) throw std::invalid_argument("mamba_forward: the embeddings are not all finite");
    if (threads < 1) throw std::invalid_argument("mamba_forward: threads = " + std::to_string(threads) + " must be >= 1");
    if (trace != nullptr) {
        trace->hidden.assign(1, embeddings);
        trace->mixers.assign(model.layers.size(), MixerTrace<Scalar>{});
    }
    MatrixX<Scalar> hidden = embeddings, residual;
    for (std::size_t k = 0; k < model.layers.size(); ++k) {
        const MambaBlock<Scalar>& block = model.layers[k];
        if (k == 0)
            residual = hidden;
        else
            residual += hidden;
        hidden = mamba_mixer(block.mixer, mamba_norm(c, block.norm_weight, block.norm_bias, residual),
                             trace != nullptr ? &trace->mixers[k] : nullptr, threads);
        if (trace != nullptr) trace->hidden.push_back(residual + hidden);
    }
    residual = model.layers.empty() ? hidden : MatrixX<Scalar>(residual + hidden);
    return detail::linear_tokens(model.head(), VectorX<Scalar>(),
                                 mamba_norm(c, model.norm_f_weight, model.norm_f_bias, residual), threads);
}

/// The model on token ids (each in [0, vocab_size)): the logits, vocab_size × L.
template <typename Scalar>
MatrixX<Scalar> mamba_forward(const MambaModel<Scalar>& model, const std::vector<std::int64_t>& ids,
                              MambaTrace<Scalar>* trace = nullptr, int threads = 1) {
    if (ids.empty()) throw std::invalid_argument("mamba_forward: no token ids");
    MatrixX<Scalar> embeddings(model.config.d_model, static_cast<Eigen::Index>(ids.size()));
    for (std::size_t l = 0; l < ids.size(); ++l) {
        if (ids[l] < 0 || ids[l] >= model.embedding.rows())
            throw std::invalid_argument("mamba_forward: token id " + std::to_string(ids[l]) + " (position " +
                                        std::to_string(l + 1) + ") is outside the vocabulary [0, " +
                                        std::to_string(model.embedding.rows()) + ")");
        embeddings.col(static_cast<Eigen::Index>(l)) = model.embedding.row(ids[l]).transpose();
    }
    return mamba_forward_embeddings(model, embeddings, trace, threads);
}

/// A model initialised as mamba_ssm initialises one (d_inner, d_state, d_conv, dt_rank,
/// vocab_size and n_layers from `config`): A_log = log(1 … N) in every channel, D = 1,
/// dt_proj.bias = softplus⁻¹(dt) with dt log-uniform in [1e-3, 1e-1], dt_proj.weight
/// uniform in ±dt_rank^(−1/2), linear layers uniform in ±fan_in^(−1/2) (PyTorch's default),
/// no linear biases, the convolution's weight and bias uniform in ±d_conv^(−1/2), norms
/// of weight 1, the embedding standard normal, the head tied. Deterministic for a seed.
/// For tests, demos and benchmarks at a real model's shapes.
inline MambaModel<double> mamba_init(const MambaConfig& config, std::uint64_t seed) {
    const MambaConfig& c = config;
    if (c.n_layers < 0 || c.d_model < 1 || c.d_inner < 1 || c.d_state < 1 || c.d_conv < 1 || c.dt_rank < 1 ||
        c.vocab_size < 1)
        throw std::invalid_argument("mamba_init: every size must be >= 1 (n_layers >= 0)");
    std::mt19937_64 rng(seed);
    auto uniform = [&](Eigen::Index rows, Eigen::Index cols, double bound) {
        std::uniform_real_distribution<double> u(-bound, bound);
        return MatrixX<double>(MatrixX<double>::NullaryExpr(rows, cols, [&]() { return u(rng); }));
    };
    MambaModel<double> m;
    m.config = c;
    std::normal_distribution<double> normal;
    m.embedding = MatrixX<double>::NullaryExpr(c.vocab_size, c.d_model, [&]() { return normal(rng); });
    m.norm_f_weight = VectorX<double>::Ones(c.d_model);
    if (!c.rms_norm) m.norm_f_bias = VectorX<double>::Zero(c.d_model);
    const double log_min = std::log(1e-3), log_max = std::log(1e-1);
    std::uniform_real_distribution<double> log_dt(log_min, log_max);
    for (Eigen::Index k = 0; k < c.n_layers; ++k) {
        MambaBlock<double> b;
        b.norm_weight = VectorX<double>::Ones(c.d_model);
        if (!c.rms_norm) b.norm_bias = VectorX<double>::Zero(c.d_model);
        MambaMixer<double>& x = b.mixer;
        x.in_proj = uniform(2 * c.d_inner, c.d_model, 1 / std::sqrt(double(c.d_model)));
        x.conv_weight = uniform(c.d_inner, c.d_conv, 1 / std::sqrt(double(c.d_conv)));
        x.conv_bias = uniform(c.d_inner, 1, 1 / std::sqrt(double(c.d_conv)));
        const MatrixX<double> x_proj = uniform(c.dt_rank + 2 * c.d_state, c.d_inner, 1 / std::sqrt(double(c.d_inner)));
        x.s6.S_Delta_up = uniform(c.d_inner, c.dt_rank, 1 / std::sqrt(double(c.dt_rank)));
        x.s6.S_Delta_down = x_proj.topRows(c.dt_rank);
        x.s6.S_B = x_proj.middleRows(c.dt_rank, c.d_state);
        x.s6.S_C = x_proj.bottomRows(c.d_state);
        x.s6.delta_bias.resize(c.d_inner);
        for (Eigen::Index d = 0; d < c.d_inner; ++d) {
            const double dt = std::exp(log_dt(rng));
            x.s6.delta_bias(d) = dt + std::log(-std::expm1(-dt));  // softplus⁻¹(dt)
        }
        x.s6.A.resize(c.d_inner, c.d_state);
        for (Eigen::Index n = 0; n < c.d_state; ++n) x.s6.A.col(n).setConstant(-double(n + 1));  // −exp(log(n+1))
        x.D_skip = VectorX<double>::Ones(c.d_inner);
        x.out_proj = uniform(c.d_model, c.d_inner, 1 / std::sqrt(double(c.d_inner)));
        m.layers.push_back(std::move(b));
    }
    return m;
}

// ------------------------------------------------------------------------ definitions

template <typename Scalar>
template <typename Other>
MambaModel<Other> MambaModel<Scalar>::cast() const {
    auto to = [](const auto& m) { return m.template cast<Other>().eval(); };
    MambaModel<Other> out;
    out.config = config;
    out.embedding = to(embedding);
    out.norm_f_weight = to(norm_f_weight);
    out.norm_f_bias = to(norm_f_bias);
    out.lm_head = to(lm_head);
    for (const MambaBlock<Scalar>& b : layers) {
        MambaBlock<Other> o;
        o.norm_weight = to(b.norm_weight);
        o.norm_bias = to(b.norm_bias);
        const MambaMixer<Scalar>& m = b.mixer;
        MambaMixer<Other>& n = o.mixer;
        n.in_proj = to(m.in_proj);
        n.in_proj_bias = to(m.in_proj_bias);
        n.conv_weight = to(m.conv_weight);
        n.conv_bias = to(m.conv_bias);
        n.s6 = m.s6.template cast<Other>();
        n.D_skip = to(m.D_skip);
        n.out_proj = to(m.out_proj);
        n.out_proj_bias = to(m.out_proj_bias);
        out.layers.push_back(std::move(o));
    }
    return out;
}

template <typename Scalar>
void MambaModel<Scalar>::validate() const {
    const MambaConfig& c = config;
    auto fail = [](const std::string& where, const std::string& what) {
        throw std::invalid_argument("MambaModel: " + where + ": " + what);
    };
    auto check = [&](const std::string& where, const auto& m, Eigen::Index rows, Eigen::Index cols, bool optional) {
        if (optional && m.size() == 0) return;
        if (m.rows() != rows || m.cols() != cols)
            fail(where, "is " + std::to_string(m.rows()) + "x" + std::to_string(m.cols()) + ", expected " +
                            std::to_string(rows) + "x" + std::to_string(cols));
        if (!m.allFinite()) fail(where, "has a non-finite entry");
    };
    if (c.d_model < 1 || c.d_inner < 1 || c.d_state < 1 || c.d_conv < 1 || c.dt_rank < 1 || c.vocab_size < 1)
        fail("config", "every size must be >= 1");
    if (static_cast<Eigen::Index>(layers.size()) != c.n_layers)
        fail("config", std::to_string(layers.size()) + " layers, n_layers = " + std::to_string(c.n_layers));
    if (!(c.norm_epsilon >= 0)) fail("config", "norm_epsilon must be >= 0");
    check("embedding", embedding, c.vocab_size, c.d_model, false);
    check("norm_f.weight", norm_f_weight, c.d_model, 1, false);
    check("norm_f.bias", norm_f_bias, c.d_model, 1, c.rms_norm);
    check("lm_head", lm_head, c.vocab_size, c.d_model, true);
    for (std::size_t k = 0; k < layers.size(); ++k) {
        const std::string at = "layer " + std::to_string(k) + " ";
        const MambaBlock<Scalar>& b = layers[k];
        const MambaMixer<Scalar>& m = b.mixer;
        check(at + "norm.weight", b.norm_weight, c.d_model, 1, false);
        check(at + "norm.bias", b.norm_bias, c.d_model, 1, c.rms_norm);
        check(at + "in_proj.weight", m.in_proj, 2 * c.d_inner, c.d_model, false);
        check(at + "in_proj.bias", m.in_proj_bias, 2 * c.d_inner, 1, true);
        check(at + "conv1d.weight", m.conv_weight, c.d_inner, c.d_conv, false);
        check(at + "conv1d.bias", m.conv_bias, c.d_inner, 1, true);
        check(at + "dt_proj.weight", m.s6.S_Delta_up, c.d_inner, c.dt_rank, false);
        check(at + "x_proj.weight[:dt_rank]", m.s6.S_Delta_down, c.dt_rank, c.d_inner, false);
        check(at + "D", m.D_skip, c.d_inner, 1, false);
        check(at + "out_proj.weight", m.out_proj, c.d_model, c.d_inner, false);
        check(at + "out_proj.bias", m.out_proj_bias, c.d_model, 1, true);
        if (m.s6.dim() != c.d_inner || m.s6.state_dim() != c.d_state)
            fail(at + "S6", "is D = " + std::to_string(m.s6.dim()) + ", N = " + std::to_string(m.s6.state_dim()) +
                                ", expected d_inner = " + std::to_string(c.d_inner) +
                                ", d_state = " + std::to_string(c.d_state));
        try {
            m.s6.validate();
        } catch (const std::invalid_argument& e) {
            fail(at + "S6", e.what());
        }
    }
}

}  // namespace ssmdyn
