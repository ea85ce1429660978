#pragma once
/// \file deep_model.hpp
/// The discrete deep model: K weight-tied S6 layers with residual connections,
/// X^{(k+1)} = X^{(k)} + h·S6(X^{(k)}). It is forward Euler on dX/dt = S6(X), so at a fixed
/// depth-time T = K·h it converges to the ODE solution at first order in h.

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "params.hpp"
#include "selective_scan.hpp"
#include "state.hpp"
#include "step_size.hpp"

namespace ssmdyn {

/// Options of deep_forward().
template <typename Scalar = double>
struct DeepModelOptions {
    /// Number of layers K, >= 0.
    Eigen::Index depth = 1;
    /// Residual step h, finite and > 0 (h = 1 is the network itself).
    Scalar step = Scalar(1);
    /// Discretisation, skip and gate of every layer (see LayerOptions).
    LayerOptions<Scalar> layer;
    /// Keep X^{(0)} … X^{(K)} in DeepModelResult::layers.
    bool keep_layers = false;
};

/// Result of deep_forward().
template <typename Scalar = double>
struct DeepModelResult {
    /// X^{(K)}, or the last finite X^{(k)} when a layer overflowed.
    MatrixX<Scalar> tokens;
    /// X^{(0)} … X^{(layers_completed)} when keep_layers is set.
    std::vector<MatrixX<Scalar>> layers;
    /// Layers applied; equals depth unless the tokens stopped being finite.
    Eigen::Index layers_completed = 0;
    /// False when layer layers_completed + 1 produced NaN or Inf (tokens are kept finite).
    bool finite = true;
};

/// Run the deep residual model on the tokens X0: the D×L matrix (column l is token l) or
/// the flat state (see to_token_matrix); DeepModelResult::tokens is always D×L.
/// \throws std::invalid_argument for invalid parameters, tokens or options
template <typename Scalar, typename Derived, typename StepSizeMap = Softplus>
DeepModelResult<Scalar> deep_forward(const S6Params<Scalar>& params,
                                     const Eigen::MatrixBase<Derived>& X0,
                                     const DeepModelOptions<Scalar>& options,
                                     const StepSizeMap& phi = {}) {
    params.validate();
    DeepModelResult<Scalar> result;
    result.tokens = to_token_matrix(X0, params.dim());
    const MatrixX<Scalar>& X = result.tokens;
    validate_tokens(params, Eigen::Map<const VectorX<Scalar>>(X.data(), X.size()));
    if (options.depth < 0) throw std::invalid_argument("depth must be >= 0");
    if (!(options.step > 0) || !std::isfinite(options.step))
        throw std::invalid_argument("step must be finite and > 0");

    if (options.keep_layers) result.layers.push_back(X);
    MatrixX<Scalar> y(X.rows(), X.cols()), next(X.rows(), X.cols());
    for (Eigen::Index k = 0; k < options.depth; ++k) {
        selective_scan(params, phi, result.tokens, y, options.layer);
        next = result.tokens + options.step * y;
        if (!next.allFinite()) {
            result.finite = false;
            break;
        }
        result.tokens.swap(next);
        ++result.layers_completed;
        if (options.keep_layers) result.layers.push_back(result.tokens);
    }
    return result;
}

}  // namespace ssmdyn
