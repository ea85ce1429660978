#pragma once
// The options of the commands that integrate (simulate, influence): their flags and how
// they become SimulateOptions. Shared by tools/ssmdyn.cpp and the fuzz harness of the
// CLI configuration path (tests/fuzz/fuzz_cli_config.cpp), so both take the same path.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include <ssmdyn/integrate/status.hpp>

#include "arguments.hpp"

namespace ssmdyn::cli {

/// The flags (and switches) of simulate and influence, for parse_arguments.
#define SSMDYN_INTEGRATION_FLAGS \
    "--t-end", "--rtol", "--atol", "--stepper", "--error-norm", "--dt", "--max-steps", "--max-seconds", "--out"
#define SSMDYN_INTEGRATION_SWITCHES "--no-stiff-switching"
/// The flags of the commands that compute in either precision on several threads.
#define SSMDYN_PRECISION_FLAGS "--precision", "--threads"

/// The integration options the flags give, in Scalar (the defaults of the tolerances
/// depend on it); throws std::invalid_argument naming the flag.
template <typename Scalar = double>
SimulateOptions<Scalar> simulate_options(const Arguments& args) {
    SimulateOptions<Scalar> o;
    // A value the precision cannot hold (1e-50 or 1e300 in float) is refused, not rounded
    // to 0 or infinity.
    const auto flag_value = [&args](const char* flag, Scalar fallback) {
        const double v = args.non_negative(flag, double(fallback));
        const auto s = static_cast<Scalar>(v);
        if ((v != 0 && !(s > 0)) || !std::isfinite(s))
            throw std::invalid_argument(std::string(flag) + ": " + *args.text(flag) +
                                        " is outside the range of the precision computed in (--precision)");
        return s;
    };
    o.rtol = flag_value("--rtol", o.rtol);
    o.atol = flag_value("--atol", o.atol);
    if (o.rtol == 0 && o.atol == 0) throw std::invalid_argument("--rtol, --atol: cannot both be 0");
    // Checked here too (simulate checks it), so that it is refused before any file is written.
    const Scalar eps = std::numeric_limits<Scalar>::epsilon();
    if (o.rtol != 0 && o.rtol < 4 * eps)
        throw std::invalid_argument("--rtol: " + *args.text("--rtol") + " is below what the precision resolves (use >= " +
                                    std::to_string(double(4 * eps)) + " or 0)");
    o.dt = flag_value("--dt", o.dt);
    o.stepper = args.parsed("--stepper", o.stepper, parse_stepper);
    o.error_norm = args.parsed("--error-norm", o.error_norm, parse_error_norm);
    if (o.error_norm == ErrorNorm::Rms && o.stepper == Stepper::BulirschStoer)
        throw std::invalid_argument("--error-norm: rms applies to dopri5, cash_karp and fehlberg78");
    o.max_steps = static_cast<std::size_t>(
        args.whole("--max-steps", o.max_steps, std::numeric_limits<std::uint32_t>::max(), "the step budget"));
    if (o.max_steps == 0) throw std::invalid_argument("--max-steps: must be >= 1");
    o.max_wall_seconds = args.non_negative("--max-seconds", 0.0);
    o.stiff_switching = !args.has("--no-stiff-switching");
    o.record = Record::None;  // nothing kept in memory: --out streams through the observer
    return o;
}

/// --t-end, which every integrating command requires.
inline double required_t_end(const Arguments& args) {
    if (!args.has("--t-end")) throw std::invalid_argument("--t-end: required (the final time)");
    return args.non_negative("--t-end", 0.0);
}

}  // namespace ssmdyn::cli
