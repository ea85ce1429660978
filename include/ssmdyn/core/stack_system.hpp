#pragma once
/// \file stack_system.hpp
/// The S6 parts of a real stack as one ODE: dU/dt = S6_k(U) for t ∈ [k, k+1), layer k's
/// parameters on the k-th unit of time (piecewise constant, so non-autonomous). The paper
/// ties one layer's weights across depth; a trained model has a different layer at every
/// depth, and this is its continuous-time counterpart: one unit of time per layer, the
/// same token width (d_inner) throughout.
///
/// \code
/// ssmdyn::StackSystem<double> stack(model);          // a MambaModel's layers
/// auto r = ssmdyn::simulate(stack, u0, double(stack.layers()));
/// \endcode
///
/// Adaptive steppers cross the jumps at integer t by rejecting steps; integrating layer by
/// layer (layer(k) on [k, k+1]) is cheaper and as exact.

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "mamba_block.hpp"
#include "params.hpp"
#include "state.hpp"
#include "step_size.hpp"
#include "system.hpp"

namespace ssmdyn {

template <typename ScalarT = double, typename StepSizeMap = Softplus>
class StackSystem {
public:
    using Scalar = ScalarT;
    using State = StateVector<Scalar>;
    using Layer = SelectiveSystem<Scalar, StepSizeMap>;

    /// \param layers the layers' S6 parameters, at least one, all with the same D
    ///   (validated; throws std::invalid_argument naming the layer)
    explicit StackSystem(const std::vector<S6Params<Scalar>>& layers, StepSizeMap phi = {}) {
        if (layers.empty()) throw std::invalid_argument("StackSystem: no layers");
        for (std::size_t k = 0; k < layers.size(); ++k) {
            if (layers[k].dim() != layers.front().dim())
                throw std::invalid_argument("StackSystem: layer " + std::to_string(k) + " has D = " +
                                            std::to_string(layers[k].dim()) + ", layer 0 has " +
                                            std::to_string(layers.front().dim()));
            try {
                m_layers.emplace_back(layers[k], phi);
            } catch (const std::invalid_argument& e) {
                throw std::invalid_argument("StackSystem: layer " + std::to_string(k) + ": " + e.what());
            }
        }
    }

    /// The S6 parts of a model's layers.
    explicit StackSystem(const MambaModel<Scalar>& model, StepSizeMap phi = {})
        : StackSystem(s6_of(model), std::move(phi)) {}

    /// dU/dt at time t: layer k = ⌊t⌋'s S6, clamped to the first and last layer.
    void operator()(const State& x, State& dxdt, Scalar t) const { m_layers[layer_at(t)](x, dxdt, t); }

    /// The layer that acts at time t.
    std::size_t layer_at(Scalar t) const {
        using std::floor;
        if (!(t >= Scalar(0))) return 0;  // NaN and t < 0: the first layer
        const Scalar k = floor(t);
        return k >= Scalar(m_layers.size() - 1) ? m_layers.size() - 1 : static_cast<std::size_t>(k);
    }

    /// Layer k alone, an autonomous SelectiveSystem (for integrating [k, k+1] on its own).
    const Layer& layer(std::size_t k) const { return m_layers.at(k); }
    std::size_t layers() const { return m_layers.size(); }
    Eigen::Index dim() const { return m_layers.front().dim(); }

private:
    static std::vector<S6Params<Scalar>> s6_of(const MambaModel<Scalar>& model) {
        std::vector<S6Params<Scalar>> out;
        for (const auto& b : model.layers) out.push_back(b.mixer.s6);
        return out;
    }

    std::vector<Layer> m_layers;
};

}  // namespace ssmdyn
