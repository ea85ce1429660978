// Not part of the header-only library. The project's own programs (tests, examples, the
// CLI, benchmarks) are compiled with SSMDYN_EXTERN_TEMPLATES and link this file, which
// instantiates the heaviest templates they all use once: simulate() for
// SelectiveSystem<double> (every stepper, the stiff pair, the guarded driver) and its
// right-hand side. Without it each program compiles its own copy; under the sanitizers
// that is most of CI's build time. A user's project can do the same with its own types.
#include <ssmdyn/core/selective_scan.hpp>
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>

namespace ssmdyn {
template void selective_scan<double, Softplus, Eigen::Map<const MatrixX<double>>, Eigen::Map<MatrixX<double>>>(
    const S6Params<double>&, const Softplus&, const Eigen::MatrixBase<Eigen::Map<const MatrixX<double>>>&,
    const Eigen::MatrixBase<Eigen::Map<MatrixX<double>>>&, const LayerOptions<double>&, int);

namespace detail {
template SimulateResult<double> simulate_state<SelectiveSystem<double, Softplus>, double>(
    const SelectiveSystem<double, Softplus>&, const StateVector<double>&, double, const SimulateOptions<double>&);
}  // namespace detail
}  // namespace ssmdyn
