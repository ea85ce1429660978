#pragma once
/// \file checkpoint.hpp
/// The tensors of a checkpoint, from one safetensors file or from the shards that a
/// `model.safetensors.index.json` lists (as Hugging Face writes large models), with the
/// reading interface of SafetensorsFile. A path may also be a folder holding either; the
/// `config.json` beside it is found too. Tensors are read by offset, on request.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/memory_limit.hpp"
#include "safetensors.hpp"

namespace ssmdyn {

namespace detail {

/// A small JSON file (an index or a config): a regular file of at most 64 MB, parsed.
inline nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& what) {
    namespace fs = std::filesystem;
    auto fail = [&](const std::string& why) {
        throw std::invalid_argument(what + " '" + path.string() + "': " + why);
    };
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (ec || !fs::exists(status)) fail("does not exist");
    if (!fs::is_regular_file(status)) fail("is not a regular file");
    const auto size = fs::file_size(path, ec);
    if (ec) fail("cannot read its size");
    if (size > (std::uintmax_t(64) << 20)) fail("is " + format_bytes(static_cast<std::size_t>(size)) + ", above 64 MiB");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot be opened");
    std::stringstream text;
    text << in.rdbuf();
    try {
        return nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
        fail(std::string("invalid JSON: ") + e.what());
    }
    return {};
}

}  // namespace detail

/// The tensors of a checkpoint, from one safetensors file or from the shards an index
/// lists; the same reading interface as SafetensorsFile (contains, info, matrix, vector,
/// values, names, path).
class Checkpoint {
public:
    /// \param path a .safetensors file, a model.safetensors.index.json, or a folder with
    ///   model.safetensors or model.safetensors.index.json
    /// \throws std::invalid_argument naming the file: missing, not a checkpoint, an index
    ///   without weight_map, a shard that is missing or lacks a tensor the index names it for
    explicit Checkpoint(const std::string& path) {
        namespace fs = std::filesystem;
        fs::path p(path);
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            if (fs::exists(p / "model.safetensors.index.json", ec))
                p /= "model.safetensors.index.json";
            else if (fs::exists(p / "model.safetensors", ec))
                p /= "model.safetensors";
            else
                throw std::invalid_argument("checkpoint folder '" + path +
                                            "' holds neither model.safetensors nor model.safetensors.index.json");
        }
        m_path = p.string();
        const fs::path folder = p.parent_path().empty() ? fs::path(".") : p.parent_path();
        if (fs::exists(folder / "config.json", ec)) m_config_path = (folder / "config.json").string();
        const std::string name = p.filename().string();
        if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0)
            open_index(p, folder);
        else
            add_file(m_path);
    }

    /// The path given (resolved to the file or index inside a folder).
    const std::string& path() const { return m_path; }
    /// The config.json beside the checkpoint, or empty.
    const std::string& config_path() const { return m_config_path; }
    /// Number of safetensors files (1 unless sharded).
    std::size_t shards() const { return m_files.size(); }

    bool contains(const std::string& name) const { return m_where.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
    MatrixX<double> matrix(const std::string& name) const { return file_of(name).matrix(name); }
    VectorX<double> vector(const std::string& name) const { return file_of(name).vector(name); }
    std::vector<double> values(const std::string& name) const { return file_of(name).values(name); }

    /// Every tensor name, sorted.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(m_where.size());
        for (const auto& [name, index] : m_where) out.push_back(name);
        return out;
    }

    /// The file holding a tensor; throws std::invalid_argument naming the tensor and the
    /// prefixes the checkpoint does have.
    const SafetensorsFile& file_of(const std::string& name) const {
        const auto it = m_where.find(name);
        if (it == m_where.end())
            throw std::invalid_argument("checkpoint '" + m_path + "' has no tensor " + name + " (its tensors begin with " +
                                        prefixes() + ")");
        return m_files[it->second];
    }

    /// The distinct first two dot-separated parts of the tensor names ("backbone.layers",
    /// "lm_head.weight", …), for messages.
    std::string prefixes() const {
        std::set<std::string> seen;
        for (const auto& [name, index] : m_where) {
            const auto first = name.find('.');
            const auto second = first == std::string::npos ? first : name.find('.', first + 1);
            seen.insert(name.substr(0, second));
        }
        std::string out;
        for (const auto& s : seen) out += (out.empty() ? "" : ", ") + s;
        return out.empty() ? "nothing: it is empty" : out;
    }

private:
    void add_file(const std::string& file) {
        m_files.emplace_back(file);
        const std::size_t index = m_files.size() - 1;
        for (const std::string& name : m_files.back().names())
            if (!m_where.emplace(name, index).second)
                throw std::invalid_argument("checkpoint '" + m_path + "': tensor " + name + " is in two shards");
    }

    void open_index(const std::filesystem::path& index, const std::filesystem::path& folder) {
        const nlohmann::json root = detail::read_json_file(index, "checkpoint index");
        auto fail = [&](const std::string& why) {
            throw std::invalid_argument("checkpoint index '" + index.string() + "': " + why);
        };
        if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
            fail("has no \"weight_map\" object (tensor name -> shard file)");
        std::map<std::string, std::vector<std::string>> by_shard;
        for (const auto& [name, shard] : root["weight_map"].items()) {
            if (!shard.is_string()) fail("weight_map[\"" + name + "\"] is not a file name");
            by_shard[shard.get<std::string>()].push_back(name);
        }
        if (by_shard.empty()) fail("its weight_map is empty");
        for (const auto& [shard, names] : by_shard) {
            const std::filesystem::path file = folder / shard;
            std::error_code ec;
            if (!std::filesystem::exists(file, ec))
                fail("shard '" + shard + "' (listed for " + names.front() + " and " + std::to_string(names.size() - 1) +
                     " more) does not exist at '" + file.string() + "'");
            add_file(file.string());
            for (const std::string& name : names)
                if (!m_files.back().contains(name))
                    fail("shard '" + shard + "' has no tensor " + name + ", which the index places there");
        }
    }

    std::string m_path, m_config_path;
    std::vector<SafetensorsFile> m_files;
    std::map<std::string, std::size_t> m_where;
};

}  // namespace ssmdyn
