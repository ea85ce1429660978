#pragma once
/// \file rosenbrock.hpp
/// A stiff integrator: the L-stable, stiffly accurate Rosenbrock method of order 4 with an
/// embedded order-3 estimate (six stages; the coefficients of odeint's rosenbrock4, from
/// Hairer and Wanner), with the exact Jacobian and its structured solve (CausalJacobian),
/// as an odeint controlled stepper that integrate_guarded() runs like any other.
///
/// odeint's own rosenbrock4 factorises a dense n×n Jacobian (n = D·L, so (D·L)³/3 work and
/// (D·L)² memory per step: 4096² numbers at D = 16, L = 256); this one solves each stage
/// by the causal forward sweep in O(L·D·(D + N)), forming the D×D diagonal blocks once per
/// accepted state and refactorising them only when the step size changes.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/numeric/odeint/stepper/controlled_step_result.hpp>
#include <boost/numeric/odeint/stepper/rosenbrock4.hpp>
#include <boost/numeric/odeint/stepper/stepper_categories.hpp>
#include <boost/numeric/odeint/util/unwrap_reference.hpp>

#include "driver.hpp"
#include "status.hpp"
#include "../core/state.hpp"

namespace ssmdyn {
namespace detail {
template <typename T, typename = void>
struct has_roundoff_bound : std::false_type {};
template <typename T>
struct has_roundoff_bound<T, std::void_t<decltype(std::declval<const T&>().roundoff_bound())>> : std::true_type {};
}  // namespace detail

/// Rosenbrock 4(3) with the exact Jacobian of a linearisation object, error-controlled:
/// an odeint controlled stepper (controlled_stepper_tag) for the flat state.
///
/// The step-size control is odeint's rosenbrock4_controller's (Gustafsson's predictive
/// controller, factors in [1/5, 6]); the error of component i is measured against
/// atol + rtol·max(|x_i|, |x_out,i|), combined by `norm`.
///
/// \tparam Linearization has `Scalar`, `linearize(const State& x)` (J at x),
///         `factorize(Scalar c)` and `solve(const State& r, State& v)` for (c·I − J) v = r;
///         CausalJacobian is one (causal_jacobian(system) makes it for a SelectiveSystem)
template <typename Linearization>
class RosenbrockStepper {
public:
    using Scalar = typename Linearization::Scalar;
    using state_type = StateVector<Scalar>;
    using deriv_type = state_type;
    using value_type = Scalar;
    using time_type = Scalar;
    using order_type = unsigned short;
    using stepper_category = boost::numeric::odeint::controlled_stepper_tag;

    /// \param linearization the Jacobian provider (taken by value; it holds its scratch)
    /// \param atol, rtol    tolerances, >= 0 and not both zero
    /// \param norm          how the scaled error components are combined
    RosenbrockStepper(Linearization linearization, Scalar atol, Scalar rtol, ErrorNorm norm = ErrorNorm::Max)
        : m_lin(std::move(linearization)), m_atol(atol), m_rtol(rtol), m_norm(norm) {}

    order_type order() const { return 4; }

    /// One trial step from (x, f(x)) at t with dt, in odeint's controlled-stepper form:
    /// on success writes out, advances t and suggests the next dt; on failure shrinks dt.
    /// A non-finite stage is reported as a success with a non-finite `out` (as odeint's
    /// explicit steppers do with a NaN error), so that the guarded driver rolls it back.
    template <typename System>
    boost::numeric::odeint::controlled_step_result try_step(System system, const state_type& x,
                                                            const state_type& dxdt, Scalar& t, state_type& out,
                                                            Scalar& dt) {
        namespace odeint = boost::numeric::odeint;
        auto& f = static_cast<typename odeint::unwrap_reference<System>::type&>(system);
        const odeint::default_rosenbrock_coefficients<Scalar> c;
        const Eigen::Index n = x.size();
        if (m_x_lin.size() != n || m_x_lin != x) {  // a new state: linearise there
            m_lin.linearize(x);
            m_x_lin = x;
            m_shift = std::numeric_limits<Scalar>::quiet_NaN();
            ++m_jacobians;
        }
        if constexpr (detail::has_roundoff_bound<Linearization>::value) check_precision(x, dxdt, dt);
        const Scalar shift = Scalar(1) / (c.gamma * dt);
        if (!(shift == m_shift)) {
            m_lin.factorize(shift);
            m_shift = shift;
        }
        for (auto* v : {&m_g1, &m_g2, &m_g3, &m_g4, &m_g5, &m_err, &m_xtmp, &m_fx, &m_rhs}) v->resize(n);

        // The six stages (autonomous: no ∂f/∂t terms), each one solve with c·I − J.
        m_rhs = dxdt;
        m_lin.solve(m_rhs, m_g1);
        m_xtmp = x + c.a21 * m_g1;
        f(m_xtmp, m_fx, t + c.c2 * dt);
        m_rhs = m_fx + (c.c21 / dt) * m_g1;
        m_lin.solve(m_rhs, m_g2);
        m_xtmp = x + c.a31 * m_g1 + c.a32 * m_g2;
        f(m_xtmp, m_fx, t + c.c3 * dt);
        m_rhs = m_fx + (c.c31 * m_g1 + c.c32 * m_g2) / dt;
        m_lin.solve(m_rhs, m_g3);
        m_xtmp = x + c.a41 * m_g1 + c.a42 * m_g2 + c.a43 * m_g3;
        f(m_xtmp, m_fx, t + c.c4 * dt);
        m_rhs = m_fx + (c.c41 * m_g1 + c.c42 * m_g2 + c.c43 * m_g3) / dt;
        m_lin.solve(m_rhs, m_g4);
        m_xtmp = x + c.a51 * m_g1 + c.a52 * m_g2 + c.a53 * m_g3 + c.a54 * m_g4;
        f(m_xtmp, m_fx, t + dt);
        m_rhs = m_fx + (c.c51 * m_g1 + c.c52 * m_g2 + c.c53 * m_g3 + c.c54 * m_g4) / dt;
        m_lin.solve(m_rhs, m_g5);
        m_xtmp += m_g5;
        f(m_xtmp, m_fx, t + dt);
        m_rhs = m_fx + (c.c61 * m_g1 + c.c62 * m_g2 + c.c63 * m_g3 + c.c64 * m_g4 + c.c65 * m_g5) / dt;
        m_lin.solve(m_rhs, m_err);
        out = m_xtmp + m_err;

        using std::pow;
        const Scalar err = error(x, out);
        if (!std::isfinite(err) || !out.allFinite()) {  // the driver rejects the non-finite state and shrinks dt
            t += dt;
            return odeint::success;
        }
        constexpr Scalar safe = Scalar(0.9), fac1 = Scalar(5), fac2 = Scalar(1) / Scalar(6);
        Scalar fac = std::max(fac2, std::min(fac1, Scalar(pow(err, Scalar(0.25)) / safe)));
        Scalar dt_new = dt / fac;
        if (err > 1) {
            dt = dt_new;
            m_last_rejected = true;
            return odeint::fail;
        }
        if (!m_first_step) {  // Gustafsson's prediction from the last accepted step
            const Scalar predicted = (m_dt_old / dt) * Scalar(pow(err * err / m_err_old, Scalar(0.25))) / safe;
            fac = std::max(fac, std::max(fac2, std::min(fac1, predicted)));
            dt_new = dt / fac;
        }
        m_first_step = false;
        m_dt_old = dt;
        m_err_old = std::max(Scalar(0.01), err);
        if (m_last_rejected) dt_new = std::min(dt_new, dt);
        m_last_rejected = false;
        t += dt;
        dt = dt_new;
        ++m_accepted;
        return odeint::success;
    }

    /// Forget the controller's history (after a rolled-back step).
    void reset() {
        m_first_step = true;
        m_last_rejected = true;
    }

    /// Accepted steps (all of them stiff steps), for SimulateResult::stiff_steps.
    std::size_t stiff_steps() const { return m_accepted; }
    /// No switches: this stepper is stiff throughout.
    std::vector<Scalar> stiff_switches() const { return {}; }
    /// Jacobians formed (one per accepted state from which a step was tried).
    std::size_t jacobians() const { return m_jacobians; }

private:
    /// Throws PrecisionExhausted when f(x) is below its own rounding error (the
    /// linearisation's roundoff_bound) and dt below a millionth of the time scale |x|/|f|.
    void check_precision(const state_type& x, const state_type& dxdt, Scalar dt) const {
        const Scalar f = dxdt.cwiseAbs().maxCoeff(), bound = m_lin.roundoff_bound();
        if (!(bound > f) || !(dt * f < Scalar(1e-6) * x.cwiseAbs().maxCoeff())) return;
        auto text = [](Scalar v) {
            std::ostringstream out;
            out.precision(3);
            out << double(v);
            return out.str();
        };
        throw PrecisionExhausted("the state left what " + std::to_string(8 * sizeof(Scalar)) +
                                 "-bit floating point resolves: |f(x)| = " + text(f) +
                                 " is below its own rounding error " + text(bound) +
                                 " (stiffness x eps x |x|) and the step " + text(dt) +
                                 " is below a millionth of the time scale |x|/|f|");
    }

    Scalar error(const state_type& x, const state_type& out) const {
        using std::sqrt;
        const auto scaled = m_err.array().abs() / (m_atol + m_rtol * x.array().abs().max(out.array().abs()));
        if (m_norm == ErrorNorm::Rms) return sqrt(scaled.square().mean());
        return scaled.maxCoeff();
    }

    Linearization m_lin;
    Scalar m_atol, m_rtol;
    ErrorNorm m_norm;
    state_type m_x_lin, m_g1, m_g2, m_g3, m_g4, m_g5, m_err, m_xtmp, m_fx, m_rhs;
    Scalar m_shift = std::numeric_limits<Scalar>::quiet_NaN();
    bool m_first_step = true, m_last_rejected = false;
    Scalar m_dt_old = Scalar(0), m_err_old = Scalar(0);
    std::size_t m_accepted = 0, m_jacobians = 0;
};

}  // namespace ssmdyn
