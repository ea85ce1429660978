#pragma once
/// \file sensitivity.hpp
/// Forward sensitivities of dX/dt = S6(X): the variational equation dS/dt = J(X(t))·S,
/// with J = ∂S6/∂X, integrated alongside X for m chosen directions (the columns of S(0)),
/// through simulate() and its guards.
///
/// S(t) = ∂x(t)/∂x(0)·S(0) (x the flat state, length D·L): with S(0) the D columns of the
/// identity that belong to token j, column k of S(T) is how the whole final state moves
/// when channel k of x_j(0) does.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "simulate.hpp"
#include "status.hpp"
#include "../core/parallel_for.hpp"
#include "../core/params.hpp"
#include "../core/scan_derivatives.hpp"
#include "../core/selective_scan.hpp"
#include "../core/state.hpp"
#include "../core/step_size.hpp"
#include "../core/system.hpp"

namespace ssmdyn {

/// The variational system of dX/dt = S6(X) for m directions, as an odeint System on the
/// flat augmented state z = [x; vec(S)] of length D·L·(1+m): x is the flat state (token l
/// at entries l·D … l·D+D−1), then the m columns of the (D·L)×m sensitivity matrix S, one
/// after the other, each a flat state of its own. The right-hand side is
/// \f[ \dot x = S6(x),\qquad \dot S_{:,k} = \frac{\partial S6}{\partial X}(x)\, S_{:,k},
///     \quad k = 0 \ldots m-1, \f]
/// one selective scan and m Jacobian-vector products (selective_scan_jvp, exact), so
/// O(L·D·(D+N)·(1+2m)) per call and no heap allocation once the sizes are known (the
/// scan's and the JVP's scratch is per thread). L is read off the state's size, so one
/// object serves every sequence length. Copies are cheap (the parameters are shared).
///
/// Most users want simulate_sensitivities(), which builds the augmented state, keeps the
/// blow-up test on x alone and splits the result; the class is public for use with odeint
/// directly.
///
/// \code
/// const ssmdyn::SelectiveSystem<double> system(params);
/// const ssmdyn::SensitivitySystem<double> variational(system, 2);   // m = 2 directions
/// ssmdyn::StateVector<double> z(x.size() * 3), dz;
/// z << x, s0, s1;                                                     // [x; S(:,0); S(:,1)]
/// variational(z, dz, 0.0);
/// \endcode
///
/// \tparam ScalarT     floating-point type
/// \tparam StepSizeMap the map Δ = φ(S_Δ x + b_Δ); it must have `Scalar derivative(Scalar) const`
template <typename ScalarT = double, typename StepSizeMap = Softplus>
class SensitivitySystem {
    static_assert(detail::has_scalar_derivative<StepSizeMap, ScalarT>::value,
                  "SensitivitySystem needs a differentiable step-size map: give it Scalar derivative(Scalar z) const.");

public:
    using Scalar = ScalarT;
    using State = StateVector<Scalar>;
    using Base = SelectiveSystem<Scalar, StepSizeMap>;

    /// \param system     the dynamics dX/dt = S6(X) (parameters and step-size map, shared)
    /// \param directions m >= 0, the number of columns of S
    /// \param threads    threads over the m JVPs of one call: 1 (default) serial, 0 all cores
    ///                   (OpenMP; serial without it); the result is the same for every value
    /// \throws std::invalid_argument naming `directions` or `threads` when negative
    SensitivitySystem(Base system, Eigen::Index directions, int threads = 1)
        : m_system(std::move(system)), m_directions(directions), m_threads(threads) {
        if (directions < 0)
            throw std::invalid_argument("directions = " + std::to_string(directions) + " must be >= 0");
        if (threads < 0) throw std::invalid_argument("threads = " + std::to_string(threads) + " must be >= 0");
    }

    /// dz/dt = [S6(x); J(x) S]. z must be an augmented state (see validate_state()).
    void operator()(const State& z, State& dzdt, Scalar /*t*/) const {
        using ConstMap = Eigen::Map<const MatrixX<Scalar>>;
        using Map = Eigen::Map<MatrixX<Scalar>>;
        const Eigen::Index D = dim(), n = z.size() / (m_directions + 1), L = n / D;
        dzdt.resize(z.size());  // no-op when odeint already sized it
        const Params& p = m_system.params();
        const StepSizeMap& phi = m_system.step_size_map();
        const ConstMap X(z.data(), D, L);
        selective_scan(p, phi, X, Map(dzdt.data(), D, L));
        auto direction = [&](std::size_t k) {
            const Eigen::Index offset = n * (static_cast<Eigen::Index>(k) + 1);
            selective_scan_jvp(p, phi, X, ConstMap(z.data() + offset, D, L), Map(dzdt.data() + offset, D, L));
        };
        const auto m = static_cast<std::size_t>(m_directions);
        if (m_threads == 1 || m < 2) {
            for (std::size_t k = 0; k < m; ++k) direction(k);
        } else {
            parallel_for(m, direction, m_threads);
        }
    }

    /// Throws std::invalid_argument unless z is a non-empty augmented state of D·L·(1+m)
    /// finite entries: the message names x0 (the state part) or S0 (the sensitivities).
    void validate_state(const State& z) const {
        const Eigen::Index D = dim(), m1 = m_directions + 1;
        if (z.size() == 0 || z.size() % m1 != 0 || (z.size() / m1) % D != 0)
            throw std::invalid_argument("the augmented state has " + std::to_string(z.size()) +
                                        " entries; expected D*L*(1+m) with D = " + std::to_string(D) +
                                        ", m = " + std::to_string(m_directions));
        const Eigen::Index n = z.size() / m1;
        try {
            validate_tokens(m_system.params(), z.head(n));
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("x0: ") + e.what());
        }
        for (Eigen::Index i = n; i < z.size(); ++i)
            if (!std::isfinite(static_cast<double>(z(i))))
                throw std::invalid_argument("S0(" + std::to_string((i - n) % n) + "," + std::to_string((i - n) / n) +
                                            ") is not finite");
    }

    /// Token dimension D.
    Eigen::Index dim() const { return m_system.dim(); }
    /// The number of directions m (columns of S).
    Eigen::Index directions() const { return m_directions; }
    /// The dynamics whose sensitivities these are.
    const Base& system() const { return m_system; }

private:
    using Params = S6Params<Scalar>;
    Base m_system;
    Eigen::Index m_directions;
    int m_threads;
};

/// What simulate_sensitivities() returns: the run of x, and S at its end.
template <typename Scalar = double>
struct SensitivityResult {
    /// How the run ended (= simulation.status).
    Status status = Status::Completed;
    /// The run of x alone, as simulate() reports it: status, t_final, t_blowup, x_initial,
    /// x_final, the recorded states of x (not of the augmented state), the work of the
    /// augmented integration, and a message that also says at which time S was taken.
    SimulateResult<Scalar> simulation;
    /// The (D·L)×m sensitivity matrix S(t_final) = ∂x(t_final)/∂x(0)·S(0): at t_end when
    /// the run completed, else at the time it stopped (the blow-up detection time for a
    /// blow-up). Entries overflow to ±Inf only if the true sensitivities exceed the
    /// Scalar range.
    MatrixX<Scalar> S;
    /// How many times S was rescaled in the augmented state because it crossed
    /// options.blowup_norm while x did not (see simulate_sensitivities()).
    std::size_t rescalings = 0;
};

/// Integrate x and its forward sensitivities S(t) = ∂x(t)/∂x(0)·S(0) together, from
/// options.t_start to t_end, with the stepper and guards of simulate().
///
/// The augmented state [x; vec(S)] (SensitivitySystem) goes through simulate(): same
/// steppers, tolerances, statuses, budget and recording. The error control covers x and S
/// together (every component is scaled by atol + rtol·|component|), so the step sizes are
/// those the sensitivities need as well, and S is as accurate as the tolerances say.
///
/// **Blow-up bound.** The driver compares the largest entry of the whole augmented state
/// with options.blowup_norm, but sensitivities may grow far beyond the bound while x
/// stays moderate (and near a blow-up they grow faster than x: ∝ |x|³ for x' = x³). Here
/// the bound is kept on x alone, exactly as simulate() applies it: the variational
/// equation is linear, so when S crosses the bound while x has not, S is divided by its
/// largest entry c and the integration restarts from that time with the rescaled S (a
/// new segment of the same run: steps, evaluations and the budget carry over; the first
/// trial step is the last accepted one), the factor c being multiplied back into the
/// result. Blow-up therefore means what it means for simulate(): max|x| > blowup_norm, or
/// the step collapsing while the state grows (for a restart that collapses before its
/// first step: while x grew over the last step before it). One consequence: options.atol
/// applies to S divided by its current scale (1 until the first rescaling, then the
/// product of the factors c), i.e. after a rescaling the absolute tolerance on S is
/// relative to the size S had reached — what a relative tolerance on a growing quantity
/// should be anyway. The same blow-up found by simulate() alone is found here to the
/// accuracy of the two runs (1e-9 relative at rtol 1e-12 in the tests).
///
/// Recording: of x alone, as options.record asks, one trajectory across the restarts
/// (with Record::Times the tail of an early end holds the accepted states of the last
/// segment only). Each segment records the augmented state until it ends
/// (Record::None avoids the memory, and costs nothing extra).
///
/// \code
/// const ssmdyn::SelectiveSystem<double> system(params);
/// const Eigen::MatrixXd S0 = Eigen::MatrixXd::Identity(D * L, D * L).middleCols(j * D, D);  // token j
/// const auto r = ssmdyn::simulate_sensitivities(system, X0, S0, 10.0);
/// // r.S.middleRows(l * D, D) = ∂x_l(T)/∂x_j(0), a D×D block, zero for l < j
/// \endcode
///
/// \param system  the dynamics (a SelectiveSystem; its parameters are shared, not copied)
/// \param x0      the initial tokens: the flat state (length D·L) or the D×L matrix
/// \param S0      the (D·L)×m initial directions (m >= 0), finite
/// \param t_end   the final time, >= options.t_start
/// \param options as for simulate(); the blow-up bound is tested on x alone (see above)
/// \param threads threads over the m JVPs of each right-hand side (1: serial, 0: all
///                cores); results do not depend on it
/// \return the run of x, S at its final time, and the status
/// \throws std::invalid_argument for invalid options, or x0 or S0 of the wrong size or
///         not finite (the message names x0 or S0)
template <typename Scalar, typename StepSizeMap, typename XDerived, typename SDerived>
SensitivityResult<Scalar> simulate_sensitivities(const SelectiveSystem<Scalar, StepSizeMap>& system,
                                                 const Eigen::MatrixBase<XDerived>& x0,
                                                 const Eigen::MatrixBase<SDerived>& S0,
                                                 typename SelectiveSystem<Scalar, StepSizeMap>::Scalar t_end,
                                                 const SimulateOptions<Scalar>& options = {}, int threads = 1) {
    static_assert(std::is_same<typename XDerived::Scalar, Scalar>::value,
                  "x0 must have the system's Scalar type (e.g. an Eigen::VectorXd for a double system).");
    static_assert(std::is_same<typename SDerived::Scalar, Scalar>::value,
                  "S0 must have the system's Scalar type (e.g. an Eigen::MatrixXd for a double system).");
    using State = StateVector<Scalar>;
    const State x = to_state(x0, system.dim(), "x0");
    const Eigen::Index n = x.size(), m = S0.cols();
    if (S0.rows() != n)
        throw std::invalid_argument("S0 is " + std::to_string(S0.rows()) + "x" + std::to_string(S0.cols()) +
                                    "; it must have D*L = " + std::to_string(n) + " rows, one column per direction");
    detail::check_stepper_options(options);
    detail::check_driver_options(options, t_end);
    const SensitivitySystem<Scalar, StepSizeMap> variational(system, m, threads);

    // The augmented state [x; vec(S / scale)]; S0 too is scaled down if it starts above
    // the bound. After a rescaling the entries are at most `target` (< the bound, so the
    // next segment can make progress).
    const Scalar target = std::min(Scalar(1), options.blowup_norm / 2);
    Scalar scale = 1;
    State z(n * (m + 1));
    z.head(n) = x;
    for (Eigen::Index k = 0; k < m; ++k) z.segment(n * (k + 1), n) = S0.col(k);
    {
        const Scalar s0 = m > 0 ? z.tail(n * m).cwiseAbs().maxCoeff() : Scalar(0);
        if (std::isfinite(static_cast<double>(s0)) && s0 > options.blowup_norm) {
            scale = s0 / target;
            z.tail(n * m) /= scale;
        }
    }

    SensitivityResult<Scalar> out;
    SimulateResult<Scalar>& total = out.simulation;
    total.x_initial = x;
    total.dim = system.dim();
    SimulateOptions<Scalar> seg_options = options;
    if (options.stepper == Stepper::Rk4 && options.dt == 0)  // the fixed step of the whole run
        seg_options.dt = (t_end - options.t_start) / 1000;
    // Each segment must show its last two accepted states (the last step size, to start
    // the next segment with, and whether x grew): Record::Steps records them; otherwise the
    // tail of an early end does, with room for at least two (Record::None runs as
    // Record::Times without output times).
    if (options.record == Record::None) {
        seg_options.record = Record::Times;
        seg_options.output_times.clear();
        seg_options.max_tail_states = 2;
    } else if (options.record == Record::Times) {
        seg_options.max_tail_states = std::max<std::size_t>(options.max_tail_states, 2);
    }
    auto x_norm = [n](const State& v) { return v.head(n).cwiseAbs().maxCoeff(); };
    bool x_grew = false;  // over the last step of the previous segment
    for (std::size_t segment = 0;; ++segment) {
        SimulateResult<Scalar> seg = simulate(variational, z, t_end, seg_options);
        const bool rescale = m > 0 && seg.status == Status::BlowUp &&
                             seg.x_final.tail(n * m).cwiseAbs().maxCoeff() > options.blowup_norm &&
                             !(x_norm(seg.x_final) > options.blowup_norm);
        total.steps += seg.steps;
        total.rejected_steps += seg.rejected_steps;
        total.rhs_evaluations += seg.rhs_evaluations;

        // The segment's recording, of x alone, as the caller asked. Record::Steps: every
        // state but the first of a later segment (the previous one's last). Record::Times:
        // the output times come first, then (after an early end) the tail of accepted
        // states, kept for the final segment only and cut to the caller's max_tail_states.
        const std::size_t size = seg.times.size();
        auto keep = [&](std::size_t from, std::size_t to) {
            for (std::size_t i = from; i < to; ++i) {
                total.times.push_back(seg.times[i]);
                total.states.push_back(seg.states[i].head(n));
            }
        };
        if (options.record == Record::Steps) {
            keep(segment > 0 && size > 0 ? 1 : 0, size);
        } else if (options.record == Record::Times) {
            const auto& times = seg_options.output_times;
            const std::size_t outputs = std::min(
                size, static_cast<std::size_t>(std::upper_bound(times.begin(), times.end(), seg.t_final) - times.begin()));
            keep(0, outputs);
            if (!rescale) keep(size - std::min(size - outputs, options.max_tail_states), size);
        }
        const bool have_last_step = size >= 2 && seg.times[size - 1] == seg.t_final;

        if (!rescale) {
            total.status = seg.status;
            total.t_final = seg.t_final;
            total.t_blowup = seg.t_blowup;
            total.message = seg.message;
            // A segment that starts after a rescaling and collapses before its first
            // accepted step cannot see the growth the driver looks for: take it from x over
            // the previous segment's last step.
            if (seg.status == Status::StepSizeUnderflow && segment > 0 && seg.steps == 0 && x_grew) {
                total.status = Status::BlowUp;
                total.t_blowup = seg.t_final;
                total.message = "the step size collapsed while the state grew";
            }
            total.x_final = seg.x_final.head(n);
            out.S.resize(n, m);
            for (Eigen::Index k = 0; k < m; ++k) out.S.col(k) = scale * seg.x_final.segment(n * (k + 1), n);
            const std::string at = std::to_string(static_cast<double>(seg.t_final));
            if (total.status == Status::BlowUp)
                total.message += " (x blew up); S is the sensitivity at the detection time t = " + at + ", not at t_end";
            else if (total.status != Status::Completed)
                total.message += "; S is the sensitivity at t = " + at + ", where the run stopped";
            break;
        }
        // S crossed the bound, x did not: rescale S and go on from here, with the step
        // size the last accepted step had (a fresh guess from |z| / |f(z)| would be far too
        // small near a blow-up, where f grows like |x|^4).
        x_grew = have_last_step && x_norm(seg.states[size - 1]) > x_norm(seg.states[size - 2]);
        if (have_last_step && options.stepper != Stepper::Rk4) seg_options.dt = seg.times[size - 1] - seg.times[size - 2];
        const Scalar c = seg.x_final.tail(n * m).cwiseAbs().maxCoeff() / target;
        z = std::move(seg.x_final);
        z.tail(n * m) /= c;
        scale *= c;
        ++out.rescalings;
        seg_options.t_start = seg.t_final;
        if (seg.steps >= seg_options.max_steps) {  // the budget is spent (the driver's words)
            total.status = Status::MaxSteps;
            total.t_final = seg.t_final;
            total.x_final = z.head(n);
            out.S.resize(n, m);
            for (Eigen::Index k = 0; k < m; ++k) out.S.col(k) = scale * z.segment(n * (k + 1), n);
            total.message = "the step budget of " + std::to_string(options.max_steps) +
                            " accepted steps ran out; S is the sensitivity at t = " +
                            std::to_string(static_cast<double>(seg.t_final)) + ", where the run stopped";
            break;
        }
        seg_options.max_steps -= seg.steps;
        if (seg_options.record == Record::Times) {
            auto& times = seg_options.output_times;
            times.erase(times.begin(), std::upper_bound(times.begin(), times.end(), seg.t_final));
        }
    }
    out.status = total.status;
    return out;
}

}  // namespace ssmdyn
