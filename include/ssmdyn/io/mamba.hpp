#pragma once
/// \file mamba.hpp
/// S6 parameters from the tensors of a trained Mamba (Mamba-1) mixer layer.
///
/// Inside a Mamba mixer the selective scan sees u = silu(conv1d(in_proj(x))), of width
/// d_inner, and computes
/// \f[ [\delta; B; C] = W_x u, \quad \Delta = \mathrm{softplus}(W_{dt}\,\delta + b_{dt}),
///     \quad A = -\exp(A_{\log}), \f]
/// with W_x = `x_proj.weight` ((dt_rank + 2N) × d_inner), W_dt = `dt_proj.weight`
/// (d_inner × dt_rank), b_dt = `dt_proj.bias`, then adds the skip D ⊙ u. In this
/// library's terms, with D = d_inner channels:
///
///     S_B = rows [dt_rank, dt_rank + N) of x_proj.weight
///     S_C = rows [dt_rank + N, dt_rank + 2N) of x_proj.weight
///     S_Δ = dt_proj.weight · rows [0, dt_rank) of x_proj.weight   (d_inner × d_inner, rank ≤ dt_rank)
///     b_Δ = dt_proj.bias,   A = −exp(A_log)
///
/// in_proj, conv1d, the gate and out_proj are not part of S6 and are not read.
///
/// \code
/// ssmdyn::SafetensorsFile file("mamba-130m/model.safetensors");
/// ssmdyn::MambaLayer layer = ssmdyn::load_mamba_layer(file, 3);
/// ssmdyn::SelectiveSystem<double> sys(layer.params);
/// \endcode

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../core/memory_limit.hpp"
#include "../core/params.hpp"
#include "checkpoint.hpp"
#include "safetensors.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// The S6 part of one Mamba mixer layer.
struct MambaLayer {
    /// The layer's S6 parameters: D = d_inner channels, N = n_state (see the file comment).
    S6Params<double> params;
    /// Mamba's skip weights `D` (length d_inner): the mixer adds D_skip ⊙ u to the scan.
    VectorX<double> D_skip;
    /// Channels of the scan, Mamba's d_inner (= expand · d_model).
    Eigen::Index d_inner = 0;
    /// State size N per channel, Mamba's d_state.
    Eigen::Index n_state = 0;
    /// Rank of the step-size projection, Mamba's dt_rank (S_Δ is kept as its factors:
    /// params.S_Delta_up = dt_proj.weight, params.S_Delta_down = x_proj.weight's first
    /// dt_rank rows).
    Eigen::Index dt_rank = 0;
};

/// Default tensor-name prefix of mixer layer {i}, as in Hugging Face and mamba_ssm checkpoints.
inline const char* const mamba_default_prefix = "backbone.layers.{i}.mixer.";

namespace detail {

/// pattern with every "{i}" replaced by the layer index.
inline std::string mamba_layer_prefix(const std::string& pattern, int layer) {
    const std::string index = std::to_string(layer);
    std::string out;
    for (std::size_t i = 0; i < pattern.size();) {
        if (pattern.compare(i, 3, "{i}") == 0) {
            out += index;
            i += 3;
        } else {
            out += pattern[i++];
        }
    }
    return out;
}

}  // namespace detail

/// Builds the S6 parameters of mixer layer `layer` from a Mamba checkpoint.
///
/// Reads `x_proj.weight`, `dt_proj.weight`, `dt_proj.bias`, `A_log` and `D` under the
/// prefix; N is A_log's column count and dt_rank dt_proj.weight's column count. Every
/// shape is checked and the parameters are validated (finite entries, A < 0).
/// \param file an open checkpoint: a SafetensorsFile or a Checkpoint (shards)
/// \param layer the layer index, >= 0
/// \param prefix_pattern tensor-name prefix, with "{i}" standing for the layer index
/// \throws std::invalid_argument naming the full tensor key and the problem: a missing
///   tensor, a wrong shape (with the expected one), a layer whose parameters as doubles
///   (the dense d_inner x d_inner S_Delta above all) need more than memory_limit() (with
///   d_inner, N, dt_rank and the bytes; checked before anything is allocated), or a
///   non-finite or non-negative assembled entry (with the tensor it came from).
template <typename Tensors, std::enable_if_t<!std::is_convertible<Tensors, std::string>::value, int> = 0>
MambaLayer load_mamba_layer(const Tensors& file, int layer, const std::string& prefix_pattern = mamba_default_prefix) {
    if (layer < 0) throw std::invalid_argument("load_mamba_layer: layer = " + std::to_string(layer) + " must be >= 0");
    // A prefix pattern without its trailing dot ("backbone.layers.{i}.mixer") is meant with one.
    std::string pattern = prefix_pattern;
    if (!pattern.empty() && pattern.back() != '.') pattern += '.';
    const std::string prefix = detail::mamba_layer_prefix(pattern, layer);
    const std::string where = "checkpoint '" + file.path() + "', Mamba layer " + std::to_string(layer) + ": ";
    auto fail = [&](const std::string& what) { throw std::invalid_argument(where + what); };
    if (!file.contains(prefix + "x_proj.weight") && pattern.find("{i}") != std::string::npos) {
        // Past the last layer? Count the layers the pattern finds (0, 1, … while present).
        int count = 0;
        while (file.contains(detail::mamba_layer_prefix(pattern, count) + "x_proj.weight")) ++count;
        if (count > 0 && layer >= count)
            fail("the checkpoint has " + std::to_string(count) + (count == 1 ? " layer" : " layers") + " under " +
                 pattern + " (0 to " + std::to_string(count - 1) + ")");
    }

    const std::string x_key = prefix + "x_proj.weight";
    const std::string dt_weight_key = prefix + "dt_proj.weight";
    const std::string dt_bias_key = prefix + "dt_proj.bias";
    const std::string a_log_key = prefix + "A_log";
    const std::string d_key = prefix + "D";
    for (const std::string* key : {&x_key, &dt_weight_key, &dt_bias_key, &a_log_key, &d_key})
        if (!file.contains(*key))
            fail("missing tensor " + *key +
                 " (a Mamba-1 mixer has x_proj.weight, dt_proj.weight, dt_proj.bias, A_log and D)");

    using Shape = std::vector<std::int64_t>;
    auto shape_of = [&](const std::string& key, std::size_t rank, const char* meaning) -> const Shape& {
        const Shape& s = file.info(key).shape;
        if (s.size() != rank)
            fail(key + " has shape " + detail::shape_string(s) + ", expected a " + std::to_string(rank) +
                 "-D tensor " + meaning);
        return s;
    };
    const Shape& x_shape = shape_of(x_key, 2, "(dt_rank + 2N) x d_inner");
    const Shape& w_shape = shape_of(dt_weight_key, 2, "d_inner x dt_rank");
    const Shape& b_shape = shape_of(dt_bias_key, 1, "of length d_inner");
    const Shape& a_shape = shape_of(a_log_key, 2, "d_inner x N");
    const Shape& d_shape = shape_of(d_key, 1, "of length d_inner");

    const std::int64_t d_inner = detail::majority<std::int64_t>({a_shape[0], x_shape[1], w_shape[0], b_shape[0], d_shape[0]});
    const std::int64_t n = a_shape[1];
    const std::int64_t rank = w_shape[1];
    auto expect = [&](const std::string& key, const Shape& s, const Shape& want, const char* meaning) {
        if (s != want)
            fail(key + " has shape " + detail::shape_string(s) + ", expected " + meaning + " = " +
                 detail::shape_string(want));
    };
    if (d_inner < 1 || n < 1)
        fail(a_log_key + " has shape " + detail::shape_string(a_shape) +
             "; need d_inner >= 1 rows and N >= 1 columns");
    expect(a_log_key, a_shape, {d_inner, n}, "d_inner x N");
    if (rank < 1)
        fail(dt_weight_key + " has shape " + detail::shape_string(w_shape) + "; need dt_rank >= 1 columns");
    expect(dt_weight_key, w_shape, {d_inner, rank}, "d_inner x dt_rank");
    // Both factors are now bounded by the file size, so the sum cannot overflow.
    expect(x_key, x_shape, {rank + 2 * n, d_inner}, "(dt_rank + 2N) x d_inner");
    expect(dt_bias_key, b_shape, {d_inner}, "d_inner");
    expect(d_key, d_shape, {d_inner}, "d_inner");

    // Everything below is sized by the header: refuse before allocating any of it (a
    // checkpoint of a few hundred KB can declare sizes the machine cannot hold). S_Delta
    // stays factored, so the parameters are linear in d_inner.
    {
        const auto d = static_cast<std::size_t>(d_inner), N = static_cast<std::size_t>(n),
                   R = static_cast<std::size_t>(rank);
        const std::size_t total = checked_sum(
            checked_bytes(2, checked_sum(R, checked_bytes(2, N, 1)), d, sizeof(double)),  // x_proj, its rows
            checked_bytes(d, R, sizeof(double)),                            // dt_proj.weight
            checked_bytes(2, d, N, sizeof(double)),                         // A_log, A
            checked_bytes(2, d, sizeof(double)));                           // delta_bias, D
        check_allocation(total, where + "its S6 parameters with d_inner = " + std::to_string(d_inner) +
                                    ", N = " + std::to_string(n) + ", dt_rank = " + std::to_string(rank));
    }

    MambaLayer out;
    out.d_inner = static_cast<Eigen::Index>(d_inner);
    out.n_state = static_cast<Eigen::Index>(n);
    out.dt_rank = static_cast<Eigen::Index>(rank);
    const Eigen::Index r = out.dt_rank, N = out.n_state;

    {
        const MatrixX<double> x_proj = file.matrix(x_key);
        const MatrixX<double> dt_weight = file.matrix(dt_weight_key);
        out.params.S_B = x_proj.middleRows(r, N);
        out.params.S_C = x_proj.middleRows(r + N, N);
        out.params.S_Delta_up = dt_weight;
        out.params.S_Delta_down = x_proj.topRows(r);
    }
    out.params.delta_bias = file.vector(dt_bias_key);
    // Scalar std::exp, not Eigen's vectorised exp: that one clamps its argument, so
    // exp(-inf) would come out near 1e-308 and a corrupt A_log would pass as a decay.
    out.params.A = file.matrix(a_log_key).unaryExpr([](double v) { return -std::exp(v); });
    out.D_skip = file.vector(d_key);

    for (Eigen::Index i = 0; i < out.D_skip.size(); ++i)
        if (!std::isfinite(out.D_skip(i))) fail(d_key + "(" + std::to_string(i) + ") is not finite");
    try {
        out.params.validate();
    } catch (const InvalidParameter& e) {
        // validate() names the S6 field; add the tensor it was assembled from.
        auto rows_of_x = [&](Eigen::Index lo, Eigen::Index hi) {
            return "rows [" + std::to_string(lo) + ", " + std::to_string(hi) + ") of " + x_key;
        };
        const std::string& field = e.field();
        const std::string origin = field == "S_Delta_up"     ? "S_Delta_up = " + dt_weight_key
                                   : field == "S_Delta_down" ? "S_Delta_down = " + rows_of_x(0, r)
                                   : field == "S_B"        ? "S_B = " + rows_of_x(r, r + N)
                                   : field == "S_C"        ? "S_C = " + rows_of_x(r + N, r + 2 * N)
                                   : field == "delta_bias" ? "delta_bias = " + dt_bias_key
                                   : field == "A"          ? "A = -exp(" + a_log_key + ")"
                                                           : std::string();
        fail(e.what() + (origin.empty() ? std::string() : " (" + origin + ")"));
    }
    return out;
}

/// Opens the checkpoint at `path` (a file, a shard index or a folder: see Checkpoint) and
/// builds layer `layer` (see the overload above). Reads the header and that layer's
/// tensors only; to load several layers, open one Checkpoint and reuse it (the header is
/// parsed once).
inline MambaLayer load_mamba_layer(const std::string& path, int layer,
                                   const std::string& prefix_pattern = mamba_default_prefix) {
    return load_mamba_layer(Checkpoint(path), layer, prefix_pattern);
}

}  // namespace ssmdyn
