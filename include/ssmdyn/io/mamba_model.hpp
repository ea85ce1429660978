#pragma once
/// \file mamba_model.hpp
/// Whole Mamba-1 checkpoints: every layer, in either naming, one file or shards.
///
/// Two namings exist, told apart by the embedding's name: `mamba_ssm`'s
/// (`backbone.embedding.weight`) and Hugging Face transformers' `MambaForCausalLM`
/// (`backbone.embeddings.weight`); both name the layers `backbone.layers.{i}.mixer.*` and
/// `backbone.layers.{i}.norm.weight`, and the final norm `backbone.norm_f.weight`. The sizes
/// come from the shapes and are checked against a `config.json` beside the file when there
/// is one (either naming's keys). A path may be a `.safetensors` file, a
/// `model.safetensors.index.json` listing shards, or a folder holding either. Tensors are
/// read by offset, one at a time: loading one layer of a large file reads that layer only.
///
/// \code
/// ssmdyn::Checkpoint ckpt("state-spaces/mamba-130m");   // a folder, file or index
/// ssmdyn::MambaModel<double> model = ssmdyn::load_mamba_model(ckpt);
/// \endcode

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/mamba_block.hpp"
#include "../core/memory_limit.hpp"
#include "checkpoint.hpp"
#include "mamba.hpp"
#include "safetensors.hpp"

namespace ssmdyn {

/// How a checkpoint names its tensors.
enum class MambaNaming {
    MambaSsm,     ///< mamba_ssm: backbone.embedding.weight
    Transformers  ///< Hugging Face MambaForCausalLM: backbone.embeddings.weight
};

/// "mamba_ssm" or "transformers".
inline const char* to_string(MambaNaming n) { return n == MambaNaming::MambaSsm ? "mamba_ssm" : "transformers"; }

/// The MambaNaming called `name` (as printed by to_string); throws std::invalid_argument.
inline MambaNaming parse_mamba_naming(const std::string& name) {
    static constexpr MambaNaming all[] = {MambaNaming::MambaSsm, MambaNaming::Transformers};
    return detail::parse_enum(name, all, "Mamba naming");
}

/// The embedding's tensor name in a naming.
inline std::string mamba_embedding_name(MambaNaming n) {
    return n == MambaNaming::MambaSsm ? "backbone.embedding.weight" : "backbone.embeddings.weight";
}

/// What a checkpoint holds, from its tensor names and shapes alone (nothing is read).
struct MambaCheckpointInfo {
    MambaNaming naming = MambaNaming::MambaSsm;
    MambaConfig config;
    bool lm_head = false;  ///< an lm_head.weight of its own (else tied to the embedding)
    bool in_proj_bias = false, conv_bias = false, out_proj_bias = false;
};

namespace detail {

inline std::string layer_name(Eigen::Index k, const std::string& rest) {
    return "backbone.layers." + std::to_string(k) + "." + rest;
}

/// A config.json value under either naming's key, if present.
inline std::optional<nlohmann::json> config_value(const nlohmann::json& config, std::initializer_list<const char*> keys,
                                                  std::string& key_used) {
    for (const char* key : keys)
        if (config.contains(key) && !config[key].is_null()) {
            key_used = key;
            return config[key];
        }
    return std::nullopt;
}

/// Checks the sizes read from the shapes against a config.json (either naming's keys).
inline void check_against_config(const Checkpoint& ckpt, const nlohmann::json& config, const MambaCheckpointInfo& info) {
    if (!config.is_object()) throw std::invalid_argument("config '" + ckpt.config_path() + "' is not a JSON object");
    const MambaConfig& c = info.config;
    auto mismatch = [&](const std::string& key, const std::string& config_value, const std::string& tensors) {
        throw std::invalid_argument("config '" + ckpt.config_path() + "': \"" + key + "\" is " + config_value +
                                    " but the checkpoint's tensors say " + tensors);
    };
    auto whole = [&](std::initializer_list<const char*> keys, Eigen::Index expected, const std::string& from) {
        std::string key;
        const auto v = config_value(config, keys, key);
        if (!v) return;
        if (!v->is_number_integer()) mismatch(key, v->dump(), std::to_string(expected) + " (" + from + ")");
        if (v->get<std::int64_t>() != expected)
            mismatch(key, v->dump(), std::to_string(expected) + " (" + from + ")");
    };
    whole({"d_model", "hidden_size"}, c.d_model, "the embedding's columns");
    whole({"n_layer", "num_hidden_layers"}, c.n_layers, "the layers present");
    whole({"d_state", "state_size"}, c.d_state, "A_log's columns");
    whole({"d_conv", "conv_kernel"}, c.d_conv, "conv1d.weight's last axis");
    whole({"intermediate_size", "d_inner"}, c.d_inner, "A_log's rows");
    {
        std::string key;
        if (const auto v = config_value(config, {"expand"}, key))
            if (!v->is_number() || v->get<double>() * double(c.d_model) != double(c.d_inner))
                mismatch(key, v->dump(), "d_inner / d_model = " + std::to_string(c.d_inner) + " / " + std::to_string(c.d_model));
    }
    {
        std::string key;
        if (const auto v = config_value(config, {"dt_rank", "time_step_rank"}, key)) {
            if (v->is_string() && v->get<std::string>() == "auto") {
                if ((c.d_model + 15) / 16 != c.dt_rank)
                    mismatch(key, "\"auto\" = ceil(d_model / 16) = " + std::to_string((c.d_model + 15) / 16),
                             std::to_string(c.dt_rank) + " (dt_proj.weight's columns)");
            } else {
                whole({key.c_str()}, c.dt_rank, "dt_proj.weight's columns");
            }
        }
    }
    {
        // mamba_ssm pads the embedding to a multiple of pad_vocab_size_multiple (8).
        std::string key;
        if (const auto v = config_value(config, {"vocab_size"}, key)) {
            const std::int64_t pad = config.value("pad_vocab_size_multiple", std::int64_t(8));
            if (!v->is_number_integer() || v->get<std::int64_t>() > c.vocab_size ||
                c.vocab_size - v->get<std::int64_t>() >= std::max<std::int64_t>(pad, 1))
                mismatch(key, v->dump(), std::to_string(c.vocab_size) + " embedding rows");
        }
    }
    {
        std::string key;
        if (const auto v = config_value(config, {"rms_norm"}, key))
            if (!v->is_boolean() || v->get<bool>() != c.rms_norm)
                mismatch(key, v->dump(), c.rms_norm ? "RMSNorm (no norm bias)" : "LayerNorm (a norm bias)");
    }
}

}  // namespace detail

/// The naming and sizes of a checkpoint, from its tensor names and shapes (and its
/// config.json's norm ε and residual_in_fp32 when there is one).
/// \throws std::invalid_argument naming the tensor: no embedding of either naming (listing
///   the prefixes there are), a missing layer tensor, a shape that disagrees (both
///   tensors and both shapes), a gap in the layer indices, a config.json that disagrees
inline MambaCheckpointInfo inspect_mamba_checkpoint(const Checkpoint& ckpt) {
    MambaCheckpointInfo info;
    const std::string where = "checkpoint '" + ckpt.path() + "': ";
    auto fail = [&](const std::string& what) { throw std::invalid_argument(where + what); };
    const bool ssm = ckpt.contains(mamba_embedding_name(MambaNaming::MambaSsm));
    const bool hf = ckpt.contains(mamba_embedding_name(MambaNaming::Transformers));
    if (ssm == hf)
        fail(ssm ? "has both backbone.embedding.weight and backbone.embeddings.weight"
                 : "is not a Mamba language model: it has neither backbone.embedding.weight (mamba_ssm) nor "
                   "backbone.embeddings.weight (transformers); its tensors begin with " +
                       ckpt.prefixes());
    info.naming = ssm ? MambaNaming::MambaSsm : MambaNaming::Transformers;
    using Shape = std::vector<std::int64_t>;
    auto shape = [&](const std::string& name) -> const Shape& {
        if (!ckpt.contains(name)) fail("missing tensor " + name + " (its tensors begin with " + ckpt.prefixes() + ")");
        return ckpt.info(name).shape;
    };
    const std::string embedding = mamba_embedding_name(info.naming);
    const Shape& e = shape(embedding);
    if (e.size() != 2 || e[0] < 1 || e[1] < 1)
        fail(embedding + " has shape " + detail::shape_string(e) + ", expected vocab_size x d_model");
    MambaConfig& c = info.config;
    c.vocab_size = e[0];
    c.d_model = e[1];

    // Layers: the indices present under backbone.layers., which must be 0 … n−1.
    std::set<std::int64_t> indices;
    const std::string layers = "backbone.layers.";
    for (const std::string& name : ckpt.names()) {
        if (name.compare(0, layers.size(), layers) != 0) continue;
        const auto dot = name.find('.', layers.size());
        const std::string digits = name.substr(layers.size(), dot - layers.size());
        if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos)
            fail("tensor " + name + " does not have a layer index after backbone.layers.");
        indices.insert(std::stoll(digits));
    }
    if (indices.empty()) fail("has no backbone.layers.{i}.* tensors");
    c.n_layers = static_cast<Eigen::Index>(indices.size());
    if (*indices.rbegin() != c.n_layers - 1) {
        std::int64_t gap = 0;
        while (indices.count(gap)) ++gap;
        fail("has layers up to " + std::to_string(*indices.rbegin()) + " but no layer " + std::to_string(gap));
    }

    // Sizes from layer 0, then every layer checked against them.
    const Shape& a_log = shape(detail::layer_name(0, "mixer.A_log"));
    const Shape& conv = shape(detail::layer_name(0, "mixer.conv1d.weight"));
    const Shape& dt = shape(detail::layer_name(0, "mixer.dt_proj.weight"));
    if (a_log.size() != 2 || a_log[0] < 1 || a_log[1] < 1)
        fail(detail::layer_name(0, "mixer.A_log") + " has shape " + detail::shape_string(a_log) + ", expected d_inner x d_state");
    if (conv.size() != 3 || conv[2] < 1)
        fail(detail::layer_name(0, "mixer.conv1d.weight") + " has shape " + detail::shape_string(conv) +
             ", expected d_inner x 1 x d_conv");
    if (dt.size() != 2 || dt[1] < 1)
        fail(detail::layer_name(0, "mixer.dt_proj.weight") + " has shape " + detail::shape_string(dt) +
             ", expected d_inner x dt_rank");
    c.d_inner = a_log[0];
    c.d_state = a_log[1];
    c.d_conv = conv[2];
    c.dt_rank = dt[1];
    c.rms_norm = !ckpt.contains(detail::layer_name(0, "norm.bias"));
    info.lm_head = ckpt.contains("lm_head.weight");
    info.in_proj_bias = ckpt.contains(detail::layer_name(0, "mixer.in_proj.bias"));
    info.conv_bias = ckpt.contains(detail::layer_name(0, "mixer.conv1d.bias"));
    info.out_proj_bias = ckpt.contains(detail::layer_name(0, "mixer.out_proj.bias"));

    const std::int64_t d = c.d_model, di = c.d_inner, n = c.d_state, r = c.dt_rank;
    // What each tensor's shape must be, and which size it carries (for the message).
    struct Expected {
        std::string rest;
        Shape shape;
        bool present;
    };
    for (Eigen::Index k = 0; k < c.n_layers; ++k) {
        const std::vector<Expected> expected = {
            {"mixer.in_proj.weight", {2 * di, d}, true},
            {"mixer.in_proj.bias", {2 * di}, info.in_proj_bias},
            {"mixer.conv1d.weight", {di, 1, c.d_conv}, true},
            {"mixer.conv1d.bias", {di}, info.conv_bias},
            {"mixer.x_proj.weight", {r + 2 * n, di}, true},
            {"mixer.dt_proj.weight", {di, r}, true},
            {"mixer.dt_proj.bias", {di}, true},
            {"mixer.A_log", {di, n}, true},
            {"mixer.D", {di}, true},
            {"mixer.out_proj.weight", {d, di}, true},
            {"mixer.out_proj.bias", {d}, info.out_proj_bias},
            {"norm.weight", {d}, true},
            {"norm.bias", {d}, !c.rms_norm},
        };
        for (const Expected& x : expected) {
            const std::string name = detail::layer_name(k, x.rest);
            if (!x.present) {
                if (ckpt.contains(name))
                    fail("has " + name + " but layer 0 has no " + detail::layer_name(0, x.rest));
                continue;
            }
            const Shape& s = shape(name);
            if (s != x.shape)
                fail(name + " has shape " + detail::shape_string(s) + ", expected " + detail::shape_string(x.shape) +
                     " (d_model = " + std::to_string(d) + " from " + embedding + "; d_inner = " + std::to_string(di) +
                     ", d_state = " + std::to_string(n) + " from " + detail::layer_name(0, "mixer.A_log") +
                     "; dt_rank = " + std::to_string(r) + " from " + detail::layer_name(0, "mixer.dt_proj.weight") +
                     "; d_conv = " + std::to_string(c.d_conv) + " from " + detail::layer_name(0, "mixer.conv1d.weight") + ")");
        }
    }
    auto expect = [&](const std::string& name, const Shape& want) {
        const Shape& s = shape(name);
        if (s != want) fail(name + " has shape " + detail::shape_string(s) + ", expected " + detail::shape_string(want));
    };
    expect("backbone.norm_f.weight", {d});
    if (!c.rms_norm) expect("backbone.norm_f.bias", {d});
    if (info.lm_head) expect("lm_head.weight", {c.vocab_size, d});

    if (!ckpt.config_path().empty()) {
        const nlohmann::json config = detail::read_json_file(ckpt.config_path(), "config");
        detail::check_against_config(ckpt, config, info);
        for (const char* key : {"norm_epsilon", "layer_norm_epsilon"})
            if (config.contains(key) && config[key].is_number()) c.norm_epsilon = config[key].get<double>();
        if (config.contains("residual_in_fp32") && config["residual_in_fp32"].is_boolean())
            c.residual_in_fp32 = config["residual_in_fp32"].get<bool>();
    }
    return info;
}

/// Reads the whole model (every weight widened to double, or narrowed to float).
/// \throws std::invalid_argument for any problem inspect_mamba_checkpoint finds, a model
///   above memory_limit() (checked before anything is read, with the sizes), or a weight
///   that is not finite (naming the tensor)
template <typename Scalar = double>
MambaModel<Scalar> load_mamba_model(const Checkpoint& ckpt) {
    const MambaCheckpointInfo info = inspect_mamba_checkpoint(ckpt);
    const MambaConfig& c = info.config;
    {
        // The weights as Scalar (S_Δ stays factored) and a double copy of the largest
        // tensor while it is read.
        const auto d = static_cast<std::size_t>(c.d_model), di = static_cast<std::size_t>(c.d_inner),
                   n = static_cast<std::size_t>(c.d_state), r = static_cast<std::size_t>(c.dt_rank),
                   v = static_cast<std::size_t>(c.vocab_size), k = static_cast<std::size_t>(c.d_conv);
        const std::size_t per_layer = checked_sum(checked_bytes(2 * di, d, 1), checked_bytes(di, k + 1, 1),
                                                  checked_bytes(r + 2 * n, di, 1), checked_bytes(di, r + 2 + n, 1),
                                                  checked_bytes(d, di, 1), 2 * d);
        const std::size_t numbers = checked_sum(checked_bytes(per_layer, static_cast<std::size_t>(c.n_layers), 1),
                                                checked_bytes(info.lm_head ? 2 : 1, v, d), 2 * d);
        const std::size_t bytes = checked_sum(checked_bytes(numbers, sizeof(Scalar), 1),
                                              checked_bytes(std::max(v * d, 2 * di * d), sizeof(double), 1));
        check_allocation(bytes, "checkpoint '" + ckpt.path() + "': a model of " + std::to_string(c.n_layers) +
                                    " layers, d_model = " + std::to_string(c.d_model) + ", d_inner = " +
                                    std::to_string(c.d_inner) + ", vocab_size = " + std::to_string(c.vocab_size));
    }
    auto finite = [&](const std::string& name, const auto& m) {
        if (!m.allFinite()) throw std::invalid_argument("checkpoint '" + ckpt.path() + "': " + name + " is not all finite");
        return m.template cast<Scalar>().eval();
    };
    auto matrix = [&](const std::string& name) { return finite(name, ckpt.matrix(name)); };
    auto vector = [&](const std::string& name) { return finite(name, ckpt.vector(name)); };
    MambaModel<Scalar> model;
    model.config = c;
    model.embedding = matrix(mamba_embedding_name(info.naming));
    model.norm_f_weight = vector("backbone.norm_f.weight");
    if (!c.rms_norm) model.norm_f_bias = vector("backbone.norm_f.bias");
    if (info.lm_head) model.lm_head = matrix("lm_head.weight");
    for (Eigen::Index k = 0; k < c.n_layers; ++k) {
        MambaBlock<Scalar> b;
        b.norm_weight = vector(detail::layer_name(k, "norm.weight"));
        if (!c.rms_norm) b.norm_bias = vector(detail::layer_name(k, "norm.bias"));
        MambaMixer<Scalar>& m = b.mixer;
        m.in_proj = matrix(detail::layer_name(k, "mixer.in_proj.weight"));
        if (info.in_proj_bias) m.in_proj_bias = vector(detail::layer_name(k, "mixer.in_proj.bias"));
        {
            const std::string name = detail::layer_name(k, "mixer.conv1d.weight");
            const std::vector<double> w = ckpt.values(name);  // d_inner x 1 x d_conv, row-major
            MatrixX<double> conv = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                w.data(), c.d_inner, c.d_conv);
            m.conv_weight = finite(name, conv);
        }
        if (info.conv_bias) m.conv_bias = vector(detail::layer_name(k, "mixer.conv1d.bias"));
        // The S6 part through load_mamba_layer (its checks and messages), then narrowed.
        const MambaLayer s6 = load_mamba_layer(ckpt, static_cast<int>(k));
        m.s6.S_B = s6.params.S_B.template cast<Scalar>();
        m.s6.S_C = s6.params.S_C.template cast<Scalar>();
        m.s6.S_Delta_up = s6.params.S_Delta_up.template cast<Scalar>();
        m.s6.S_Delta_down = s6.params.S_Delta_down.template cast<Scalar>();
        m.s6.delta_bias = s6.params.delta_bias.template cast<Scalar>();
        m.s6.A = s6.params.A.template cast<Scalar>();
        m.D_skip = s6.D_skip.template cast<Scalar>();
        m.out_proj = matrix(detail::layer_name(k, "mixer.out_proj.weight"));
        if (info.out_proj_bias) m.out_proj_bias = vector(detail::layer_name(k, "mixer.out_proj.bias"));
        model.layers.push_back(std::move(b));
    }
    model.validate();
    return model;
}

/// Opens the checkpoint at `path` (file, index or folder) and reads the whole model.
template <typename Scalar = double>
MambaModel<Scalar> load_mamba_model(const std::string& path) {
    return load_mamba_model<Scalar>(Checkpoint(path));
}

/// The tensors of a model in a naming (A_log = log(−A), conv1d.weight d_inner × 1 × d_conv,
/// x_proj = [W_δ; S_B; S_C]), each converted to `dtype` on writing.
template <typename Scalar>
std::vector<NamedTensor> mamba_tensors(const MambaModel<Scalar>& model, MambaNaming naming, DType dtype = DType::F32) {
    model.validate();
    std::vector<NamedTensor> t;
    t.push_back(NamedTensor::from_matrix(mamba_embedding_name(naming), model.embedding, dtype));
    for (std::size_t k = 0; k < model.layers.size(); ++k) {
        const auto K = static_cast<Eigen::Index>(k);
        const MambaBlock<Scalar>& b = model.layers[k];
        const MambaMixer<Scalar>& m = b.mixer;
        auto name = [&](const char* rest) { return detail::layer_name(K, rest); };
        t.push_back(NamedTensor::from_matrix(name("mixer.in_proj.weight"), m.in_proj, dtype));
        if (m.in_proj_bias.size() != 0) t.push_back(NamedTensor::from_vector(name("mixer.in_proj.bias"), m.in_proj_bias, dtype));
        NamedTensor conv = NamedTensor::from_matrix(name("mixer.conv1d.weight"), m.conv_weight, dtype);
        conv.shape = {m.conv_weight.rows(), 1, m.conv_weight.cols()};
        t.push_back(std::move(conv));
        if (m.conv_bias.size() != 0) t.push_back(NamedTensor::from_vector(name("mixer.conv1d.bias"), m.conv_bias, dtype));
        MatrixX<Scalar> x_proj(m.s6.S_Delta_down.rows() + 2 * m.s6.state_dim(), m.d_inner());
        x_proj << m.s6.S_Delta_down, m.s6.S_B, m.s6.S_C;
        t.push_back(NamedTensor::from_matrix(name("mixer.x_proj.weight"), x_proj, dtype));
        t.push_back(NamedTensor::from_matrix(name("mixer.dt_proj.weight"), m.s6.S_Delta_up, dtype));
        t.push_back(NamedTensor::from_vector(name("mixer.dt_proj.bias"), m.s6.delta_bias, dtype));
        t.push_back(NamedTensor::from_matrix(name("mixer.A_log"), (-m.s6.A.array()).log().matrix(), dtype));
        t.push_back(NamedTensor::from_vector(name("mixer.D"), m.D_skip, dtype));
        t.push_back(NamedTensor::from_matrix(name("mixer.out_proj.weight"), m.out_proj, dtype));
        if (m.out_proj_bias.size() != 0)
            t.push_back(NamedTensor::from_vector(name("mixer.out_proj.bias"), m.out_proj_bias, dtype));
        t.push_back(NamedTensor::from_vector(name("norm.weight"), b.norm_weight, dtype));
        if (b.norm_bias.size() != 0) t.push_back(NamedTensor::from_vector(name("norm.bias"), b.norm_bias, dtype));
    }
    t.push_back(NamedTensor::from_vector("backbone.norm_f.weight", model.norm_f_weight, dtype));
    if (model.norm_f_bias.size() != 0)
        t.push_back(NamedTensor::from_vector("backbone.norm_f.bias", model.norm_f_bias, dtype));
    if (model.lm_head.size() != 0) t.push_back(NamedTensor::from_matrix("lm_head.weight", model.lm_head, dtype));
    return t;
}

/// Writes a model as a safetensors checkpoint in a naming (see mamba_tensors).
template <typename Scalar>
void write_mamba_checkpoint(const std::string& path, const MambaModel<Scalar>& model, MambaNaming naming,
                            DType dtype = DType::F32) {
    write_safetensors(path, mamba_tensors(model, naming, dtype), {{"format", "pt"}});
}

/// The config.json of a model in a naming's keys (mamba_ssm's MambaConfig or
/// transformers' MambaConfig).
inline nlohmann::json mamba_config_json(const MambaConfig& c, MambaNaming naming) {
    nlohmann::json j;
    if (naming == MambaNaming::MambaSsm) {
        j = {{"d_model", c.d_model},   {"n_layer", c.n_layers},       {"vocab_size", c.vocab_size},
             {"d_state", c.d_state},   {"d_conv", c.d_conv},         {"expand", double(c.d_inner) / double(c.d_model)},
             {"dt_rank", c.dt_rank},   {"rms_norm", c.rms_norm},     {"residual_in_fp32", c.residual_in_fp32},
             {"norm_epsilon", c.norm_epsilon}};
    } else {
        j = {{"architectures", {"MambaForCausalLM"}}, {"hidden_size", c.d_model}, {"num_hidden_layers", c.n_layers},
             {"vocab_size", c.vocab_size}, {"state_size", c.d_state}, {"conv_kernel", c.d_conv},
             {"intermediate_size", c.d_inner}, {"time_step_rank", c.dt_rank},
             {"residual_in_fp32", c.residual_in_fp32}, {"layer_norm_epsilon", c.norm_epsilon}};
    }
    return j;
}

}  // namespace ssmdyn
