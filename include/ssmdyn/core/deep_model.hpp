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
#include "scan_derivatives.hpp"
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
    /// Threads inside each layer's scan (see selective_scan), >= 1; the result is the same
    /// for every count.
    int threads = 1;
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
    if (options.threads < 1)
        throw std::invalid_argument("threads = " + std::to_string(options.threads) + " must be >= 1");

    if (options.keep_layers) result.layers.push_back(X);
    MatrixX<Scalar> y(X.rows(), X.cols()), next(X.rows(), X.cols());
    for (Eigen::Index k = 0; k < options.depth; ++k) {
        selective_scan(params, phi, result.tokens, y, options.layer, options.threads);
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

/// What deep_backward() returns: the gradient of a loss ℓ(X^{(K)}) with respect to the
/// input tokens and to the parameters shared by every layer (summed over the layers).
template <typename Scalar = double>
struct DeepModelGradient {
    /// ∂ℓ/∂X^{(0)}, D×L.
    MatrixX<Scalar> tokens;
    /// ∂ℓ/∂θ for the shared S6 parameters (and the skip weights and gates, with those options).
    S6Gradients<Scalar> params;
    /// The forward pass the gradient belongs to (tokens of the last layer, whether finite).
    DeepModelResult<Scalar> forward;
};

/// Exact backpropagation through the deep residual model: with X^{(k+1)} = X^{(k)} +
/// h·S6(X^{(k)}) and a loss ℓ whose gradient at X^{(K)} is `loss_gradient`, returns
/// ∂ℓ/∂X^{(0)} and ∂ℓ/∂θ by the chain rule through every layer, each layer's transpose
/// applied by selective_scan_vjp:
/// \f[ g^{(k)} = g^{(k+1)} + h\,(\partial S6/\partial X)^\top(X^{(k)})\, g^{(k+1)},\qquad
///     \partial\ell/\partial\theta = \sum_k h\,(\partial S6/\partial\theta)^\top(X^{(k)})\, g^{(k+1)} . \f]
/// Memory: the K + 1 layers' tokens (K·D·L numbers). A gate (options.layer.gate) is the
/// same input z for every layer, so its gradient is summed over the layers too.
/// \param loss_gradient ∂ℓ/∂X^{(K)}, D×L or flat
/// \throws std::invalid_argument as deep_forward, when loss_gradient's size differs from
///   the tokens', or when a layer overflows (there is then no gradient to give)
template <typename Scalar, typename Derived, typename GDerived, typename StepSizeMap = Softplus>
DeepModelGradient<Scalar> deep_backward(const S6Params<Scalar>& params, const Eigen::MatrixBase<Derived>& X0,
                                        const DeepModelOptions<Scalar>& options,
                                        const Eigen::MatrixBase<GDerived>& loss_gradient, const StepSizeMap& phi = {}) {
    DeepModelOptions<Scalar> keep = options;
    keep.keep_layers = true;
    DeepModelGradient<Scalar> out;
    out.forward = deep_forward(params, X0, keep, phi);
    if (!out.forward.finite)
        throw std::invalid_argument("deep_backward: layer " + std::to_string(out.forward.layers_completed + 1) +
                                    " overflowed; there is no gradient to give");
    const MatrixX<Scalar>& XK = out.forward.tokens;
    out.tokens = to_token_matrix(loss_gradient, params.dim(), "loss_gradient");
    if (out.tokens.cols() != XK.cols())
        throw std::invalid_argument("loss_gradient has " + std::to_string(out.tokens.cols()) + " tokens, expected L = " +
                                    std::to_string(XK.cols()));
    out.params = S6Gradients<Scalar>::zeros_like(params, options.layer);
    S6Gradients<Scalar> layer;
    MatrixX<Scalar> gY(XK.rows(), XK.cols()), gX(XK.rows(), XK.cols());
    for (Eigen::Index k = options.depth; k-- > 0;) {
        gY = options.step * out.tokens;  // ∂ℓ/∂(S6 output of layer k) = h·g^{(k+1)}
        selective_scan_vjp(params, phi, out.forward.layers[static_cast<std::size_t>(k)], gY, gX, layer, options.layer);
        out.tokens += gX;
        out.params.add(layer);
    }
    if (!options.keep_layers) out.forward.layers.clear();
    return out;
}

}  // namespace ssmdyn
