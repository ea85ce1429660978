// Whole checkpoints: a model the test writes in either naming, as one file or as shards,
// read back and run; config.json checks; and every bad-input message.

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <ssmdyn/io/mamba_model.hpp>

#include "support.hpp"

namespace {

using ssmdyn::DType;
using ssmdyn::MambaConfig;
using ssmdyn::MambaModel;
using ssmdyn::MambaNaming;
using ssmdyn::NamedTensor;
using test::message_of;
using test::TempPath;
namespace fs = std::filesystem;

MambaConfig tiny() {
    MambaConfig c;
    c.n_layers = 2;
    c.d_model = 16;
    c.d_inner = 32;
    c.d_state = 4;
    c.d_conv = 3;
    c.dt_rank = 2;
    c.vocab_size = 24;
    return c;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

double relative_error(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
    return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
}

const std::vector<std::int64_t> prompt = {1, 5, 9, 23, 0, 7, 7};

}  // namespace

TEST_CASE("mamba model: a checkpoint written in either naming reads back as the same model") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(), 21);
    const Eigen::MatrixXd logits = ssmdyn::mamba_forward(model, prompt);
    for (MambaNaming naming : {MambaNaming::MambaSsm, MambaNaming::Transformers}) {
        CAPTURE(ssmdyn::to_string(naming));
        TempPath dir;
        fs::create_directories(dir.path());
        const std::string file = dir.path() + "/model.safetensors";
        ssmdyn::write_mamba_checkpoint(file, model, naming, DType::F64);
        write_text(dir.path() + "/config.json", ssmdyn::mamba_config_json(model.config, naming).dump());
        const ssmdyn::Checkpoint ckpt(dir.path());  // the folder: model.safetensors and config.json
        CHECK(ckpt.config_path() == dir.path() + "/config.json");
        const auto info = ssmdyn::inspect_mamba_checkpoint(ckpt);
        CHECK(info.naming == naming);
        CHECK(info.config.n_layers == 2);
        CHECK(info.config.d_model == 16);
        CHECK(info.config.d_inner == 32);
        CHECK(info.config.d_state == 4);
        CHECK(info.config.d_conv == 3);
        CHECK(info.config.dt_rank == 2);
        CHECK(info.config.vocab_size == 24);
        CHECK(info.config.rms_norm);
        CHECK_FALSE(info.lm_head);
        const MambaModel<double> loaded = ssmdyn::load_mamba_model(ckpt);
        // F64 keeps every weight; A = −exp(log(−A)) is A to an ulp or two.
        CHECK(loaded.embedding == model.embedding);
        CHECK(loaded.layers[1].mixer.in_proj == model.layers[1].mixer.in_proj);
        CHECK(loaded.layers[1].mixer.conv_weight == model.layers[1].mixer.conv_weight);
        CHECK(loaded.layers[0].mixer.s6.A.isApprox(model.layers[0].mixer.s6.A, 1e-15));
        CHECK(relative_error(ssmdyn::mamba_forward(loaded, prompt), logits) < 1e-12);
        // In float, from the same file.
        const MambaModel<float> single = ssmdyn::load_mamba_model<float>(ckpt);
        CHECK(relative_error(ssmdyn::mamba_forward(single, prompt).cast<double>(), logits) < 1e-5);
    }
}

TEST_CASE("mamba model: F32 and BF16 checkpoints give the model of the rounded weights") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(), 4);
    const Eigen::MatrixXd logits = ssmdyn::mamba_forward(model, prompt);
    for (auto [dtype, tolerance] : {std::pair{DType::F32, 1e-5}, std::pair{DType::BF16, 0.1}}) {
        TempPath file(".safetensors");
        ssmdyn::write_mamba_checkpoint(file.path(), model, MambaNaming::MambaSsm, dtype);
        const MambaModel<double> loaded = ssmdyn::load_mamba_model(file.path());
        const double e = relative_error(ssmdyn::mamba_forward(loaded, prompt), logits);
        CAPTURE(ssmdyn::to_string(dtype), e);
        CHECK(e < tolerance);
        CHECK(e > 0);
        // Every weight is the rounding of the original: F32 to 2^-24, BF16 to 2^-8.
        const double unit = dtype == DType::F32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -8);
        const auto& a = loaded.layers[0].mixer.out_proj;
        const auto& b = model.layers[0].mixer.out_proj;
        CHECK(((a - b).array().abs() <= b.array().abs() * unit * 1.0000001).all());
    }
}

TEST_CASE("mamba model: sharded checkpoints through model.safetensors.index.json") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(), 8);
    std::vector<NamedTensor> tensors = ssmdyn::mamba_tensors(model, MambaNaming::Transformers, DType::F64);
    TempPath dir;
    fs::create_directories(dir.path());
    const std::size_t half = tensors.size() / 2;
    const std::vector<NamedTensor> first(tensors.begin(), tensors.begin() + long(half)),
        second(tensors.begin() + long(half), tensors.end());
    ssmdyn::write_safetensors(dir.path() + "/model-00001-of-00002.safetensors", first);
    ssmdyn::write_safetensors(dir.path() + "/model-00002-of-00002.safetensors", second);
    nlohmann::json index;
    for (const auto& t : first) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
    for (const auto& t : second) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
    write_text(dir.path() + "/model.safetensors.index.json", index.dump());
    const ssmdyn::Checkpoint ckpt(dir.path());
    CHECK(ckpt.shards() == 2);
    CHECK(relative_error(ssmdyn::mamba_forward(ssmdyn::load_mamba_model(ckpt), prompt),
                         ssmdyn::mamba_forward(model, prompt)) < 1e-12);
    // One layer's S6 alone, through the same index.
    CHECK(ssmdyn::load_mamba_layer(dir.path(), 1).params.S_B == model.layers[1].mixer.s6.S_B);

    // A shard that is missing is named, with a tensor it was listed for.
    index["weight_map"][first.front().name] = "model-00003-of-00002.safetensors";
    write_text(dir.path() + "/model.safetensors.index.json", index.dump());
    const std::string m = message_of([&] { ssmdyn::Checkpoint bad(dir.path()); });
    CHECK(contains(m, "shard 'model-00003-of-00002.safetensors' (listed for " + first.front().name));
    CHECK(contains(m, "does not exist"));
    // A tensor the index places in a shard that does not have it.
    index["weight_map"][first.front().name] = "model-00002-of-00002.safetensors";
    write_text(dir.path() + "/model.safetensors.index.json", index.dump());
    CHECK(contains(message_of([&] { ssmdyn::Checkpoint bad(dir.path()); }),
                   "shard 'model-00002-of-00002.safetensors' has no tensor " + first.front().name));
    write_text(dir.path() + "/model.safetensors.index.json", "{\"metadata\": {}}");
    CHECK(contains(message_of([&] { ssmdyn::Checkpoint bad(dir.path()); }), "has no \"weight_map\""));
}

TEST_CASE("mamba model: config.json disagreeing with the tensors is refused, naming both") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(), 2);
    TempPath dir;
    fs::create_directories(dir.path());
    ssmdyn::write_mamba_checkpoint(dir.path() + "/model.safetensors", model, MambaNaming::MambaSsm);
    auto with = [&](const char* key, nlohmann::json value) {
        nlohmann::json c = ssmdyn::mamba_config_json(model.config, MambaNaming::MambaSsm);
        c[key] = value;
        write_text(dir.path() + "/config.json", c.dump());
        return message_of([&] { ssmdyn::inspect_mamba_checkpoint(ssmdyn::Checkpoint(dir.path())); });
    };
    CHECK(contains(with("d_model", 32), "\"d_model\" is 32 but the checkpoint's tensors say 16 (the embedding's columns)"));
    CHECK(contains(with("n_layer", 3), "\"n_layer\" is 3 but the checkpoint's tensors say 2"));
    CHECK(contains(with("dt_rank", 3), "\"dt_rank\" is 3 but the checkpoint's tensors say 2 (dt_proj.weight's columns)"));
    CHECK(contains(with("dt_rank", "auto"), "\"auto\" = ceil(d_model / 16) = 1"));
    CHECK(contains(with("expand", 4), "\"expand\" is 4"));
    CHECK(contains(with("rms_norm", false), "\"rms_norm\" is false but the checkpoint's tensors say RMSNorm (no norm bias)"));
    // mamba_ssm pads the vocabulary: 24 rows hold a vocabulary of 17 to 24 with pad 8.
    CHECK(with("vocab_size", 20) == "<no exception>");
    CHECK(contains(with("vocab_size", 16), "\"vocab_size\" is 16 but the checkpoint's tensors say 24 embedding rows"));
    CHECK(with("norm_epsilon", 1e-6) == "<no exception>");
    CHECK(ssmdyn::inspect_mamba_checkpoint(ssmdyn::Checkpoint(dir.path())).config.norm_epsilon == 1e-6);
}

TEST_CASE("mamba model: bad checkpoints name the tensor, the shapes and what the file has") {
    const MambaModel<double> model = ssmdyn::mamba_init(tiny(), 3);
    const std::vector<NamedTensor> good = ssmdyn::mamba_tensors(model, MambaNaming::MambaSsm, DType::F32);
    TempPath file(".safetensors");
    auto load = [&](std::vector<NamedTensor> t) {
        ssmdyn::write_safetensors(file.path(), t);
        return message_of([&] { ssmdyn::load_mamba_model(file.path()); });
    };
    auto without = [&](const std::string& name) {
        std::vector<NamedTensor> t;
        for (const auto& x : good)
            if (x.name != name) t.push_back(x);
        return t;
    };
    CHECK(contains(load(without("backbone.layers.1.mixer.out_proj.weight")),
                   "missing tensor backbone.layers.1.mixer.out_proj.weight (its tensors begin with backbone.embedding, "
                   "backbone.layers, backbone.norm_f)"));
    CHECK(contains(load(without("backbone.embedding.weight")),
                   "not a Mamba language model: it has neither backbone.embedding.weight (mamba_ssm) nor "
                   "backbone.embeddings.weight (transformers); its tensors begin with backbone.layers, backbone.norm_f"));
    // A dt_rank that disagrees: x_proj has 2 + 2N rows, dt_proj.weight 3 columns in layer 1.
    std::vector<NamedTensor> t = good;
    for (auto& x : t)
        if (x.name == "backbone.layers.1.mixer.dt_proj.weight") {
            x.shape = {32, 3};
            x.values.resize(96, 0.1);
        }
    const std::string m = load(t);
    CHECK(contains(m, "backbone.layers.1.mixer.dt_proj.weight has shape 32x3, expected 32x2"));
    CHECK(contains(m, "dt_rank = 2 from backbone.layers.0.mixer.dt_proj.weight"));
    // Layers 0 and 2 but not 1.
    t.clear();
    for (const auto& x : good) {
        NamedTensor y = x;
        const std::string one = "backbone.layers.1.";
        if (y.name.compare(0, one.size(), one) == 0) y.name = "backbone.layers.2." + y.name.substr(one.size());
        t.push_back(y);
    }
    CHECK(contains(load(t), "has layers up to 2 but no layer 1"));
    // A weight that is not finite.
    t = good;
    t[3].values[5] = std::nan("");
    CHECK(contains(load(t), t[3].name + " is not all finite"));
    // Not a file or a folder with one.
    TempPath empty;
    fs::create_directories(empty.path());
    CHECK(contains(message_of([&] { ssmdyn::Checkpoint c(empty.path()); }),
                   "holds neither model.safetensors nor model.safetensors.index.json"));
}

TEST_CASE("mamba model: a checkpoint too large for the memory limit is refused before reading") {
    MambaConfig c = tiny();
    const MambaModel<double> model = ssmdyn::mamba_init(c, 3);
    std::vector<NamedTensor> t = ssmdyn::mamba_tensors(model, MambaNaming::MambaSsm, DType::F32);
    TempPath file(".safetensors");
    ssmdyn::write_safetensors(file.path(), t);
    const std::size_t before = ssmdyn::memory_limit();
    ssmdyn::set_memory_limit(10000);
    const std::string m = message_of([&] { ssmdyn::load_mamba_model(file.path()); });
    ssmdyn::set_memory_limit(before);
    CHECK(contains(m, "a model of 2 layers, d_model = 16, d_inner = 32, vocab_size = 24"));
}
