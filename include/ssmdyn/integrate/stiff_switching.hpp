#pragma once
/// \file stiff_switching.hpp
/// Automatic stiffness detection: an explicit controlled stepper that hands over to a stiff
/// one (RosenbrockStepper) when its steps are limited by stability rather than accuracy,
/// and takes back over when they no longer are. The pair is itself an odeint controlled
/// stepper, so integrate_guarded() runs it like any other.
///
/// Why: near some blow-ups the state follows a stiff path (a token's own interaction
/// Δ·xᵀμx gives the Jacobian an eigenvalue of −1e13 while another is positive, so the
/// state still grows); dopri5 then takes a million steps of 1e-13 at its stability limit
/// and never gets there, while the Rosenbrock method reaches the singularity in seconds.
///
/// The test (Hairer's DOPRI5 uses the same one to stop): after an accepted explicit step of
/// size h, with ρ an estimate of the Jacobian's spectral radius at the new state, h·ρ above
/// the method's stability boundary (3.25 for dopri5) 15 times before 6 steps in a row fall
/// below it means the step size is set by stability: switch to the stiff method. There,
/// 15 accepted steps in a row with h·ρ below half the boundary (an explicit step that size
/// would be stable) switch back. ρ comes from a power iteration with the exact
/// Jacobian-vector product, one product per tested step, its vector carried from step to
/// step (the dominant direction changes slowly along a trajectory). Hairer estimates ρ
/// from two stages at the same time; odeint does not expose them, and a secant over the
/// whole step underestimates ρ (it is dominated by the smooth drift). Explicit steps are
/// tested only while the step size controller struggles (2 of the last 8 trials
/// rejected, as on a stability limit) and until a suspicion is cleared, so a smooth run
/// pays nothing.

#include <bitset>
#include <cmath>
#include <cstddef>
#include <functional>
#include <vector>

#include <boost/numeric/odeint/stepper/controlled_step_result.hpp>
#include <boost/numeric/odeint/stepper/stepper_categories.hpp>
#include <boost/numeric/odeint/util/unwrap_reference.hpp>

#include "driver.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// How many steps the switches wait for (see the file comment).
struct StiffnessTest {
    /// h·ρ beyond which an explicit step counts as stability-limited (3.25: dopri5).
    double boundary = 3.25;
    /// Stability-limited explicit steps that switch to the stiff method.
    std::size_t to_stiff = 15;
    /// Explicit steps in a row below the boundary that forget the count above.
    std::size_t forget = 6;
    /// Stiff steps in a row with h·ρ < boundary / 2 that switch back.
    std::size_t to_explicit = 15;
};

/// An explicit controlled stepper and a stiff one, switched by the stiffness test: an odeint
/// controlled stepper in the form with derivatives (FSAL), try_step(sys, x, f(x), t, out,
/// f(out), dt).
///
/// \tparam Explicit a controlled odeint stepper for StateVector<Scalar> (e.g. odeint's
///         controlled dopri5)
/// \tparam Stiff    RosenbrockStepper (or any controlled stepper taking f(x))
/// \tparam Jvp      `void(const state_type& x, const state_type& v, state_type& Jv)`: the
///         exact Jacobian-vector product at x (selective_scan_jvp for a SelectiveSystem)
template <typename Explicit, typename Stiff, typename Jvp>
class StiffSwitchingStepper {
public:
    using Scalar = typename Stiff::Scalar;
    using state_type = StateVector<Scalar>;
    using deriv_type = state_type;
    using value_type = Scalar;
    using time_type = Scalar;
    using stepper_category = boost::numeric::odeint::controlled_stepper_tag;

    StiffSwitchingStepper(Explicit explicit_stepper, Stiff stiff_stepper, Jvp jvp, StiffnessTest test = {})
        : m_explicit(std::move(explicit_stepper)), m_stiff(std::move(stiff_stepper)), m_jvp(std::move(jvp)),
          m_test(test) {}

    /// One trial step with the stepper in charge; after an accepted step, the test.
    template <typename System>
    boost::numeric::odeint::controlled_step_result try_step(System system, const state_type& x,
                                                            const state_type& dxdt, Scalar& t, state_type& out,
                                                            state_type& dxdt_out, Scalar& dt) {
        namespace odeint = boost::numeric::odeint;
        auto& f = static_cast<typename odeint::unwrap_reference<System>::type&>(system);
        using Rhs = decltype(std::ref(f));
        const Scalar t_before = t;
        odeint::controlled_step_result result;
        if (m_stiff_mode) {
            result = m_stiff.try_step(std::ref(f), x, dxdt, t, out, dt);
            if (result == odeint::success && out.allFinite()) f(out, dxdt_out, t);
        } else if constexpr (detail::has_fsal_try_step<Explicit, Rhs, state_type, Scalar>::value) {
            result = m_explicit.try_step(std::ref(f), x, dxdt, t, out, dxdt_out, dt);
        } else {
            result = m_explicit.try_step(std::ref(f), x, dxdt, t, out, dt);
            if (result == odeint::success && out.allFinite()) f(out, dxdt_out, t);
        }
        const bool accepted = result == odeint::success && out.allFinite() && dxdt_out.allFinite();
        m_trials = (m_trials << 1) | (accepted ? 0u : 1u);  // the last trials, 1 = rejected
        if (accepted) {
            if (m_stiff_mode) ++m_stiff_steps;
            observe(x, out, t - t_before, t);
        }
        return result;
    }

    /// Forget what a rolled-back step left behind.
    void reset() {
        detail::reset_stepper(m_explicit);
        detail::reset_stepper(m_stiff);
    }

    /// Accepted steps taken by the stiff method.
    std::size_t stiff_steps() const { return m_stiff_steps; }
    /// Times of the switches, the first to the stiff method, then alternating.
    const std::vector<Scalar>& stiff_switches() const { return m_switches; }
    /// Whether the stiff method is in charge.
    bool stiff() const { return m_stiff_mode; }

private:
    /// One power-iteration step at `out`: an estimate of the spectral radius there.
    Scalar spectral_radius(const state_type& x, const state_type& out) {
        if (m_v.size() != out.size() || !(m_v.norm() > 0)) m_v = out - x;
        Scalar norm = m_v.norm();
        if (!(norm > 0) || !std::isfinite(norm)) return Scalar(0);
        m_v /= norm;
        m_jvp(out, m_v, m_w);
        const Scalar rho = m_w.norm();
        if (!std::isfinite(rho)) {
            m_v.resize(0);
            return Scalar(0);
        }
        m_v.swap(m_w);
        return rho;
    }

    void observe(const state_type& x, const state_type& out, Scalar h, Scalar t) {
        // Test while the controller struggles, and until a suspicion is cleared.
        const bool struggling = std::bitset<8>(m_trials & 0xffu).count() >= 2;
        if (!m_stiff_mode && !struggling && m_limited == 0) return;
        const double hrho = static_cast<double>(h * spectral_radius(x, out));
        if (!m_stiff_mode) {
            if (hrho > m_test.boundary) {
                m_calm = 0;
                if (++m_limited >= m_test.to_stiff) switch_to(true, t);
            } else if (++m_calm >= m_test.forget) {
                m_limited = 0;
            }
        } else if (hrho < m_test.boundary / 2) {
            if (++m_calm >= m_test.to_explicit) switch_to(false, t);
        } else {
            m_calm = 0;
        }
    }

    void switch_to(bool stiff, Scalar t) {
        m_stiff_mode = stiff;
        m_limited = m_calm = 0;
        m_switches.push_back(t);
    }

    Explicit m_explicit;
    Stiff m_stiff;
    Jvp m_jvp;
    StiffnessTest m_test;
    state_type m_v, m_w;       // the power iteration's vector and its image
    unsigned m_trials = 0;     // the last trials as bits, newest lowest: 1 = rejected
    bool m_stiff_mode = false;
    std::size_t m_limited = 0, m_calm = 0, m_stiff_steps = 0;
    std::vector<Scalar> m_switches;
};

}  // namespace ssmdyn
