#pragma once
/// \file adjoint.hpp
/// adjoint_gradient(): the gradient of a functional of the solution of dX/dt = S6(X) with
/// respect to the initial tokens X(0) and to every parameter of the layer, by the discrete
/// adjoint of the Runge–Kutta steps the forward run took.
///
/// Why the discrete adjoint and not the continuous one (λ' = −Jᵀλ integrated backwards
/// against an interpolated trajectory): it is the exact gradient of the computed solution,
/// so it matches finite differences of simulate() up to how the step-size controller reacts
/// to a perturbation (about 1e-10 relative at rtol 1e-10 in the tests), and it needs no
/// error control of its own on a backward run, which near a blow-up would have to follow a
/// λ as large as f(X(T))/f(X(0)) (exactly ∂x(T)/∂x(0) for token 1 of the 1-D system). Both
/// equal the gradient of the exact solution to the integration's tolerance.

#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "driver.hpp"
#include "odeint.hpp"
#include "simulate.hpp"
#include "status.hpp"
#include "../core/params.hpp"
#include "../core/scan_derivatives.hpp"
#include "../core/state.hpp"
#include "../core/system.hpp"

namespace ssmdyn {

/// Options of adjoint_gradient(): those of simulate() (the forward run is the run simulate()
/// would make with them) and a cap on the memory the checkpoints may take.
///
/// Converts implicitly from SimulateOptions, so `adjoint_gradient(system, x0, T, G, sim_options)` works.
template <typename Scalar = double>
struct AdjointOptions : SimulateOptions<Scalar> {
    AdjointOptions() = default;
    /// The simulate() options `options`, with no checkpoint cap. Implicit on purpose: the
    /// options of a simulate() call serve as they are.
    AdjointOptions(const SimulateOptions<Scalar>& options) : SimulateOptions<Scalar>(options) {}

    /// Most bytes the checkpoints (one flat state of D·L scalars per accepted step) may take;
    /// the forward run's step budget becomes min(max_steps, max_checkpoint_bytes /
    /// (D·L·sizeof(Scalar))), so a run that needs more ends with Status::MaxSteps and says
    /// why. 0: no cap beyond max_steps.
    std::size_t max_checkpoint_bytes = 0;
};

/// What adjoint_gradient() returns: the forward run, and the gradients of the functional g
/// (see adjoint_gradient) with respect to X(0) and to the parameters.
template <typename Scalar = double>
struct AdjointResult {
    /// The forward run: status, final state, work; its recording as options.record asked
    /// (Record::Steps: the checkpoints themselves, moved here once the sweep is done).
    SimulateResult<Scalar> forward;
    /// ∂g/∂X(0), flat (length D·L, token l at entries l·D … l·D+D−1); view it as D×L with
    /// token_matrix(result.x0, D).
    StateVector<Scalar> x0;
    /// ∂g/∂θ for S_B, S_C, S_Delta, delta_bias and A (D_skip and gate are empty: the system
    /// has neither).
    S6Gradients<Scalar> params;
    /// The time at which the loss gradient G was applied: t_end, or forward.t_final when
    /// the run ended early (blow-up or any other status).
    Scalar t_gradient = Scalar(0);
    /// Checkpoints kept (accepted steps) and the bytes their states took.
    std::size_t checkpoints = 0, checkpoint_bytes = 0;
    /// Work of the backward sweep: right-hand sides recomputed, and vector-Jacobian products.
    std::size_t backward_rhs_evaluations = 0, backward_vjp_evaluations = 0;
    /// Output times whose term was left out because the run ended before them.
    std::size_t output_times_skipped = 0;
    /// One sentence on what the gradient is the gradient of, and why when that is not g at t_end.
    std::string message;
};

namespace detail {

template <typename T>
struct adjoint_identity {
    using type = T;
};
/// Keeps a parameter out of template argument deduction (Scalar comes from the system).
template <typename T>
using adjoint_identity_t = typename adjoint_identity<T>::type;

/// The Butcher tableau of an explicit Runge–Kutta method: strictly lower triangular a and
/// the weights b of the solution the stepper propagates. The coefficients are computed as
/// odeint computes them (p/q in Scalar), so that recomputed stages equal odeint's to rounding.
template <typename Scalar>
struct ButcherTableau {
    int stages = 0;
    std::vector<Scalar> a;  ///< stages × stages, row-major: a[i·stages + j], zero for j >= i
    std::vector<Scalar> b;  ///< stages
    /// Stage i matters to the step (b_i ≠ 0, or it feeds a stage that matters); its
    /// derivative k_i must be evaluated to build a later stage that matters.
    std::vector<char> needed, evaluated;

    Scalar coefficient(int i, int j) const { return a[static_cast<std::size_t>(i * stages + j)]; }

    /// Row i of a, as p/q pairs for a_{i,0} … a_{i,i−1}.
    void row(int i, std::initializer_list<std::pair<long, long>> entries) {
        int j = 0;
        for (const auto& e : entries) a[static_cast<std::size_t>(i * stages + j++)] = fraction(e);
    }
    void weights(std::initializer_list<std::pair<long, long>> entries) {
        int i = 0;
        for (const auto& e : entries) b[static_cast<std::size_t>(i++)] = fraction(e);
    }
    static Scalar fraction(const std::pair<long, long>& e) {
        return static_cast<Scalar>(e.first) / static_cast<Scalar>(e.second);
    }
    void resize(int s) {
        stages = s;
        a.assign(static_cast<std::size_t>(s * s), Scalar(0));
        b.assign(static_cast<std::size_t>(s), Scalar(0));
    }
    /// Fills needed and evaluated from a and b (a stage that matters needs the derivatives
    /// its row combines).
    void finish() {
        needed.assign(static_cast<std::size_t>(stages), 0);
        evaluated.assign(static_cast<std::size_t>(stages), 0);
        for (int i = stages - 1; i >= 0; --i) {
            bool need = b[static_cast<std::size_t>(i)] != Scalar(0);
            for (int j = i + 1; j < stages; ++j)
                if (needed[static_cast<std::size_t>(j)] && coefficient(j, i) != Scalar(0)) {
                    need = true;
                    evaluated[static_cast<std::size_t>(i)] = 1;
                }
            needed[static_cast<std::size_t>(i)] = need;
        }
    }
};

/// The tableau of the stepper simulate() builds for `stepper`, with the weights of the
/// solution odeint propagates: dopri5 and cash_karp their fifth-order weights (dopri5's
/// seventh, first-same-as-last stage has weight 0 and is left out), fehlberg78 its
/// eighth-order ones, rk4 the classical method.
/// \throws std::invalid_argument for bulirsch_stoer (an extrapolation method with a
///         varying number of substeps, not one tableau)
template <typename Scalar>
ButcherTableau<Scalar> butcher_tableau(Stepper stepper) {
    ButcherTableau<Scalar> t;
    switch (stepper) {
        case Stepper::Dopri5:  // runge_kutta_dopri5.hpp
            t.resize(6);
            t.row(1, {{1, 5}});
            t.row(2, {{3, 40}, {9, 40}});
            t.row(3, {{44, 45}, {-56, 15}, {32, 9}});
            t.row(4, {{19372, 6561}, {-25360, 2187}, {64448, 6561}, {-212, 729}});
            t.row(5, {{9017, 3168}, {-355, 33}, {46732, 5247}, {49, 176}, {-5103, 18656}});
            t.weights({{35, 384}, {0, 1}, {500, 1113}, {125, 192}, {-2187, 6784}, {11, 84}});
            break;
        case Stepper::CashKarp:  // runge_kutta_cash_karp54.hpp
            t.resize(6);
            t.row(1, {{1, 5}});
            t.row(2, {{3, 40}, {9, 40}});
            t.row(3, {{3, 10}, {-9, 10}, {6, 5}});
            t.row(4, {{-11, 54}, {5, 2}, {-70, 27}, {35, 27}});
            t.row(5, {{1631, 55296}, {175, 512}, {575, 13824}, {44275, 110592}, {253, 4096}});
            t.weights({{37, 378}, {0, 1}, {250, 621}, {125, 594}, {0, 1}, {512, 1771}});
            break;
        case Stepper::Fehlberg78:  // runge_kutta_fehlberg78.hpp
            t.resize(13);
            t.row(1, {{2, 27}});
            t.row(2, {{1, 36}, {1, 12}});
            t.row(3, {{1, 24}, {0, 1}, {1, 8}});
            t.row(4, {{5, 12}, {0, 1}, {-25, 16}, {25, 16}});
            t.row(5, {{1, 20}, {0, 1}, {0, 1}, {1, 4}, {1, 5}});
            t.row(6, {{-25, 108}, {0, 1}, {0, 1}, {125, 108}, {-65, 27}, {125, 54}});
            t.row(7, {{31, 300}, {0, 1}, {0, 1}, {0, 1}, {61, 225}, {-2, 9}, {13, 900}});
            t.row(8, {{2, 1}, {0, 1}, {0, 1}, {-53, 6}, {704, 45}, {-107, 9}, {67, 90}, {3, 1}});
            t.row(9, {{-91, 108}, {0, 1}, {0, 1}, {23, 108}, {-976, 135}, {311, 54}, {-19, 60}, {17, 6}, {-1, 12}});
            t.row(10, {{2383, 4100}, {0, 1}, {0, 1}, {-341, 164}, {4496, 1025}, {-301, 82}, {2133, 4100}, {45, 82},
                       {45, 164}, {18, 41}});
            t.row(11, {{3, 205}, {0, 1}, {0, 1}, {0, 1}, {0, 1}, {-6, 41}, {-3, 205}, {-3, 41}, {3, 41}, {6, 41},
                       {0, 1}});
            t.row(12, {{-1777, 4100}, {0, 1}, {0, 1}, {-341, 164}, {4496, 1025}, {-289, 82}, {2193, 4100},
                       {51, 82}, {33, 164}, {12, 41}, {0, 1}, {1, 1}});
            t.weights({{0, 1}, {0, 1}, {0, 1}, {0, 1}, {0, 1}, {34, 105}, {9, 35}, {9, 35}, {9, 280}, {9, 280},
                       {0, 1}, {41, 840}, {41, 840}});
            break;
        case Stepper::Rk4:  // runge_kutta4.hpp
            t.resize(4);
            t.row(1, {{1, 2}});
            t.row(2, {{0, 1}, {1, 2}});
            t.row(3, {{0, 1}, {0, 1}, {1, 1}});
            t.weights({{1, 6}, {1, 3}, {1, 3}, {1, 6}});
            break;
        case Stepper::BulirschStoer:
            throw std::invalid_argument(
                "stepper bulirsch_stoer has no discrete adjoint here (an extrapolation method, not one "
                "Runge-Kutta tableau); use dopri5, cash_karp, fehlberg78 or rk4");
        default:
            throw std::invalid_argument("stepper is not one of the Stepper values");
    }
    t.finish();
    return t;
}

/// The stages of one step from x with step h: X[i] = x + Σ_j (a_ij h) k_j for every stage
/// that matters, and k_i = f(X[i]) for those a later stage combines. The sums run left to
/// right, skipping zero coefficients, as odeint's scale_sum does (adding 0·k changes nothing).
/// \return the number of right-hand-side evaluations
template <typename Scalar, typename System>
std::size_t runge_kutta_stages(const ButcherTableau<Scalar>& tab, const System& system, const StateVector<Scalar>& x,
                               Scalar h, std::vector<StateVector<Scalar>>& X, std::vector<StateVector<Scalar>>& K) {
    const auto s = static_cast<std::size_t>(tab.stages);
    X.resize(s);
    K.resize(s);
    std::size_t evaluations = 0;
    for (int i = 0; i < tab.stages; ++i) {
        const auto si = static_cast<std::size_t>(i);
        if (!tab.needed[si]) continue;
        X[si] = x;
        for (int j = 0; j < i; ++j) {
            const Scalar c = tab.coefficient(i, j);
            if (c != Scalar(0)) X[si] += (c * h) * K[static_cast<std::size_t>(j)];
        }
        if (tab.evaluated[si]) {
            K[si].resize(x.size());
            system(X[si], K[si], Scalar(0));
            ++evaluations;
        }
    }
    return evaluations;
}

/// One step of the method: x + h Σ_i b_i f(X_i), as odeint's stepper takes it (to rounding).
template <typename Scalar, typename System>
StateVector<Scalar> runge_kutta_step(const ButcherTableau<Scalar>& tab, const System& system,
                                     const StateVector<Scalar>& x, Scalar h) {
    std::vector<StateVector<Scalar>> X, K;
    runge_kutta_stages(tab, system, x, h, X, K);
    StateVector<Scalar> out = x;
    for (int i = 0; i < tab.stages; ++i) {
        const auto si = static_cast<std::size_t>(i);
        const Scalar w = tab.b[si];
        if (w == Scalar(0)) continue;
        if (!tab.evaluated[si]) {  // the last stages feed only the solution
            K[si].resize(x.size());
            system(X[si], K[si], Scalar(0));
        }
        out += (w * h) * K[si];
    }
    return out;
}

/// The forward run's checkpoints: the start state, time and size of every accepted step.
template <typename Scalar>
struct CheckpointTape {
    std::vector<StateVector<Scalar>> x;
    std::vector<Scalar> t, h;
    void push(Scalar start, Scalar step, const StateVector<Scalar>& state) {
        t.push_back(start);
        h.push_back(step);
        x.push_back(state);
    }
};

/// An odeint stepper that runs `Inner` and writes every step the driver will accept to a
/// tape: the start state and the step size actually taken, which the driver does not
/// report (SimulateResult's times are the step ends, shortened to t_end by a last sliver
/// below the minimum step). It offers the first-same-as-last forms, computing f(out) itself
/// for an inner stepper that does not, exactly where the driver would, so the run is the
/// one simulate() makes (same steps, same evaluations). A step goes on the tape when its
/// state and derivative are finite: the driver's own acceptance test.
template <typename Inner, typename Scalar, bool controlled>
class RecordingStepper {
public:
    using state_type = StateVector<Scalar>;
    using deriv_type = StateVector<Scalar>;
    using value_type = Scalar;
    using time_type = Scalar;
    using stepper_category = std::conditional_t<controlled, boost::numeric::odeint::controlled_stepper_tag,
                                                boost::numeric::odeint::stepper_tag>;

    RecordingStepper(Inner inner, CheckpointTape<Scalar>& tape) : m_inner(std::move(inner)), m_tape(tape) {}

    /// A controlled stepper's trial step (controlled = true).
    template <typename System>
    boost::numeric::odeint::controlled_step_result try_step(System system, const state_type& in,
                                                            const deriv_type& dxdt_in, time_type& t, state_type& out,
                                                            deriv_type& dxdt_out, time_type& dt) {
        namespace odeint = boost::numeric::odeint;
        const Scalar start = t, step = dt;
        odeint::controlled_step_result result;
        if constexpr (has_fsal_try_step<Inner, System, state_type, time_type>::value) {
            result = m_inner.try_step(system, in, dxdt_in, t, out, dxdt_out, dt);
        } else {
            result = m_inner.try_step(system, in, dxdt_in, t, out, dt);
            if (result == odeint::success && out.allFinite()) system(out, dxdt_out, t);
        }
        if (result == odeint::success && out.allFinite() && dxdt_out.allFinite()) m_tape.push(start, step, in);
        return result;
    }

    /// A fixed step (controlled = false).
    template <typename System>
    void do_step(System system, const state_type& in, const deriv_type& dxdt_in, time_type t, state_type& out,
                 deriv_type& dxdt_out, time_type dt) {
        m_inner.do_step(system, in, dxdt_in, t, out, dt);
        if (!out.allFinite()) return;
        system(out, dxdt_out, t + dt);
        if (dxdt_out.allFinite()) m_tape.push(t, dt, in);
    }

    void reset() { reset_stepper(m_inner); }

private:
    Inner m_inner;
    CheckpointTape<Scalar>& m_tape;
};

/// Runs `options.stepper` as simulate() builds it (method, tolerances, error norm), wrapped
/// in a RecordingStepper writing to `tape`, through integrate_guarded().
template <typename Scalar, typename System>
SimulateResult<Scalar> recorded_run(const System& system, const StateVector<Scalar>& x0, Scalar t_end,
                                    const SimulateOptions<Scalar>& options, Stepper stepper,
                                    CheckpointTape<Scalar>& tape) {
    namespace odeint = boost::numeric::odeint;
    using Types = odeint_steppers<Scalar>;
    auto run = [&](auto inner, auto is_controlled) {
        RecordingStepper<decltype(inner), Scalar, decltype(is_controlled)::value> recorder(std::move(inner), tape);
        return integrate_guarded(recorder, system, x0, t_end, options);
    };
    auto controlled = [&](auto error_stepper) {
        return run(make_controlled(error_stepper, options), std::true_type{});
    };
    switch (stepper) {
        case Stepper::Dopri5: return controlled(typename Types::dopri5());
        case Stepper::CashKarp: return controlled(typename Types::cash_karp());
        case Stepper::Fehlberg78: return controlled(typename Types::fehlberg78());
        case Stepper::Rk4: return run(typename Types::rk4(), std::false_type{});
        default: break;
    }
    throw std::invalid_argument("stepper " + std::string(to_string(stepper)) + " has no discrete adjoint here");
}

/// The reverse sweep through the steps of one tableau: λ_n from λ_{n+1}, and the parameter
/// gradients accumulated.
///
/// For the step x' = x + h Σ b_i k_i, k_i = f(X_i), X_i = x + h Σ_{j<i} a_ij k_j (h fixed),
/// and a loss with ∂/∂x' = λ', the stage adjoints run from the last stage to the first,
/// \f[ \bar k_i = h\,b_i\,\lambda' + h \sum_{j>i} a_{ji}\,\bar X_j,\qquad
///     \bar X_i = J(X_i)^\top \bar k_i,\qquad
///     \bar\theta \mathrel{+}= (\partial f/\partial\theta)(X_i)^\top \bar k_i, \f]
/// and \f$ \lambda = \lambda' + \sum_i \bar X_i \f$. Each VJP is one selective_scan_vjp.
template <typename Scalar, typename Phi>
class DiscreteAdjoint {
public:
    DiscreteAdjoint(const SelectiveSystem<Scalar, Phi>& system, ButcherTableau<Scalar> tableau)
        : m_system(system), m_tab(std::move(tableau)), m_dim(system.dim()) {
        const auto s = static_cast<std::size_t>(m_tab.stages);
        m_xbar.resize(s);
        m_total = S6Gradients<Scalar>::zeros_like(system.params());
    }

    /// λ ← λ_n, the adjoint at the start x of a step of size h, from λ = λ_{n+1} at its end.
    void step(const StateVector<Scalar>& x, Scalar h, StateVector<Scalar>& lambda) {
        // Nothing downstream of this step is differentiated yet (an output term comes later
        // in the sweep): its contributions are zero, skip the work.
        if ((lambda.array() == Scalar(0)).all()) return;
        rhs_evaluations += runge_kutta_stages(m_tab, m_system, x, h, m_X, m_K);
        const Eigen::Index D = m_dim;
        const auto& params = m_system.params();
        for (int i = m_tab.stages - 1; i >= 0; --i) {
            const auto si = static_cast<std::size_t>(i);
            if (!m_tab.needed[si]) continue;
            m_kbar = (h * m_tab.b[si]) * lambda;
            for (int j = i + 1; j < m_tab.stages; ++j) {
                const Scalar c = m_tab.coefficient(j, i);
                if (c != Scalar(0) && m_tab.needed[static_cast<std::size_t>(j)])
                    m_kbar += (h * c) * m_xbar[static_cast<std::size_t>(j)];
            }
            m_xbar[si].resize(x.size());
            selective_scan_vjp(params, m_system.step_size_map(), token_matrix(m_X[si], D), token_matrix(m_kbar, D),
                               token_matrix(m_xbar[si], D), m_grads);
            ++vjp_evaluations;
            m_total.add(m_grads);
        }
        for (int i = 0; i < m_tab.stages; ++i)
            if (m_tab.needed[static_cast<std::size_t>(i)]) lambda += m_xbar[static_cast<std::size_t>(i)];
    }

    /// The parameter gradients accumulated so far.
    S6Gradients<Scalar>& gradients() { return m_total; }

    std::size_t rhs_evaluations = 0, vjp_evaluations = 0;

private:
    const SelectiveSystem<Scalar, Phi>& m_system;
    ButcherTableau<Scalar> m_tab;
    Eigen::Index m_dim;
    std::vector<StateVector<Scalar>> m_X, m_K, m_xbar;
    StateVector<Scalar> m_kbar;
    S6Gradients<Scalar> m_grads, m_total;
};

/// A gradient argument as the flat state, sized like the tokens.
/// \throws std::invalid_argument naming `what` when it is in neither token form or its size differs
template <typename Derived, typename Scalar>
StateVector<Scalar> gradient_as_state(const Eigen::MatrixBase<Derived>& g, Eigen::Index dim, Eigen::Index size,
                                      const std::string& what) {
    static_assert(std::is_same<typename Derived::Scalar, Scalar>::value,
                  "A gradient must have the Scalar type of the system.");
    StateVector<Scalar> flat = to_state(g, dim, what);
    if (flat.size() != size)
        throw std::invalid_argument(what + " has " + std::to_string(flat.size()) + " entries (" +
                                    std::to_string(flat.size() / dim) + " tokens); expected D*L = " +
                                    std::to_string(size) + " like x0");
    return flat;
}

template <typename T>
constexpr bool is_eigen_matrix() {
    return std::is_base_of<Eigen::MatrixBase<T>, T>::value;
}

/// The loss gradient at the final state x: G itself, or G(x) for a callable.
template <typename Scalar, typename LossGradient>
StateVector<Scalar> loss_gradient_at(const LossGradient& G, const StateVector<Scalar>& x, Eigen::Index dim) {
    if constexpr (is_eigen_matrix<LossGradient>()) {
        return gradient_as_state<LossGradient, Scalar>(G, dim, x.size(), "loss_gradient");
    } else {
        static_assert(std::is_invocable<const LossGradient&, const StateVector<Scalar>&>::value,
                      "loss_gradient must be an Eigen matrix or vector (flat or D x L), or callable as "
                      "G(const StateVector<Scalar>& x_final) returning one.");
        const auto value = G(x);
        return gradient_as_state<std::decay_t<decltype(value)>, Scalar>(value, dim, x.size(), "loss_gradient");
    }
}

/// Output term k's gradient at its state x: the k-th entry of a container, or G(k, x).
template <typename Scalar, typename OutputGradients>
StateVector<Scalar> output_gradient_at(const OutputGradients& G, std::size_t k, const StateVector<Scalar>& x,
                                       Eigen::Index dim) {
    const std::string what = "output_gradients[" + std::to_string(k) + "]";
    if constexpr (std::is_invocable<const OutputGradients&, std::size_t, const StateVector<Scalar>&>::value) {
        const auto value = G(k, x);
        return gradient_as_state<std::decay_t<decltype(value)>, Scalar>(value, dim, x.size(), what);
    } else {
        using Entry = std::decay_t<decltype(G[k])>;
        static_assert(is_eigen_matrix<Entry>(),
                      "output_gradients must be a container of Eigen matrices or vectors (flat or D x L, "
                      "one per output time), or callable as G(std::size_t k, const StateVector<Scalar>& x_k).");
        return gradient_as_state<Entry, Scalar>(G[k], dim, x.size(), what);
    }
}

/// No output terms: the overload of adjoint_gradient() without them.
struct NoOutputGradients {};

template <typename Scalar, typename Phi, typename X0, typename LossGradient, typename OutputGradients>
AdjointResult<Scalar> adjoint_gradient(const SelectiveSystem<Scalar, Phi>& system, const Eigen::MatrixBase<X0>& x0_in,
                                       Scalar t_end, const LossGradient& loss_gradient,
                                       const AdjointOptions<Scalar>& options, const std::vector<Scalar>& output_times,
                                       const OutputGradients& output_gradients) {
    constexpr bool has_outputs = !std::is_same<OutputGradients, NoOutputGradients>::value;
    const Eigen::Index D = system.dim();

    // Every argument is checked before the forward run, so a mistake costs no integration.
    check_stepper_options(options);
    const ButcherTableau<Scalar> tableau = butcher_tableau<Scalar>(options.stepper);
    const StateVector<Scalar> x0 = initial_state(system, x0_in);
    const Eigen::Index n = x0.size();
    if constexpr (is_eigen_matrix<LossGradient>()) loss_gradient_at(loss_gradient, x0, D);
    SimulateOptions<Scalar> run_options = options;
    if constexpr (has_outputs) {
        if constexpr (!std::is_invocable<const OutputGradients&, std::size_t, const StateVector<Scalar>&>::value) {
            if (static_cast<std::size_t>(output_gradients.size()) != output_times.size())
                throw std::invalid_argument("output_gradients has " + std::to_string(output_gradients.size()) +
                                            " entries but output_times has " + std::to_string(output_times.size()) +
                                            "; give one gradient per output time");
            for (std::size_t k = 0; k < output_times.size(); ++k) output_gradient_at(output_gradients, k, x0, D);
        }
        if (options.record == Record::Times && !options.output_times.empty() && options.output_times != output_times)
            throw std::invalid_argument(
                "output_times: options.output_times differ from the output times of the gradients; leave "
                "options.output_times empty or equal to them");
        // Record::Times makes the driver land steps on the output times exactly, so each
        // output state is a step boundary (and the driver checks the times).
        run_options.record = Record::Times;
        run_options.output_times = output_times;
    } else if (options.record != Record::Times) {
        run_options.record = Record::None;  // the tape keeps the steps; Record::Steps is filled from it
    }
    const std::size_t state_bytes = static_cast<std::size_t>(n) * sizeof(Scalar);
    bool capped = false;
    if (options.max_checkpoint_bytes > 0) {
        const std::size_t allowed = options.max_checkpoint_bytes / state_bytes;
        if (allowed == 0)
            throw std::invalid_argument("max_checkpoint_bytes = " + std::to_string(options.max_checkpoint_bytes) +
                                        " holds no checkpoint; one state takes D*L*sizeof(Scalar) = " +
                                        std::to_string(state_bytes) + " bytes");
        if (allowed < run_options.max_steps) {
            run_options.max_steps = allowed;
            capped = true;
        }
    }

    // Forward: the run simulate() would make, its accepted steps on the tape.
    CheckpointTape<Scalar> tape;
    AdjointResult<Scalar> out;
    out.forward = recorded_run(system, x0, t_end, run_options, options.stepper, tape);
    SimulateResult<Scalar>& fwd = out.forward;
    const std::size_t steps = tape.x.size();
    if (steps != fwd.steps)
        throw std::logic_error("adjoint_gradient: " + std::to_string(steps) + " checkpoints for " +
                               std::to_string(fwd.steps) + " accepted steps");
    out.checkpoints = steps;
    out.checkpoint_bytes = steps * state_bytes;
    out.t_gradient = fwd.t_final;

    // Step boundary m holds the state at time tape.t[m] (m < steps) or t_final (m = steps).
    // The driver records output time t_k with the state at the first boundary at or after
    // it (exactly at it, as the steps land there), so that is where its term enters.
    auto boundary_state = [&](std::size_t m) -> const StateVector<Scalar>& {
        return m < steps ? tape.x[m] : fwd.x_final;
    };
    std::vector<std::vector<std::size_t>> terms_at;  // output terms entering at each boundary
    if constexpr (has_outputs) {
        terms_at.resize(steps + 1);
        std::size_t m = 0;
        for (std::size_t k = 0; k < output_times.size(); ++k) {
            if (output_times[k] > fwd.t_final) {
                ++out.output_times_skipped;
                continue;
            }
            while (m < steps && tape.t[m] < output_times[k]) ++m;
            terms_at[m].push_back(k);
        }
    }
    auto add_terms = [&](std::size_t m, StateVector<Scalar>& lambda) {
        if constexpr (has_outputs) {
            for (std::size_t k : terms_at[m]) lambda += output_gradient_at(output_gradients, k, boundary_state(m), D);
        } else {
            (void)m;
            (void)lambda;
        }
    };

    // Backward: λ from the last boundary to the first, each step recomputed from its checkpoint.
    DiscreteAdjoint<Scalar, Phi> adjoint(system, tableau);
    StateVector<Scalar> lambda = loss_gradient_at(loss_gradient, fwd.x_final, D);
    add_terms(steps, lambda);
    for (std::size_t m = steps; m-- > 0;) {
        adjoint.step(tape.x[m], tape.h[m], lambda);
        add_terms(m, lambda);
    }
    out.x0 = std::move(lambda);
    out.params = std::move(adjoint.gradients());
    out.params.D_skip.resize(0);
    out.params.gate.resize(0, 0);
    out.backward_rhs_evaluations = adjoint.rhs_evaluations;
    out.backward_vjp_evaluations = adjoint.vjp_evaluations;

    // The forward run's recording, as options.record asked.
    if (options.record == Record::Steps) {
        fwd.times = std::move(tape.t);
        fwd.times.push_back(fwd.t_final);
        fwd.states = std::move(tape.x);
        fwd.states.push_back(fwd.x_final);
    } else if (options.record == Record::None) {
        fwd.times.clear();
        fwd.states.clear();
    }

    // The message: what was differentiated, and anything that makes it other than g at t_end.
    const auto time_text = [](Scalar t) { return std::to_string(static_cast<double>(t)); };
    std::string msg = "gradient by the discrete adjoint of " + std::to_string(steps) + " " +
                      to_string(options.stepper) + " steps (" + std::to_string(out.checkpoint_bytes) +
                      " bytes of checkpoints)";
    if (fwd.status == Status::Completed) {
        msg += ", loss gradient applied at t_end = " + time_text(fwd.t_final);
    } else {
        msg += "; the forward run ended early with status " + std::string(to_string(fwd.status)) + " (" +
               fwd.message + ") at t = " + time_text(fwd.t_final) +
               ", so the loss gradient was applied to the state there, not at t_end = " + time_text(t_end);
        if (fwd.status == Status::BlowUp) msg += " (the state where blow-up was detected)";
        if (capped && fwd.status == Status::MaxSteps)
            msg += "; the step budget was set by max_checkpoint_bytes (" + std::to_string(run_options.max_steps) +
                   " checkpoints)";
    }
    if (out.output_times_skipped > 0)
        msg += "; " + std::to_string(out.output_times_skipped) + " output time(s) after t = " +
               time_text(fwd.t_final) + " had no state and were left out";
    if (!out.x0.allFinite()) msg += "; the adjoint overflowed: the gradient is not finite";
    out.message = std::move(msg);
    return out;
}

}  // namespace detail

/// Gradient of \f$ g(X(T)) \f$ with respect to the initial tokens X(0) and to every S6
/// parameter θ (S_B, S_C, S_Δ, b_Δ, A), for X the solution of dX/dt = S6(X) that simulate()
/// computes, by the discrete adjoint of the Runge–Kutta steps of that run.
///
/// Method. The forward run is simulate()'s run with these options (same stepper, steps and
/// status), with the start state and size of every accepted step kept as a checkpoint.
/// The sweep then walks the steps backwards from \f$ \lambda_N = G = \partial g/\partial X(T) \f$:
/// each step's stages are recomputed from its checkpoint, and the adjoint of the step with
/// its size h held fixed is applied,
/// \f[ \bar k_i = h\,b_i\,\lambda_{n+1} + h\sum_{j>i} a_{ji}\,\bar X_j,\quad
///     \bar X_i = J(X_i)^\top \bar k_i,\quad \lambda_n = \lambda_{n+1} + \sum_i \bar X_i,\quad
///     \frac{\partial g}{\partial\theta} = \sum_{n,i} \Big(\frac{\partial f}{\partial\theta}(X_{n,i})\Big)^{\!\top} \bar k_{n,i}, \f]
/// with the tableau (a, b) of the forward stepper (dopri5: Dormand–Prince's fifth-order
/// solution, which odeint propagates; cash_karp, fehlberg78 and rk4 likewise) and each
/// \f$ J^\top v \f$ and \f$ (\partial f/\partial\theta)^\top v \f$ one selective_scan_vjp. The
/// result is the exact gradient of the computed solution (up to rounding) at the step sizes
/// taken; it differs from the gradient of the exact solution by the integration's error,
/// and from finite differences of simulate() only by how the step-size controller reacts
/// to the perturbation (of the order of the tolerance).
///
/// Cost: the forward run, then per step s − 1 right-hand sides and s VJPs (s stages that
/// matter: dopri5 5 + 6, cash_karp 5 + 6, fehlberg78 11 + 12, rk4 3 + 4), a few forward
/// runs' worth in all, whatever the number D·L of inputs. Memory: one checkpoint of D·L
/// scalars per accepted step, O(steps·D·L) (AdjointOptions::max_checkpoint_bytes caps it;
/// with Record::Steps the checkpoints become the forward result's trajectory, no copy),
/// plus O(s·D·L) for the stages of one step and the VJP's O(L·(D+N)) scratch.
///
/// Early ends. When the forward run stops before t_end (blow-up, step-size underflow,
/// step budget, non-finite right-hand side), the gradient is that of g at the last
/// accepted state, at forward.t_final (for a blow-up, the state where it was detected):
/// G is applied there, and the message says so.
///
/// \code
/// const ssmdyn::SelectiveSystem<double> system(params);
/// // g = ½‖X(T)‖²: its gradient at X(T) is X(T) itself.
/// const auto r = ssmdyn::adjoint_gradient(system, x0, 2.0, [](const ssmdyn::StateVector<double>& x) { return x; });
/// if (r.forward.status == ssmdyn::Status::Completed) use(r.x0, r.params.S_B);
/// \endcode
///
/// \param system        the system (its step-size map must have `derivative`, as the VJP needs)
/// \param x0            the initial tokens, flat (length D·L) or D×L (column l = token l)
/// \param t_end         the final time T, >= options.t_start
/// \param loss_gradient G = ∂g/∂X(T): flat or D×L, or a callable `G(x_final)` taking the
///                      flat final state and returning one (for a g that is not linear)
/// \param options       simulate()'s options (stepper: dopri5, cash_karp, fehlberg78 or rk4)
///                      and the checkpoint cap; with Record::Steps the forward result holds
///                      every step, with Record::Times the output times, as simulate() would
/// \return the forward run, ∂g/∂X(0) (flat) and ∂g/∂θ, the work, and a message
/// \throws std::invalid_argument naming x0, loss_gradient or the option at fault (also for
///         stepper bulirsch_stoer), before any integration
template <typename Scalar, typename Phi, typename X0, typename LossGradient>
AdjointResult<Scalar> adjoint_gradient(const SelectiveSystem<Scalar, Phi>& system, const Eigen::MatrixBase<X0>& x0,
                                       detail::adjoint_identity_t<Scalar> t_end, const LossGradient& loss_gradient,
                                       const detail::adjoint_identity_t<AdjointOptions<Scalar>>& options = {}) {
    return detail::adjoint_gradient(system, x0, t_end, loss_gradient, options, std::vector<Scalar>{},
                                    detail::NoOutputGradients{});
}

/// Gradient of \f$ g(X(T)) + \sum_k g_k(X(t_k)) \f$ with respect to X(0) and every S6
/// parameter: as the overload above, with terms at output times t_k.
///
/// The forward run lands its steps on the output times exactly (Record::Times), so each
/// \f$ G_k = \partial g_k/\partial X(t_k) \f$ is added to λ as the sweep passes the step
/// boundary at t_k. Terms at output times after an early end have no state: they are left
/// out and counted in AdjointResult::output_times_skipped. Pass a zero loss_gradient for a
/// sum over output times alone (an output time may equal t_end). With Record::Steps the
/// forward result holds every step, which then land on the output times too.
///
/// \param output_times     strictly increasing times in [t_start, t_end]
/// \param output_gradients G_k, one per output time: a container (e.g. std::vector) of
///                         Eigen matrices or vectors (flat or D×L), or a callable
///                         `G(k, x_k)` taking k and the flat state at t_k and returning one
/// \throws std::invalid_argument also naming output_gradients (count or size) or
///         output_times (order, range, or options.output_times that differ from them)
template <typename Scalar, typename Phi, typename X0, typename LossGradient, typename OutputGradients>
AdjointResult<Scalar> adjoint_gradient(const SelectiveSystem<Scalar, Phi>& system, const Eigen::MatrixBase<X0>& x0,
                                       detail::adjoint_identity_t<Scalar> t_end, const LossGradient& loss_gradient,
                                       const detail::adjoint_identity_t<AdjointOptions<Scalar>>& options,
                                       const std::vector<detail::adjoint_identity_t<Scalar>>& output_times,
                                       const OutputGradients& output_gradients) {
    return detail::adjoint_gradient(system, x0, t_end, loss_gradient, options, output_times, output_gradients);
}

}  // namespace ssmdyn
