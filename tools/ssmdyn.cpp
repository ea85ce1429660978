// The `ssmdyn` command-line program: `demo` (the default), `simulate`, `classify`,
// `forward`, `sweep`, `influence`, and for checkpoints `inspect`, `trace` and
// `make-checkpoint` (tools/checkpoint_commands.hpp).
//
// Exit codes: 0 on success (a blow-up, a spent step or time budget are results, not
// errors), 2 on invalid input (including input whose memory need is above the limit of
// core/memory_limit.hpp), 1 on any other failure (a write error on an --out file
// included); every error is one line on stderr, "ssmdyn: ...", naming the field, flag or
// file. Output files are opened, and their header written and flushed, before any
// computation, so that an unwritable file fails at once.

#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <ssmdyn/core/memory_limit.hpp>

#include <ssmdyn/core/deep_model.hpp>
#include <ssmdyn/core/system.hpp>
#include <ssmdyn/integrate/simulate.hpp>
#include <ssmdyn/io/csv.hpp>
#include <ssmdyn/io/json.hpp>
#include <ssmdyn/io/progress_bar.hpp>
#include <ssmdyn/theory/classify.hpp>
#include <ssmdyn/theory/influence.hpp>
#include <ssmdyn/theory/phase_diagram.hpp>
#include <ssmdyn/theory/rates.hpp>

#include "arguments.hpp"
#include "checkpoint_commands.hpp"
#include "config.hpp"
#include "demo.hpp"
#include "integration_options.hpp"
#ifdef SSMDYN_WITH_MPI
#include "mpi_sweep.hpp"
#endif

namespace {

using namespace ssmdyn;
using namespace ssmdyn::cli;

constexpr const char* usage = R"(usage:
  ssmdyn [demo] [--out-dir DIR]
      The paper's three 1-D regimes: prints a table, writes one CSV (and, with gnuplot,
      one PNG) per scenario into DIR (default: ssmdyn-demo).

  ssmdyn forward CONFIG --depth K [--step H] [--zero-order-hold] [--skip] [--gate FILE]
                        [--precision f64|f32] [--threads P]
      Runs the deep residual model X <- X + H S6(X) for K weight-tied layers (H default 1)
      and prints {"tokens", "layers_completed", "finite"}; finite is false (and tokens
      are the last finite layer's) when a layer overflowed. The layer options of a real
      Mamba layer: --zero-order-hold (B discretised exactly), --skip (adds D * x with the
      checkpoint layer's D; needs --checkpoint), --gate FILE ({"gate": [[D numbers] per
      token]}: the output times SiLU(gate), at every layer).

  ssmdyn sweep --mu MIN:MAX:N --s MIN:MAX:N --tokens x1,x2,.. [--a A] [--bias B]
               --t-end T [--threads P] [--out FILE.csv]
      The 1-D phase diagram over the N x N grid of (mu, s) for fixed tokens (a default 1,
      bias 0): every cell predicted by the theorem and observed by integrating to T, on
      P threads (0: all; more than the hardware's threads is capped to them, with a
      one-line note on stderr). Prints {"cells", "agreement", "counts", "solve_seconds"};
      the CSV has one row per cell: mu,s,predicted,observed,t_blowup. A grid whose cells
      do not fit in memory is refused before anything runs.

  ssmdyn classify CONFIG
      Predicts the regime from the paper's theorems and prints {"regime", "mu",
      "mu_sym_eigenvalues", "scenario", "theorem_applies", "reason",
      "first_token_blowup_time", "tokens": [{"index", "prediction"}, ..]}.

  ssmdyn simulate CONFIG --t-end T [--rtol R] [--atol A] [--stepper NAME] [--dt H]
                         [--error-norm max|rms] [--max-steps N] [--max-seconds S]
                         [--no-stiff-switching] [--out FILE.csv]
                         [--precision f64|f32] [--threads P]
      Integrates dX/dt = S6(X) from the tokens in CONFIG up to time T and prints
      {"status", "t_final", "t_blowup", "tokens", "steps", "rhs_evaluations",
       "stiff_steps", "stiff_switches", "solve_seconds", "observed_regime"} as one JSON
      object; status is completed, blow_up, step_size_underflow, max_steps, non_finite
      or time_limit (all exit 0).
      --rtol, --atol   tolerances of the adaptive steppers (default 1e-8, 1e-10; with
                       --precision f32 1.19e-5, 1.19e-7; an rtol below 4 float
                       epsilons is refused)
      --stepper        dopri5 (default), cash_karp, fehlberg78, bulirsch_stoer, rk4,
                       rosenbrock4 (L-stable, for stiff runs)
      --error-norm     max (default) or rms: how the Runge-Kutta pairs combine the scaled
                       error components (rms: as SciPy's solve_ivp and Hairer's codes)
      --dt             rk4: the fixed step; adaptive: the first trial step
                       (default 0: chosen automatically)
      --max-steps      the step budget: status max_steps after N accepted steps
                       (default 1000000)
      --max-seconds    the wall-clock budget: status time_limit, with the state reached,
                       after S seconds (default 0: none)
      --no-stiff-switching
                       keep the explicit stepper throughout (by default dopri5,
                       cash_karp and fehlberg78 hand over to rosenbrock4 while the run
                       is stiff; stiff_steps and stiff_switches report it)
      --out            also write the trajectory as CSV, columns t,x1_1,..,xL_D, one row
                       per accepted step, streamed while integrating (memory stays
                       that of the state however long the run); a write error (a full
                       disk) ends the run with exit 1 naming the file

  ssmdyn influence CONFIG --t-end T [--rtol R] [--atol A] [--stepper NAME] [--dt H]
                          [--error-norm max|rms] [--max-steps N] [--max-seconds S]
                          [--no-stiff-switching] [--out FILE.csv]
                          [--precision f64|f32] [--threads P]
      Token influence: integrates X and its sensitivities to the initial tokens up to T
      (flags as for simulate; the error control covers both) and prints {"status",
      "t_final", "influence", "tokens"}: influence[l][j] = |d x_l(T) / d x_j(0)|_F, the
      Frobenius norm of a D x D block, L rows of L with 0-based l (output token, row) and
      j (input token, column), zero above the diagonal; tokens = X(T) as in simulate. On
      a blow-up both are taken at t_final, the detection time. Cost: L*D sensitivities,
      (1 + L*D)*L*D numbers per state.
      --out            also write the matrix as CSV, header l,j,influence, one row per
                       pair (l, j), all L*L of them in order l = 1..L, j = 1..L: l and j
                       are 1-BASED here (x_1 .. x_L, as in the paper)

  ssmdyn inspect CKPT [--json] [--ids I1,I2,..]
      The per-layer report of a Mamba checkpoint (CKPT: a .safetensors file, a
      model.safetensors.index.json of shards, or a folder with either; mamba_ssm or
      transformers naming; sizes checked against a config.json beside it): for every
      layer (0-based, as in the tensor names) the extreme eigenvalues of sym(mu) and how
      many are positive and negative, the scenario, the rank of S_Delta, the ranges of A
      and of the dt bias; with --ids, also the range of Delta and the mean token-norm
      growth of each block on that prompt. A table, or with --json {"naming", "n_layers",
      "d_model", "d_inner", "d_state", "d_conv", "dt_rank", "vocab_size", "layers": [..]}.

  ssmdyn trace CKPT (--ids I1,I2,.. | --embeddings FILE) [--full] [--out FILE.csv]
                    [--precision f64|f32] [--threads P]
      Runs the whole model and prints {"n_layers", "d_model", "norms": [[|h| of each
      token] for the embeddings and after each block]} (h: the residual stream as
      mamba_ssm keeps it); --full adds "hidden" (every token's d_model values per layer)
      and "logits". FILE for --embeddings: {"embeddings": [[d_model numbers], ..]}.
      --out writes layer,token,norm rows (token 1-based) and, with gnuplot, a PNG beside.

  ssmdyn make-checkpoint DIR [--layers K] [--d-model D] [--vocab V] [--seed S]
                             [--naming mamba_ssm|transformers] [--dtype f32|f64|bf16]
      Writes DIR/model.safetensors and DIR/config.json: a Mamba model initialised as
      mamba_ssm does (K = 3 layers, d_model 32, d_inner 2D, d_state 16, d_conv 4,
      vocabulary 64 by default), to try inspect and trace on.

  simulate, forward, influence and trace compute in double, or in float with
  --precision f32 (inputs rounded to float; output printed from the float results), on P
  threads inside each right-hand side or layer (--threads; 0 or absent: all the hardware's
  threads; the results are the same for every P). influence puts its threads on the
  L*D sensitivities of each right-hand side.

  classify, simulate, forward and influence also take --checkpoint CKPT --layer K
  [--prefix P] (P default backbone.layers.{i}.mixer., {i} the layer): the model is then
  the S6 of that layer (D = d_inner) and CONFIG holds only {"tokens": [..]}.

  CONFIG (JSON), full form, with N rows of D in S_B and S_C, D rows of D in S_Delta,
  D rows of N in A (every entry < 0), delta_bias optional:
      {"model": {"S_B": [[..]], "S_C": [[..]], "S_Delta": [[..]], "A": [[..]],
                 "delta_bias": [..]},
       "tokens": [[x_1 (D values)], .., [x_L]]}
  S_Delta may be given low rank instead, S_Delta = W_dt W_x (as in checkpoints), with
  "S_Delta_factors": {"W_dt": [[..]] (D rows of R), "W_x": [[..]] (R rows of D)};
  or the 1-D shorthand (tokens may be a flat list); unknown fields are errors:
      {"model": {"mu": m, "s_delta": s, "a": a, "delta_bias": b}, "tokens": [x_1, .., x_L]}
  CONFIG must be a regular file (not a FIFO or a device) of strict JSON: a key given
  twice, or anything after the JSON value (a NUL byte included), is an error.

  Numbers on the command line are decimal (16, 0.5, 1e-8; not 0x10, inf or nan); whole
  numbers (N, K, P) are decimal digits within their range.

  Memory: input whose memory need is above the limit (the machine's physical memory, or
  SSMDYN_MEMORY_LIMIT=bytes, with an optional suffix K, M, G or T) is refused before
  anything is allocated.

  Exit status: 0 success (a blow-up or a spent budget included), 2 invalid input,
  1 other failure (a write error on an --out file included).
)";

/// With --precision f32 (Scalar float), refuses a number of the input that float cannot
/// hold, naming it: beyond float's range, or a decay A rounding to 0; nothing in double.
template <typename Scalar>
void check_precision_range(const Config& config, std::initializer_list<std::pair<const char*, double>> numbers = {}) {
    if (std::is_same<Scalar, double>::value) return;
    const double top = double(std::numeric_limits<Scalar>::max());
    const auto refuse = [](const std::string& what, const std::string& why) {
        throw std::invalid_argument(what + ": " + why + " in float (--precision f32)");
    };
    for (const auto& [name, v] : numbers) {
        if (std::abs(v) > top) refuse(name, "is beyond the range");
        if (v != 0 && static_cast<Scalar>(v) == 0) refuse(name, "rounds to 0");
    }
    const S6Params<double>& p = config.params;
    const std::pair<const char*, const MatrixX<double>*> fields[] = {
        {"model.S_B", &p.S_B}, {"model.S_C", &p.S_C}, {"model.S_Delta", &p.S_Delta},
        {"model.S_Delta_factors.W_dt", &p.S_Delta_up}, {"model.S_Delta_factors.W_x", &p.S_Delta_down}, {"model.A", &p.A}};
    for (const auto& [name, m] : fields)
        if (m->size() != 0 && m->cwiseAbs().maxCoeff() > top) refuse(name, "has an entry beyond the range");
    if (p.delta_bias.size() != 0 && p.delta_bias.cwiseAbs().maxCoeff() > top)
        refuse("model.delta_bias", "has an entry beyond the range");
    if ((p.A.template cast<Scalar>().array() >= Scalar(0)).any()) refuse("model.A", "has an entry that rounds to 0");
    if (config.tokens.size() != 0 && config.tokens.cwiseAbs().maxCoeff() > top)
        refuse("tokens", "has a value beyond the range");
}

/// The deep model in Scalar (double, or float with --precision f32).
template <typename Scalar>
nlohmann::ordered_json forward_in(const Config& config, const DeepModelOptions<double>& given) {
    check_precision_range<Scalar>(config, {{"--step", given.step}});
    if (!std::is_same<Scalar, double>::value && given.layer.gate.size() != 0 &&
        given.layer.gate.cwiseAbs().maxCoeff() > double(std::numeric_limits<Scalar>::max()))
        throw std::invalid_argument("--gate: has a value beyond the range in float (--precision f32)");
    DeepModelOptions<Scalar> options;
    options.depth = given.depth;
    options.step = static_cast<Scalar>(given.step);
    options.threads = given.threads;
    options.layer.discretization = given.layer.discretization;
    options.layer.D_skip = given.layer.D_skip.template cast<Scalar>();
    options.layer.gate = given.layer.gate.template cast<Scalar>();
    const StateVector<Scalar> x0 = config.tokens.template cast<Scalar>();
    const DeepModelResult<Scalar> r = deep_forward(config.params.template cast<Scalar>(), x0, options);
    nlohmann::ordered_json out;
    out["tokens"] = json_rows(r.tokens.transpose().template cast<double>());
    out["layers_completed"] = r.layers_completed;
    out["finite"] = r.finite;
    return out;
}

int run_forward(const std::vector<std::string>& argv) {
    const Arguments args =
        parse_arguments(argv, {"--depth", "--step", "--gate", "--threads", "--precision", SSMDYN_CHECKPOINT_FLAGS},
                        "forward", {"--zero-order-hold", "--skip"});
    if (args.positional.size() != 1)
        throw std::invalid_argument("forward: expected exactly one CONFIG file");
    if (!args.has("--depth")) throw std::invalid_argument("--depth: required (the number of layers)");
    DeepModelOptions<double> options;
    options.depth = static_cast<Eigen::Index>(args.whole("--depth", 0, 1000000000, "the number of layers"));
    options.step = args.number("--step").value_or(1.0);
    if (!(options.step > 0)) throw std::invalid_argument("--step: must be > 0, got " + *args.text("--step"));
    const bool f32 = single_precision(args);
    options.threads = inner_thread_count(args);
    const Config config = load_problem(args, args.positional.front());
    options.layer = forward_layer_options(args, config);
    std::cout << (f32 ? forward_in<float>(config, options) : forward_in<double>(config, options)).dump() << '\n';
    return 0;
}

/// The finite numbers of `text` separated by `separator`; throws naming `flag` and `expected`.
std::vector<double> split_numbers(const std::string& flag, const std::string& text, char separator,
                                  const std::string& expected) {
    std::vector<double> values;
    std::size_t start = 0;
    for (;;) {
        const std::size_t stop = text.find(separator, start);
        const std::string piece = text.substr(start, stop == std::string::npos ? std::string::npos : stop - start);
        const std::optional<double> v = parse_decimal(piece);
        if (!v) throw std::invalid_argument(flag + ": expected " + expected + ", got '" + text + "'");
        values.push_back(*v);
        if (stop == std::string::npos) return values;
        start = stop + 1;
    }
}

/// "MIN:MAX:N" as N evenly spaced values (N = 1: just MIN), N a whole number from 1 to 10^6.
std::vector<double> parse_range(const std::string& flag, const std::string& text) {
    const std::string problem = flag + ": expected MIN:MAX:N with decimal MIN <= MAX and a whole N from 1 to 1000000, got '" +
                                text + "'";
    const std::size_t first = text.find(':'), last = text.rfind(':');
    if (first == std::string::npos || first == last || text.find(':', first + 1) != last)
        throw std::invalid_argument(problem);
    const std::optional<double> min = parse_decimal(text.substr(0, first)),
                                max = parse_decimal(text.substr(first + 1, last - first - 1));
    const std::optional<std::uint64_t> count = parse_whole(text.substr(last + 1), 1000000);
    if (!min || !max || !count || *count < 1 || *max < *min) throw std::invalid_argument(problem);
    const std::vector<double> parts = {*min, *max};
    const auto n = static_cast<std::size_t>(*count);
    std::vector<double> values(n);
    for (std::size_t i = 0; i < n; ++i)
        values[i] = n == 1 ? parts[0] : parts[0] + (parts[1] - parts[0]) * double(i) / double(n - 1);
    return values;
}

/// "x1,x2,.." as a flat 1-D state.
StateVector<double> parse_tokens(const std::string& text) {
    const std::vector<double> values =
        split_numbers("--tokens", text, ',', "finite numbers separated by commas");
    return Eigen::Map<const StateVector<double>>(values.data(), static_cast<Eigen::Index>(values.size()));
}

int run_sweep(const std::vector<std::string>& argv) {
    const Arguments args = parse_arguments(
        argv, {"--mu", "--s", "--tokens", "--a", "--bias", "--t-end", "--threads", "--out"}, "sweep");
    if (!args.positional.empty())
        throw std::invalid_argument("sweep: unexpected argument '" + args.positional[0] + "'");
    for (const char* required : {"--mu", "--s", "--tokens", "--t-end"})
        if (!args.has(required)) throw std::invalid_argument(std::string(required) + ": required");
    PhaseGrid grid;
    grid.mu = parse_range("--mu", *args.text("--mu"));
    grid.s = parse_range("--s", *args.text("--s"));
    const StateVector<double> tokens = parse_tokens(*args.text("--tokens"));
    grid.fixed.a = args.number("--a").value_or(1.0);
    grid.fixed.b = args.number("--bias").value_or(0.0);
    if (!(grid.fixed.a > 0)) throw std::invalid_argument("--a: must be > 0");
    const double t_end = args.non_negative("--t-end", 0.0);
    const int threads = thread_count(args);
    // The cells (and, on MPI rank 0, their packed copies): refused before anything runs.
    check_allocation(checked_bytes(grid.mu.size(), grid.s.size(), sizeof(PhaseCell)),
                     "sweep: the " + std::to_string(grid.mu.size()) + " x " + std::to_string(grid.s.size()) +
                         " grid of cells (--mu and --s)");
    std::optional<std::ofstream> csv;
    if (const auto path = args.text("--out")) {
        csv = open_for_writing(*path, "--out");
        write_phase_diagram_header(*csv);
        flush_checked(*csv, *path);
    }

    ProgressBar bar("sweep");
#ifdef SSMDYN_WITH_MPI
    const MpiSession mpi;  // the grid split across ranks when launched by mpirun
    const auto start = std::chrono::steady_clock::now();
    const std::vector<PhaseCell> cells =
        mpi.size() > 1
            ? mpi_phase_diagram(mpi, grid, tokens, t_end, SimulateOptions<double>{}, threads,
                                std::ref(bar))
            : phase_diagram(grid, tokens, t_end, SimulateOptions<double>{}, threads, std::ref(bar));
    if (mpi.rank() != 0) return 0;  // rank 0 has the whole grid and writes the results
#else
    const auto start = std::chrono::steady_clock::now();
    const std::vector<PhaseCell> cells =
        phase_diagram(grid, tokens, t_end, SimulateOptions<double>{}, threads, std::ref(bar));
#endif
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;

    std::size_t agree = 0;
    nlohmann::ordered_json counts;
    for (Regime r : {Regime::Convergence, Regime::SlowDivergence, Regime::FastDivergence, Regime::Stationary,
                     Regime::Undetermined})
        counts[to_string(r)] = 0;
    for (const PhaseCell& c : cells) {
        agree += c.predicted == c.observed;
        counts[to_string(c.observed)] = counts[to_string(c.observed)].get<std::size_t>() + 1;
    }
    if (csv) {
        write_phase_diagram_rows(*csv, cells);
        close_checked(*csv, *args.text("--out"));
    }
    nlohmann::ordered_json out;
    out["cells"] = cells.size();
    out["agreement"] = double(agree) / double(cells.size());
    out["counts"] = std::move(counts);
    out["solve_seconds"] = elapsed.count();
    std::cout << out.dump() << '\n';
    return 0;
}

int run_classify(const std::vector<std::string>& argv) {
    const Arguments args = parse_arguments(argv, {SSMDYN_CHECKPOINT_FLAGS}, "classify");
    if (args.positional.size() != 1)
        throw std::invalid_argument("classify: expected exactly one CONFIG file");
    const Config config = load_problem(args, args.positional.front());
    std::cout << to_json(classify(config.params, config.tokens)).dump() << '\n';
    return 0;
}




/// Refuses a run whose states (the integrator's working copies of `width` numbers, and
/// the state of `tokens` numbers) would not fit in memory.
void check_integration_memory(const char* command, std::size_t width, const std::string& what) {
    // The guarded driver and odeint's steppers keep about 16 vectors of the state's size
    // (fehlberg78's 13 stages, Bulirsch–Stoer's table, the driver's trial state and derivative).
    check_allocation(checked_bytes(16, width, sizeof(double)),
                     std::string(command) + ": integrating " + what + " (about 16 working copies of " +
                         std::to_string(width) + " numbers)");
}

/// simulate's run in Scalar (double, or float with --precision f32): the result as JSON.
template <typename Scalar>
nlohmann::ordered_json simulate_in(const Arguments& args, const Config& config, double t_end, int threads) {
    check_precision_range<Scalar>(config, {{"--t-end", t_end}});
    SimulateOptions<Scalar> options = simulate_options<Scalar>(args);
    const auto width = static_cast<std::size_t>(config.tokens.size());
    // --out: opened, its header written and flushed before integrating; then one row per
    // accepted state, streamed by the observer, with every write checked.
    std::optional<std::ofstream> csv;
    if (const auto path = args.text("--out")) {
        csv = open_for_writing(*path, "--out");
        const Eigen::Index dim = config.params.dim();
        write_trajectory_header(*csv, static_cast<Eigen::Index>(width) / dim, dim);
        flush_checked(*csv, *path);
        std::ofstream& file = *csv;
        const std::string name = *path;  // copied: the observer outlives this block
        options.observe = Record::Steps;
        options.observer = [&file, name](Scalar t, const StateVector<Scalar>& x) {
            write_trajectory_row(file, double(t), x.template cast<double>());
            check_writing(file, name);
        };
    }

    SelectiveSystem<Scalar> system(config.params.template cast<Scalar>());
    system.set_threads(threads);
    const StateVector<Scalar> x0 = config.tokens.template cast<Scalar>();
    const auto start = std::chrono::steady_clock::now();
    const SimulateResult<Scalar> result = simulate(system, x0, static_cast<Scalar>(t_end), options);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;

    if (csv) close_checked(*csv, *args.text("--out"));
    nlohmann::ordered_json out = to_json(result);
    out["solve_seconds"] = elapsed.count();
    out["observed_regime"] = to_string(observed_regime(result));
    return out;
}

int run_simulate(const std::vector<std::string>& argv) {
    const Arguments args = parse_arguments(argv, {SSMDYN_INTEGRATION_FLAGS, SSMDYN_CHECKPOINT_FLAGS, SSMDYN_PRECISION_FLAGS},
                                           "simulate", {SSMDYN_INTEGRATION_SWITCHES});
    const std::string& config_path = args.single_positional("simulate", "CONFIG file");
    const double t_end = required_t_end(args);
    const bool f32 = single_precision(args);
    // The flags are checked before the configuration is read.
    f32 ? (void)simulate_options<float>(args) : (void)simulate_options<double>(args);
    const int threads = inner_thread_count(args);
    const Config config = load_problem(args, config_path);
    const auto width = static_cast<std::size_t>(config.tokens.size());
    check_integration_memory("simulate", width, "the L x D = " + std::to_string(width) + " token state");
    const nlohmann::ordered_json out =
        f32 ? simulate_in<float>(args, config, t_end, threads) : simulate_in<double>(args, config, t_end, threads);
    std::cout << out.dump() << '\n';
    return 0;
}

/// influence's run in Scalar (double, or float with --precision f32): the result as JSON.
template <typename Scalar>
nlohmann::ordered_json influence_in(const Arguments& args, const Config& config, double t_end, int threads) {
    check_precision_range<Scalar>(config, {{"--t-end", t_end}});
    SimulateOptions<Scalar> options = simulate_options<Scalar>(args);
    options.record = Record::None;  // only the final state and sensitivities are needed
    std::optional<std::ofstream> csv;
    if (const auto path = args.text("--out")) {
        csv = open_for_writing(*path, "--out");
        write_influence_header(*csv);
        flush_checked(*csv, *path);
    }
    // The threads go to the L*D independent JVPs of each right-hand side, where the work is.
    const SelectiveSystem<Scalar> system(config.params.template cast<Scalar>());
    const StateVector<Scalar> x0 = config.tokens.template cast<Scalar>();
    const TokenInfluence<Scalar> result = token_influence(system, x0, static_cast<Scalar>(t_end), options, threads);
    if (csv) {
        write_influence_rows(*csv, result.influence.template cast<double>());
        close_checked(*csv, *args.text("--out"));
    }
    return to_json(result);
}

int run_influence(const std::vector<std::string>& argv) {
    const Arguments args = parse_arguments(argv, {SSMDYN_INTEGRATION_FLAGS, SSMDYN_CHECKPOINT_FLAGS, SSMDYN_PRECISION_FLAGS},
                                           "influence", {SSMDYN_INTEGRATION_SWITCHES});
    const std::string& config_path = args.single_positional("influence", "CONFIG file");
    const double t_end = required_t_end(args);
    const bool f32 = single_precision(args);
    f32 ? (void)simulate_options<float>(args) : (void)simulate_options<double>(args);
    const int threads = inner_thread_count(args);
    const Config config = load_problem(args, config_path);
    // The state with its sensitivities: n (1 + n) numbers for n = L * D.
    const auto n = static_cast<std::size_t>(config.tokens.size());
    check_integration_memory("influence", checked_bytes(n, checked_sum(n, std::size_t(1)), 1),
                             "the L*D = " + std::to_string(n) + " tokens with their " + std::to_string(n) + " x " +
                                 std::to_string(n) + " sensitivities");
    const nlohmann::ordered_json out =
        f32 ? influence_in<float>(args, config, t_end, threads) : influence_in<double>(args, config, t_end, threads);
    std::cout << out.dump() << '\n';
    return 0;
}

int run(const std::vector<std::string>& args) {
    for (const std::string& a : args)
        if (a == "--help" || a == "-h") {
            std::cout << usage;
            return 0;
        }
    // No command (no arguments, or a flag first) means the demo.
    if (args.empty() || args.front()[0] == '-') return run_demo(args);
    const std::string command = args.front();
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (command == "demo") return run_demo(rest);
    if (command == "simulate") return run_simulate(rest);
    if (command == "classify") return run_classify(rest);
    if (command == "forward") return run_forward(rest);
    if (command == "sweep") return run_sweep(rest);
    if (command == "influence") return run_influence(rest);
    if (command == "inspect") return run_inspect(rest);
    if (command == "trace") return run_trace(rest);
    if (command == "make-checkpoint") return run_make_checkpoint(rest);
    throw std::invalid_argument("unknown command '" + command +
                                "'; expected demo, simulate, classify, forward, sweep, influence, inspect, trace or "
                                "make-checkpoint (see ssmdyn --help)");
}

/// Prints "ssmdyn: <message>" as one line on stderr and returns `code`.
int report(std::string message, int code) {
    for (char& c : message)
        if (c == '\n' || c == '\r') c = ' ';
    std::cerr << "ssmdyn: " << message << '\n';
    return code;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(std::vector<std::string>(argv + 1, argv + argc));
    } catch (const std::invalid_argument& e) {
        return report(e.what(), 2);
    } catch (const nlohmann::json::exception& e) {
        return report(e.what(), 2);
    } catch (const std::exception& e) {
        return report(e.what(), 1);
    } catch (...) {
        return report("unexpected error", 1);
    }
}
