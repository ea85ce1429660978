// The integrating half of fuzz_cli_config (see there): `ssmdyn simulate` on a parsed
// CONFIG, capped at 50 steps, with everything the program does with the result.

#include <sstream>
#include <string>

#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/io/csv.hpp>
#include <ssmdyn/io/json.hpp>
#include <ssmdyn/theory/rates.hpp>

#include "fuzz_support.hpp"

void simulate_capped(const ssmdyn::S6Params<double>& p, const ssmdyn::StateVector<double>& x0, double t_end,
                     ssmdyn::SimulateOptions<double> options) {
    using namespace ssmdyn;
    using ssmdyn_fuzz::finding;
    const SelectiveSystem<double> system(p);
    options.max_steps = 50;
    options.record = Record::Steps;
    const SimulateResult<double> r = simulate(system, x0, t_end, options);
    // The driver's contract: an explicit status, and a final state that is always finite.
    if (r.x_final.size() != x0.size()) finding("simulate: x_final has the wrong size");
    if (!r.x_final.allFinite())
        finding("simulate: x_final is not finite (status " + std::string(to_string(r.status)) + ")");
    if (r.t_blowup.has_value() != (r.status == Status::BlowUp))
        finding("simulate: t_blowup without blow_up, or the reverse");
    (void)to_json(r).dump();
    (void)to_string(observed_regime(r));
    (void)observe(r);
    std::ostringstream csv;
    write_trajectory_csv(csv, r);
}
