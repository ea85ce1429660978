// libFuzzer harness: bytes -> a safetensors file -> every tensor read, and a Mamba layer.
//
// The input is the whole file. It is read both from memory (SafetensorsFile::from_bytes)
// and by path (SafetensorsFile(path) on an in-memory file), which must agree; then every
// tensor's values are read (as vector or matrix too, by rank), and load_mamba_layer is
// tried for layers 0 and 1 under the default prefix and under an empty prefix (bare
// names such as "x_proj.weight"); a layer that loads is evaluated once as a system.
//
// Expected: std::invalid_argument, the only exception these functions document. Anything
// else (a crash, a sanitizer report, another exception, a disagreement) is a finding.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/io/mamba.hpp>
#include <ssmdyn/io/safetensors.hpp>

#include "fuzz_support.hpp"

namespace {

using ssmdyn::SafetensorsFile;
using ssmdyn_fuzz::finding;

void read_every_tensor(const SafetensorsFile& file) {
    for (const auto& entry : file.metadata()) (void)entry.second.size();
    for (const std::string& name : file.names()) {
        const ssmdyn::TensorInfo& info = file.info(name);
        std::uint64_t count = 1;
        for (std::int64_t d : info.shape) count *= static_cast<std::uint64_t>(d);
        if (info.element_count() != count) finding("element_count() != product of the shape for " + name);
        if (!ssmdyn::is_supported(info.dtype)) {
            try {
                (void)file.values(name);
                finding("values() of an unsupported dtype did not throw for " + name);
            } catch (const std::invalid_argument&) {
            }
            continue;
        }
        const std::vector<double> values = file.values(name);
        if (values.size() != count) finding("values() returned a wrong count for " + name);
        if (info.shape.size() == 2) {
            const auto m = file.matrix(name);
            if (static_cast<std::uint64_t>(m.size()) != count) finding("matrix() has a wrong size for " + name);
        } else if (info.shape.size() == 1) {
            const auto v = file.vector(name);
            if (static_cast<std::uint64_t>(v.size()) != count) finding("vector() has a wrong size for " + name);
        }
    }
}

void try_mamba(const SafetensorsFile& file, int layer, const std::string& prefix) {
    try {
        const ssmdyn::MambaLayer m = ssmdyn::load_mamba_layer(file, layer, prefix);
        if (m.params.dim() != m.d_inner || m.params.state_dim() != m.n_state || m.D_skip.size() != m.d_inner)
            finding("load_mamba_layer: inconsistent sizes");
        const ssmdyn::SelectiveSystem<double> system(m.params);
        ssmdyn::StateVector<double> x = ssmdyn::StateVector<double>::LinSpaced(2 * m.d_inner, -1.0, 1.0), dxdt;
        system(x, dxdt, 0.0);
        if (dxdt.size() != x.size()) finding("system: wrong output size");
    } catch (const std::invalid_argument&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static ssmdyn_fuzz::MemoryFile disk("ssmdyn-fuzz.safetensors");
    disk.set(data, size);

    bool from_memory_ok = true, from_path_ok = true;
    std::vector<std::string> names_memory, names_path;
    try {
        const SafetensorsFile f = SafetensorsFile::from_bytes(std::vector<unsigned char>(data, data + size));
        names_memory = f.names();
    } catch (const std::invalid_argument&) {
        from_memory_ok = false;
    }
    try {
        const SafetensorsFile file(disk.path());
        names_path = file.names();
        try {
            read_every_tensor(file);
        } catch (const std::invalid_argument&) {
            finding("a file whose header was accepted refused to give a supported tensor's values");
        }
        for (int layer : {0, 1}) {
            try_mamba(file, layer, ssmdyn::mamba_default_prefix);
            try_mamba(file, layer, "");
        }
    } catch (const std::invalid_argument&) {
        from_path_ok = false;
    }
    if (from_memory_ok != from_path_ok || names_memory != names_path)
        finding("SafetensorsFile::from_bytes and SafetensorsFile(path) disagree");
    return 0;
}
