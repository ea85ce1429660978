// libFuzzer harness: bytes -> the `ssmdyn` program's whole configuration path, up to a
// short integration.
//
// Input: an optional first line of `simulate` flags (it must start with "--", e.g.
// "--t-end 5 --stepper rk4 --dt 0.01"), then the CONFIG JSON. The flags go through
// cli::parse_arguments and the program's own cli::simulate_options and cli::required_t_end
// (tools/integration_options.hpp); without a flag line, --t-end is 1. The CONFIG is read by cli::load_config from an in-memory file,
// exactly as `ssmdyn simulate CONFIG` reads it. Then what the commands do with it, capped
// so that one input stays cheap: classify (and its JSON), the deep model for 4 layers
// (`forward`), and simulate with max_steps = 50 (its JSON, CSV, observed_regime and
// observe; in fuzz_cli_simulate.cpp, a second file so that the two halves, each about a
// minute of compiling, build in parallel).
//
// Expected: std::invalid_argument, the program's "invalid input" (exit 2). Anything else
// (a crash, a sanitizer report, another exception, a non-finite result) is a finding.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ssmdyn/core/deep_model.hpp>
#include <ssmdyn/integrate/status.hpp>
#include <ssmdyn/io/json.hpp>
#include <ssmdyn/theory/classify.hpp>

#include "arguments.hpp"
#include "config.hpp"
#include "fuzz_support.hpp"
#include "integration_options.hpp"

// fuzz_cli_simulate.cpp
void simulate_capped(const ssmdyn::S6Params<double>& p, const ssmdyn::StateVector<double>& x0, double t_end,
                     ssmdyn::SimulateOptions<double> options);

namespace {

using namespace ssmdyn;
using ssmdyn_fuzz::finding;

std::vector<std::string> words(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

void run(const std::uint8_t* data, std::size_t size, ssmdyn_fuzz::MemoryFile& config_file) {
    std::size_t json_begin = 0;
    double t_end = 1.0;
    SimulateOptions<double> options;
    if (size >= 2 && data[0] == '-' && data[1] == '-') {
        const auto* newline = static_cast<const std::uint8_t*>(std::memchr(data, '\n', size));
        json_begin = newline ? static_cast<std::size_t>(newline - data) + 1 : size;
        const std::string line(reinterpret_cast<const char*>(data), json_begin);
        const cli::Arguments args = cli::parse_arguments(words(line), {SSMDYN_INTEGRATION_FLAGS}, "simulate",
                                                         {SSMDYN_INTEGRATION_SWITCHES});
        t_end = cli::required_t_end(args);
        options = cli::simulate_options(args);
    }
    config_file.set(data + json_begin, size - json_begin);
    const cli::Config config = cli::load_config(config_file.path());
    const S6Params<double>& p = config.params;
    const StateVector<double>& x0 = config.tokens;

    // classify
    (void)to_json(classify(p, x0)).dump();

    // forward --depth 4
    DeepModelOptions<double> deep;
    deep.depth = 4;
    const DeepModelResult<double> layers = deep_forward(p, x0, deep);
    if (!layers.tokens.allFinite()) finding("deep_forward: tokens are not finite");

    // simulate, capped
    simulate_capped(p, x0, t_end, options);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static ssmdyn_fuzz::MemoryFile config_file("ssmdyn-fuzz-config.json");
    try {
        run(data, size, config_file);
    } catch (const std::invalid_argument&) {
    }
    return 0;
}
