// The Mamba-1 block and stack against an independent plain-loop implementation written
// here from the formulas of mamba_ssm's reference path (selective_scan_ref, Mamba.forward
// without the fused kernels, Block, MixerModel, MambaLMHeadModel): scalar loops over every
// index, no Eigen expression and none of the library's code.

#include <cmath>
#include <cstdint>
#include <vector>

#include <ssmdyn/core/mamba_block.hpp>

#include "support.hpp"

namespace {

using ssmdyn::MambaConfig;
using ssmdyn::MambaModel;
using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using std::exp;

double silu(double v) { return v / (1 + exp(-v)); }
double softplus(double v) { return v > 20 ? v : std::log1p(exp(v)); }

/// norm of each column, in loops.
Mat loop_norm(const MambaConfig& c, const Vec& w, const Vec& b, const Mat& X) {
    Mat out(X.rows(), X.cols());
    for (Eigen::Index l = 0; l < X.cols(); ++l) {
        double mean = 0, sq = 0;
        for (Eigen::Index i = 0; i < X.rows(); ++i) mean += X(i, l);
        mean /= double(X.rows());
        for (Eigen::Index i = 0; i < X.rows(); ++i) {
            const double v = c.rms_norm ? X(i, l) : X(i, l) - mean;
            sq += v * v;
        }
        const double scale = 1 / std::sqrt(sq / double(X.rows()) + c.norm_epsilon);
        for (Eigen::Index i = 0; i < X.rows(); ++i)
            out(i, l) = c.rms_norm ? X(i, l) * scale * w(i) : (X(i, l) - mean) * scale * w(i) + b(i);
    }
    return out;
}

/// y = W x (+ b), in loops.
Mat loop_linear(const Mat& W, const Mat& X) {
    Mat out = Mat::Zero(W.rows(), X.cols());
    for (Eigen::Index l = 0; l < X.cols(); ++l)
        for (Eigen::Index i = 0; i < W.rows(); ++i)
            for (Eigen::Index j = 0; j < W.cols(); ++j) out(i, l) += W(i, j) * X(j, l);
    return out;
}

/// One mixer from mamba_ssm's formulas, with the S6 parameters rebuilt from the raw
/// factors (x_proj = [dt_input; S_B; S_C], dt_proj.weight, A_log).
Mat loop_mixer(const ssmdyn::MambaMixer<double>& m, const MambaConfig& c, const Mat& X) {
    const Eigen::Index L = X.cols(), d_inner = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
    const Mat xz = loop_linear(m.in_proj, X);
    Mat u(d_inner, L);
    for (Eigen::Index d = 0; d < d_inner; ++d)
        for (Eigen::Index l = 0; l < L; ++l) {
            double acc = m.conv_bias(d);
            for (Eigen::Index k = 0; k < K; ++k) {
                const Eigen::Index src = l - (K - 1) + k;
                if (src >= 0) acc += m.conv_weight(d, k) * xz(d, src);
            }
            u(d, l) = silu(acc);
        }
    Mat x_proj(R + 2 * N, d_inner);
    x_proj << m.s6.S_Delta_down, m.s6.S_B, m.s6.S_C;
    const Mat dbc = loop_linear(x_proj, u);
    Mat y(d_inner, L);
    for (Eigen::Index d = 0; d < d_inner; ++d) {
        std::vector<double> h(static_cast<std::size_t>(N), 0.0);
        for (Eigen::Index l = 0; l < L; ++l) {
            double dt = m.s6.delta_bias(d);
            for (Eigen::Index r = 0; r < R; ++r) dt += m.s6.S_Delta_up(d, r) * dbc(r, l);
            const double delta = softplus(dt);
            double out = 0;
            for (Eigen::Index n = 0; n < N; ++n) {
                auto& hn = h[static_cast<std::size_t>(n)];
                hn = exp(delta * m.s6.A(d, n)) * hn + delta * dbc(R + n, l) * u(d, l);
                out += hn * dbc(R + N + n, l);
            }
            y(d, l) = (out + m.D_skip(d) * u(d, l)) * silu(xz(d_inner + d, l));
        }
    }
    return loop_linear(m.out_proj, y);
}

struct LoopResult {
    Mat logits;
    std::vector<Mat> hidden;
};

LoopResult loop_model(const MambaModel<double>& model, const std::vector<std::int64_t>& ids) {
    const MambaConfig& c = model.config;
    Mat h(c.d_model, Eigen::Index(ids.size())), r;
    for (std::size_t l = 0; l < ids.size(); ++l)
        for (Eigen::Index i = 0; i < c.d_model; ++i) h(i, Eigen::Index(l)) = model.embedding(ids[l], i);
    LoopResult out;
    out.hidden.push_back(h);
    for (std::size_t k = 0; k < model.layers.size(); ++k) {
        r = k == 0 ? h : Mat(r + h);
        const auto& b = model.layers[k];
        h = loop_mixer(b.mixer, c, loop_norm(c, b.norm_weight, b.norm_bias, r));
        out.hidden.push_back(r + h);
    }
    r = r + h;
    out.logits = loop_linear(model.embedding, loop_norm(c, model.norm_f_weight, model.norm_f_bias, r));
    return out;
}

double relative_error(const Mat& a, const Mat& b) { return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff(); }

MambaConfig tiny(bool rms) {
    MambaConfig c;
    c.n_layers = 3;
    c.d_model = 16;
    c.d_inner = 32;
    c.d_state = 8;
    c.d_conv = 4;
    c.dt_rank = 2;
    c.vocab_size = 40;
    c.rms_norm = rms;
    return c;
}

}  // namespace

TEST_CASE("mamba block: logits and every layer's hidden states equal the plain-loop formulas") {
    for (bool rms : {true, false}) {
        CAPTURE(rms);
        MambaModel<double> model = ssmdyn::mamba_init(tiny(rms), 7);
        if (!rms)  // LayerNorm with weights and biases away from 1 and 0, so both are used
            for (auto& b : model.layers) {
                b.norm_weight = Vec::LinSpaced(16, 0.5, 1.5);
                b.norm_bias = Vec::LinSpaced(16, -0.2, 0.3);
            }
        model.validate();
        const std::vector<std::int64_t> ids = {3, 17, 0, 39, 5, 5, 22, 11, 1};  // L = 9 > d_conv
        ssmdyn::MambaTrace<double> trace;
        const Mat logits = ssmdyn::mamba_forward(model, ids, &trace);
        const LoopResult truth = loop_model(model, ids);
        REQUIRE(logits.rows() == 40);
        REQUIRE(logits.cols() == 9);
        CHECK(relative_error(logits, truth.logits) < 1e-12);
        REQUIRE(trace.hidden.size() == 4);
        for (std::size_t k = 0; k < 4; ++k) CHECK(relative_error(trace.hidden[k], truth.hidden[k]) < 1e-12);
        // The untraced path (the scan's own skip and gate) gives the same logits.
        CHECK(relative_error(ssmdyn::mamba_forward(model, ids), truth.logits) < 1e-12);
    }
}

TEST_CASE("mamba block: the trace's S6 output is the paper's layer on u, and Δ its step sizes") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(true), 11);
    ssmdyn::MambaTrace<double> trace;
    ssmdyn::mamba_forward(model, {1, 2, 3, 4, 5, 6}, &trace);
    for (std::size_t k = 0; k < model.layers.size(); ++k) {
        const auto& m = model.layers[k].mixer;
        const auto& t = trace.mixers[k];
        const Mat reference = ssmdyn::selective_scan_reference(m.s6, t.u);  // the O(L²) sum
        CHECK(relative_error(t.s6, reference) < 1e-12);
        const Mat S_Delta = m.s6.step_matrix();
        for (Eigen::Index d = 0; d < 32; ++d)
            for (Eigen::Index l = 0; l < 6; ++l)
                CHECK(t.delta(d, l) == Approx(softplus(S_Delta.row(d).dot(t.u.col(l)) + m.s6.delta_bias(d))).epsilon(1e-13));
    }
}

TEST_CASE("mamba block: mamba_init follows mamba_ssm's initialisation") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(true), 3);
    for (const auto& b : model.layers) {
        const auto& m = b.mixer;
        for (Eigen::Index n = 0; n < 8; ++n) CHECK((m.s6.A.col(n).array() == -double(n + 1)).all());
        CHECK((m.D_skip.array() == 1).all());
        // dt = softplus(bias) is in [1e-3, 1e-1].
        for (Eigen::Index d = 0; d < 32; ++d) {
            const double dt = softplus(m.s6.delta_bias(d));
            CHECK(dt >= 1e-3 * (1 - 1e-12));
            CHECK(dt <= 1e-1 * (1 + 1e-12));
        }
        CHECK(m.s6.S_Delta_up.cwiseAbs().maxCoeff() <= 1 / std::sqrt(2.0));
        CHECK(m.s6.S_Delta.size() == 0);  // kept factored
    }
    // Deterministic for a seed, different for another.
    CHECK(ssmdyn::mamba_init(tiny(true), 3).embedding == model.embedding);
    CHECK(ssmdyn::mamba_init(tiny(true), 4).embedding != model.embedding);
}

TEST_CASE("mamba block: float agrees with double to float precision") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(true), 5);
    const MambaModel<float> single = model.cast<float>();
    single.validate();
    const std::vector<std::int64_t> ids = {4, 8, 15, 16, 23, 39};
    const Mat reference = ssmdyn::mamba_forward(model, ids);
    const Mat approx = ssmdyn::mamba_forward(single, ids).cast<double>();
    CHECK(relative_error(approx, reference) < 1e-5);
    CHECK(relative_error(approx, reference) > 0);  // really computed in float
}

TEST_CASE("mamba block: bad input is refused with a message") {
    MambaModel<double> model = ssmdyn::mamba_init(tiny(true), 1);
    CHECK(test::message_of([&] { ssmdyn::mamba_forward(model, {1, 40}); }).find("token id 40 (position 2)") !=
          std::string::npos);
    CHECK(test::message_of([&] { ssmdyn::mamba_forward(model, {}); }).find("no token ids") != std::string::npos);
    CHECK(test::message_of([&] { ssmdyn::mamba_forward_embeddings(model, Mat(Mat::Zero(15, 3))); })
              .find("expected d_model = 16") != std::string::npos);
    Mat bad = Mat::Zero(16, 2);
    bad(3, 1) = std::nan("");
    CHECK(test::message_of([&] { ssmdyn::mamba_forward_embeddings(model, bad); }).find("not all finite") !=
          std::string::npos);
    model.layers[1].mixer.out_proj.resize(16, 31);
    CHECK(test::message_of([&] { model.validate(); }).find("layer 1 out_proj.weight: is 16x31, expected 16x32") !=
          std::string::npos);
    model = ssmdyn::mamba_init(tiny(true), 1);
    model.layers[2].mixer.s6.A(0, 0) = 0.5;
    CHECK(test::message_of([&] { model.validate(); }).find("layer 2 S6") != std::string::npos);
    MambaConfig c = tiny(true);
    c.dt_rank = 0;
    CHECK(test::message_of([&] { ssmdyn::mamba_init(c, 1); }).find(">= 1") != std::string::npos);
}
