#pragma once
/// \file system.hpp
/// The continuous-time limit of the deep selective SSM, dX/dt = S6(X), as an odeint System.

#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "params.hpp"
#include "selective_scan.hpp"
#include "state.hpp"
#include "step_size.hpp"

namespace ssmdyn {

/// Right-hand side of dX/dt = S6(X) for the flat D·L state (see state.hpp).
///
/// Models odeint's System concept, `void operator()(const State& x, State& dxdt, Scalar t)
/// const`, so every odeint stepper and integrate function accepts it with the Eigen state
/// (vector_space_algebra, wired up in odeint.hpp). Each call is one selective scan:
/// O(L·D·(D+N)) time and no heap allocation once the sizes are known. Copies are cheap
/// (the parameters sit behind a shared pointer) and the object is safe to use from
/// several threads at once (the scan's scratch is per thread).
///
/// \code
/// auto params = ssmdyn::S6Params<double>::one_dimensional({-1.0, 0.5, 1.0});
/// ssmdyn::SelectiveSystem<double> system(params);
/// ssmdyn::StateVector<double> x(3), dxdt(3);
/// x << 1.0, -0.5, 2.0;
/// system(x, dxdt, 0.0);
/// \endcode
///
/// \tparam ScalarT     floating-point type (double, long double, float)
/// \tparam StepSizeMap the map Δ = φ(S_Δ x + b_Δ); softplus by default
template <typename ScalarT = double, typename StepSizeMap = Softplus>
class SelectiveSystem {
    static_assert(std::is_floating_point<ScalarT>::value,
                  "SelectiveSystem needs a floating-point Scalar such as double.");
    static_assert(std::is_invocable_r<ScalarT, const StepSizeMap&, ScalarT>::value,
                  "The step-size map must be callable as Scalar operator()(Scalar) const.");

public:
    using Scalar = ScalarT;
    using State = StateVector<Scalar>;
    using Params = S6Params<Scalar>;

    /// \param params the layer parameters; validated here (throws std::invalid_argument)
    /// \param phi    the step-size map
    explicit SelectiveSystem(Params params, StepSizeMap phi = {})
        : m_params(std::make_shared<const Params>(validated(std::move(params)))), m_phi(std::move(phi)) {}

    /// dxdt = S6(x). x must hold a whole number of tokens (see validate_state()).
    void operator()(const State& x, State& dxdt, Scalar /*t*/) const {
        const Eigen::Index d = m_params->dim();
        dxdt.resize(x.size());  // no-op when odeint already sized it
        selective_scan(*m_params, m_phi, token_matrix(x, d), token_matrix(dxdt, d), LayerOptions<Scalar>{},
                       m_threads);
    }

    /// Threads inside one right-hand side (OpenMP; 1, the default, is the calling thread
    /// alone). The results are bitwise the same for every count. Worth it for real-size
    /// layers (D in the hundreds or more); leave it at 1 inside sweeps, which already use
    /// every core. Throws std::invalid_argument unless threads ≥ 1.
    SelectiveSystem& set_threads(int threads) {
        if (threads < 1)
            throw std::invalid_argument("SelectiveSystem::set_threads: need at least 1 thread, got " +
                                        std::to_string(threads));
        m_threads = threads;
        return *this;
    }
    /// Threads inside one right-hand side (see set_threads).
    int threads() const { return m_threads; }

    /// Throws std::invalid_argument unless x is a non-empty, finite D·L state.
    void validate_state(const State& x) const { validate_tokens(*m_params, x); }

    const Params& params() const { return *m_params; }
    /// The parameters, shared (for objects that must not copy them, e.g. CausalJacobian).
    const std::shared_ptr<const Params>& shared_params() const { return m_params; }
    const StepSizeMap& step_size_map() const { return m_phi; }
    /// Token dimension D.
    Eigen::Index dim() const { return m_params->dim(); }

private:
    static Params validated(Params p) {
        p.validate();
        return p;
    }

    std::shared_ptr<const Params> m_params;
    StepSizeMap m_phi;
    int m_threads = 1;
};

}  // namespace ssmdyn
