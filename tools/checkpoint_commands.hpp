#pragma once
// The commands that read Mamba checkpoints: `inspect` (the per-layer report), `trace`
// (every token through every layer), `make-checkpoint` (a small model initialised as
// mamba_ssm does, to try them on), and `--checkpoint CKPT --layer K [--prefix P]`, which
// gives classify, simulate, forward and influence a layer's S6 in place of CONFIG's model.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <ssmdyn/core/mamba_block.hpp>
#include <ssmdyn/io/csv.hpp>
#include <ssmdyn/io/gnuplot.hpp>
#include <ssmdyn/io/json.hpp>
#include <ssmdyn/io/mamba_model.hpp>
#include <ssmdyn/io/table.hpp>
#include <ssmdyn/theory/layer_report.hpp>

#include "arguments.hpp"
#include "config.hpp"

namespace ssmdyn::cli {

/// The flags that take the model from a checkpoint (classify, simulate, forward, influence).
#define SSMDYN_CHECKPOINT_FLAGS "--checkpoint", "--layer", "--prefix"

/// The model and tokens of a command: CONFIG's, or with --checkpoint the S6 of layer
/// --layer (under --prefix) and CONFIG's tokens alone.
inline Config load_problem(const Arguments& args, const std::string& config_path) {
    if (!args.has("--checkpoint")) {
        for (const char* flag : {"--layer", "--prefix"})
            if (args.has(flag)) throw std::invalid_argument(std::string(flag) + ": only with --checkpoint");
        return load_config(config_path);
    }
    if (!args.has("--layer")) throw std::invalid_argument("--layer: required with --checkpoint (the layer index, from 0)");
    const auto layer = static_cast<int>(
        args.whole("--layer", 0, static_cast<std::uint64_t>(std::numeric_limits<int>::max()), "the layer index"));
    const std::string prefix = args.text("--prefix").value_or(mamba_default_prefix);
    Config config;
    MambaLayer mamba = load_mamba_layer(*args.text("--checkpoint"), layer, prefix);
    config.params = std::move(mamba.params);
    config.D_skip = std::move(mamba.D_skip);
    config.tokens = load_tokens(config_path, config.params.dim());
    return config;
}

/// forward's layer options: --zero-order-hold, --skip (the checkpoint layer's D) and
/// --gate FILE ({"gate": [[D numbers] per token]}, the same gate at every layer).
inline LayerOptions<double> forward_layer_options(const Arguments& args, const Config& config) {
    LayerOptions<double> o;
    if (args.has("--zero-order-hold")) o.discretization = Discretization::ZeroOrderHold;
    if (args.has("--skip")) {
        if (config.D_skip.size() == 0)
            throw std::invalid_argument("--skip: only with --checkpoint (the skip weights are the layer's D)");
        o.D_skip = config.D_skip;
    }
    if (const auto path = args.text("--gate")) {
        const Eigen::Index D = config.params.dim(), L = config.tokens.size() / D;
        const std::string field = "gate file '" + *path + "'";
        const nlohmann::json root = detail::parse_strict(detail::read_regular_file(*path, field), field);
        if (!root.is_object() || root.size() != 1 || !root.contains("gate"))
            throw std::invalid_argument(field + ": expected {\"gate\": [[D numbers] per token]}");
        const StateVector<double> flat = detail::tokens(root["gate"], D);
        if (flat.size() != D * L)
            throw std::invalid_argument(field + ": " + std::to_string(flat.size() / D) + " tokens, CONFIG has " +
                                        std::to_string(L));
        o.gate = Eigen::Map<const MatrixX<double>>(flat.data(), D, L);
    }
    return o;
}

/// "I1,I2,.." as token ids in [0, max].
inline std::vector<std::int64_t> parse_ids(const std::string& text, std::int64_t max) {
    std::vector<std::int64_t> ids;
    std::size_t start = 0;
    for (;;) {
        const std::size_t stop = text.find(',', start);
        const std::string piece = text.substr(start, stop == std::string::npos ? std::string::npos : stop - start);
        const std::optional<std::uint64_t> v = parse_whole(piece, static_cast<std::uint64_t>(max));
        if (!v)
            throw std::invalid_argument("--ids: expected token ids from 0 to " + std::to_string(max) +
                                        " separated by commas, got '" + piece + "' in '" + text + "'");
        ids.push_back(static_cast<std::int64_t>(*v));
        if (stop == std::string::npos) return ids;
        start = stop + 1;
    }
}

inline nlohmann::ordered_json to_json(const LayerReport& r) {
    nlohmann::ordered_json j;
    j["layer"] = r.layer;
    j["mu_sym_max"] = r.mu_sym_max;
    j["mu_sym_min"] = r.mu_sym_min;
    j["mu_sym_positive"] = r.mu_sym_positive;
    j["mu_sym_negative"] = r.mu_sym_negative;
    j["scenario"] = to_string(r.scenario);
    j["s_delta_rank"] = r.s_delta_rank;
    j["A_min"] = r.A_min;
    j["A_max"] = r.A_max;
    j["dt_bias_min"] = r.dt_bias_min;
    j["dt_bias_max"] = r.dt_bias_max;
    if (r.delta_min) {
        j["delta_min"] = *r.delta_min;
        j["delta_max"] = *r.delta_max;
        j["norm_growth"] = *r.norm_growth;
    }
    return j;
}

inline std::string short_number(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.4g", v);
    return buffer;
}

/// ssmdyn inspect CKPT [--json] [--ids I1,..]
inline int run_inspect(const std::vector<std::string>& argv) {
    const Arguments args = parse_arguments(argv, {"--ids"}, "inspect", {"--json"});
    const Checkpoint ckpt(args.single_positional("inspect", "CKPT (checkpoint file, index or folder)"));
    const MambaCheckpointInfo info = inspect_mamba_checkpoint(ckpt);
    const MambaConfig& c = info.config;
    std::vector<LayerReport> reports;
    if (const auto ids = args.text("--ids")) {  // the whole model, run on the prompt
        const MambaModel<double> model = load_mamba_model(ckpt);
        MambaTrace<double> trace;
        mamba_forward(model, parse_ids(*ids, c.vocab_size - 1), &trace);
        reports = mamba_layer_reports(model, &trace);
    } else {  // the S6 part of each layer only
        for (Eigen::Index k = 0; k < c.n_layers; ++k) {
            const MambaLayer layer = load_mamba_layer(ckpt, static_cast<int>(k));
            MambaMixer<double> mixer;
            mixer.s6 = layer.params;
            reports.push_back(mamba_layer_report(mixer, k));
        }
    }
    if (args.has("--json")) {
        nlohmann::ordered_json out;
        out["naming"] = to_string(info.naming);
        out["n_layers"] = c.n_layers;
        out["d_model"] = c.d_model;
        out["d_inner"] = c.d_inner;
        out["d_state"] = c.d_state;
        out["d_conv"] = c.d_conv;
        out["dt_rank"] = c.dt_rank;
        out["vocab_size"] = c.vocab_size;
        out["layers"] = nlohmann::ordered_json::array();
        for (const LayerReport& r : reports) out["layers"].push_back(to_json(r));
        std::cout << out.dump() << '\n';
        return 0;
    }
    std::cout << "checkpoint " << ckpt.path() << " (" << to_string(info.naming) << " naming"
              << (ckpt.shards() > 1 ? ", " + std::to_string(ckpt.shards()) + " shards" : std::string()) << ")\n"
              << c.n_layers << " layers, d_model " << c.d_model << ", d_inner " << c.d_inner << ", d_state "
              << c.d_state << ", d_conv " << c.d_conv << ", dt_rank " << c.dt_rank << ", vocabulary " << c.vocab_size
              << ", " << (c.rms_norm ? "RMSNorm" : "LayerNorm") << (info.lm_head ? ", own lm_head" : ", tied lm_head")
              << "\n\n";
    std::vector<std::vector<std::string>> table = {
        {"layer", "sym(mu) max", "min", "+", "-", "scenario", "rank S_Delta", "A", "dt bias"}};
    if (args.has("--ids")) {
        table[0].push_back("Delta");
        table[0].push_back("norm growth");
    }
    for (const LayerReport& r : reports) {
        table.push_back({std::to_string(r.layer), short_number(r.mu_sym_max), short_number(r.mu_sym_min),
                         std::to_string(r.mu_sym_positive), std::to_string(r.mu_sym_negative), to_string(r.scenario),
                         std::to_string(r.s_delta_rank), short_number(r.A_min) + " .. " + short_number(r.A_max),
                         short_number(r.dt_bias_min) + " .. " + short_number(r.dt_bias_max)});
        if (r.delta_min) {
            table.back().push_back(short_number(*r.delta_min) + " .. " + short_number(*r.delta_max));
            table.back().push_back(short_number(*r.norm_growth));
        }
    }
    print_table(std::cout, table);
    return 0;
}

/// The embeddings of --embeddings FILE: {"embeddings": [[d_model numbers] per token]}.
inline MatrixX<double> load_embeddings(const std::string& path, Eigen::Index d_model) {
    const std::string field = "embeddings file '" + path + "'";
    const nlohmann::json root = detail::parse_strict(detail::read_regular_file(path, field), field);
    if (!root.is_object() || !root.contains("embeddings") || root.size() != 1)
        throw std::invalid_argument(field + ": expected {\"embeddings\": [[d_model numbers], ..]}");
    const StateVector<double> flat = detail::tokens(root["embeddings"], d_model);
    return Eigen::Map<const MatrixX<double>>(flat.data(), d_model, flat.size() / d_model);
}

/// ssmdyn trace CKPT (--ids I1,.. | --embeddings FILE) [--full] [--out FILE.csv] [--precision f64|f32]
///                   [--threads P]
inline int run_trace(const std::vector<std::string>& argv) {
    const Arguments args =
        parse_arguments(argv, {"--ids", "--embeddings", "--out", "--precision", "--threads"}, "trace", {"--full"});
    const Checkpoint ckpt(args.single_positional("trace", "CKPT (checkpoint file, index or folder)"));
    if (args.has("--ids") == args.has("--embeddings"))
        throw std::invalid_argument("trace: give exactly one of --ids I1,I2,.. and --embeddings FILE");
    const bool f32 = single_precision(args);
    const int threads = inner_thread_count(args);
    const MambaCheckpointInfo info = inspect_mamba_checkpoint(ckpt);
    std::optional<std::ofstream> csv;
    if (const auto path = args.text("--out")) {
        csv = open_for_writing(*path, "--out");
        *csv << "layer,token,norm\n";
        csv->precision(std::numeric_limits<double>::max_digits10);
        flush_checked(*csv, *path);
    }
    const MatrixX<double> embeddings = [&] {
        if (const auto path = args.text("--embeddings")) return load_embeddings(*path, info.config.d_model);
        const MatrixX<double> table = ckpt.matrix(mamba_embedding_name(info.naming));  // the model is read below
        const std::vector<std::int64_t> ids = parse_ids(*args.text("--ids"), info.config.vocab_size - 1);
        MatrixX<double> e(info.config.d_model, static_cast<Eigen::Index>(ids.size()));
        for (std::size_t l = 0; l < ids.size(); ++l) e.col(static_cast<Eigen::Index>(l)) = table.row(ids[l]).transpose();
        return e;
    }();
    MambaTrace<double> trace;
    MatrixX<double> logits;
    if (f32) {
        const MambaModel<float> model = load_mamba_model<float>(ckpt);
        MambaTrace<float> single;
        logits = mamba_forward_embeddings(model, MatrixX<float>(embeddings.cast<float>()), &single, threads)
                     .cast<double>();
        for (const auto& h : single.hidden) trace.hidden.push_back(h.cast<double>());
    } else {
        const MambaModel<double> model = load_mamba_model(ckpt);
        logits = mamba_forward_embeddings(model, embeddings, &trace, threads);
    }
    nlohmann::ordered_json out;
    out["n_layers"] = info.config.n_layers;
    out["d_model"] = info.config.d_model;
    out["norms"] = nlohmann::ordered_json::array();
    for (const MatrixX<double>& h : trace.hidden) {
        const VectorX<double> norms = h.colwise().norm().transpose();
        out["norms"].push_back(std::vector<double>(norms.data(), norms.data() + norms.size()));
    }
    if (args.has("--full")) {
        out["hidden"] = nlohmann::ordered_json::array();
        for (const MatrixX<double>& h : trace.hidden) out["hidden"].push_back(json_rows(h.transpose()));
        out["logits"] = json_rows(logits.transpose());
    }
    if (csv) {
        const std::string path = *args.text("--out");
        for (Eigen::Index l = 0; l < embeddings.cols(); ++l)  // token by token, so each is one line
            for (std::size_t k = 0; k < trace.hidden.size(); ++k)
                *csv << k << ',' << l + 1 << ',' << trace.hidden[k].col(l).norm() << '\n';
        close_checked(*csv, path);
        // A figure beside the CSV where gnuplot exists: each token's norm across the layers.
        const std::filesystem::path data(path);
        const std::filesystem::path script = data.parent_path() / (data.stem().string() + ".gp");
        std::ofstream gp(script);
        gp << "set terminal pngcairo size 800,500\nset output '" << data.stem().string() << ".png'\n"
           << "set datafile separator ','\nset key off\n"
           << "set xlabel 'layer (0: embedding)'\nset ylabel '|h| of each token'\n"
           << "n = " << trace.hidden.size() << "\n"
           << "plot for [l=0:" << embeddings.cols() - 1 << "] '" << data.filename().string()
           << "' skip 1 every ::l*n::l*n+n-1 using 1:3 with linespoints\n";
        gp.close();
        run_gnuplot(script);
    }
    std::cout << out.dump() << '\n';
    return 0;
}

/// ssmdyn make-checkpoint DIR [--layers K] [--d-model D] [--vocab V] [--naming mamba_ssm|transformers]
///                            [--seed S] [--dtype f32|f64|bf16]
inline int run_make_checkpoint(const std::vector<std::string>& argv) {
    const Arguments args =
        parse_arguments(argv, {"--layers", "--d-model", "--vocab", "--naming", "--seed", "--dtype"}, "make-checkpoint");
    if (args.positional.size() != 1) throw std::invalid_argument("make-checkpoint: expected exactly one folder DIR");
    MambaConfig c;
    c.n_layers = static_cast<Eigen::Index>(args.whole("--layers", 3, 64, "the number of layers"));
    c.d_model = static_cast<Eigen::Index>(args.whole("--d-model", 32, 4096, "d_model"));
    if (c.n_layers < 1 || c.d_model < 1) throw std::invalid_argument("--layers, --d-model: must be >= 1");
    c.d_inner = 2 * c.d_model;
    c.d_state = 16;
    c.d_conv = 4;
    c.dt_rank = (c.d_model + 15) / 16;
    c.vocab_size = static_cast<Eigen::Index>(args.whole("--vocab", 64, 1000000, "the vocabulary size"));
    if (c.vocab_size < 1) throw std::invalid_argument("--vocab: must be >= 1");
    const MambaNaming naming = args.parsed("--naming", MambaNaming::MambaSsm, parse_mamba_naming);
    const std::string dtype_name = args.text("--dtype").value_or("f32");
    const DType dtype = dtype_name == "f32" ? DType::F32 : dtype_name == "f64" ? DType::F64 : dtype_name == "bf16" ? DType::BF16
        : throw std::invalid_argument("--dtype: expected f32, f64 or bf16, got '" + dtype_name + "'");
    const std::filesystem::path dir(args.positional.front());
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error("make-checkpoint: cannot create '" + dir.string() + "': " + ec.message());
    const MambaModel<double> model = mamba_init(c, args.whole("--seed", 1, std::numeric_limits<std::uint32_t>::max(), "the seed"));
    write_mamba_checkpoint((dir / "model.safetensors").string(), model, naming, dtype);
    std::ofstream config(dir / "config.json");
    config << mamba_config_json(c, naming).dump(2) << '\n';
    close_checked(config, (dir / "config.json").string());
    nlohmann::ordered_json out;
    out["checkpoint"] = (dir / "model.safetensors").string();
    out["config"] = (dir / "config.json").string();
    out["naming"] = to_string(naming);
    out["n_layers"] = c.n_layers;
    out["d_model"] = c.d_model;
    out["vocab_size"] = c.vocab_size;
    std::cout << out.dump() << '\n';
    return 0;
}

}  // namespace ssmdyn::cli
