#pragma once
/// \file projection.hpp
/// The three token projections of an S6 layer as one stacked matrix product, with S_Δ
/// dense or low rank: the one place the scan and its derivatives multiply by S_Δ.

#include <Eigen/Core>

#include "../params.hpp"
#include "../state.hpp"

namespace ssmdyn::detail {

/// Rows z = S_Δ x (D), B = S_B x (N) and C = S_C x (N) of a block of tokens.
///
/// Dense S_Δ: one product with P = [S_Δ; S_B; S_C], (D+2N)×D. Low-rank S_Δ = Up·Down: one
/// product with P = [Down; S_B; S_C], (R+2N)×D, then z = Up·(Down x), a second product of
/// R multiply-adds per output (Mamba's x_proj followed by dt_proj). The transpose and the
/// parameter gradients go the same two ways. Holds a copy of the stack (cheap next to one
/// block's product) and a pointer to Up: use it within the call that set it.
template <typename Scalar>
class StackedProjection {
public:
    /// Stacks the layer's projections (no allocation when the sizes did not change).
    void set(const S6Params<Scalar>& p) {
        m_D = p.dim();
        m_N = p.state_dim();
        m_up = p.low_rank_step() ? &p.S_Delta_up : nullptr;
        const Eigen::Index k = p.step_rows();
        m_P.resize(k + 2 * m_N, m_D);
        m_P.topRows(k) = m_up ? p.S_Delta_down : p.S_Delta;
        m_P.middleRows(k, m_N) = p.S_B;
        m_P.bottomRows(m_N) = p.S_C;
    }

    /// Rows of the projections: D + 2N.
    Eigen::Index rows() const { return m_D + 2 * m_N; }
    /// Rows of the stacked matrix: D + 2N, or R + 2N when S_Δ is low rank.
    Eigen::Index stacked_rows() const { return m_P.rows(); }
    /// The stacked matrix ([S_Δ or Down; S_B; S_C]).
    const MatrixX<Scalar>& stacked() const { return m_P; }

    /// Columns of scratch that the calls below need per token block (grows the scratch
    /// only, so callers with different blocks do not resize it back and forth).
    void reserve(Eigen::Index block) {
        if (m_up && (m_inner.rows() != m_P.rows() || m_inner.cols() < block)) m_inner.resize(m_P.rows(), block);
    }

    /// proj = [S_Δ; S_B; S_C] X for D×count tokens X; proj is (D+2N)×count, not aliasing X.
    /// Uses scratch columns [scratch_col, scratch_col + count), so that threads working on
    /// different columns of one block do not share scratch.
    template <typename XDerived, typename ProjDerived>
    void apply(const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<ProjDerived>& proj_,
               Eigen::Index scratch_col = 0) {
        auto& proj = const_cast<Eigen::MatrixBase<ProjDerived>&>(proj_);
        if (!m_up) {
            proj.noalias() = m_P * X;
            return;
        }
        const Eigen::Index count = X.cols(), r = m_up->cols();
        auto inner = m_inner.middleCols(scratch_col, count);
        inner.noalias() = m_P * X;
        proj.topRows(m_D).noalias() = *m_up * inner.topRows(r);
        proj.bottomRows(2 * m_N) = inner.bottomRows(2 * m_N);
    }

    /// out += [S_Δ; S_B; S_C]ᵀ G for (D+2N)×count G: the gradient with respect to the tokens
    /// of the three projections.
    template <typename GDerived, typename OutDerived>
    void add_transpose(const Eigen::MatrixBase<GDerived>& G, const Eigen::MatrixBase<OutDerived>& out_) {
        auto& out = const_cast<Eigen::MatrixBase<OutDerived>&>(out_);
        if (!m_up) {
            out.noalias() += m_P.transpose() * G;
            return;
        }
        const Eigen::Index count = G.cols(), r = m_up->cols();
        auto inner = m_inner.leftCols(count);
        inner.topRows(r).noalias() = m_up->transpose() * G.topRows(m_D);
        inner.bottomRows(2 * m_N) = G.bottomRows(2 * m_N);
        out.noalias() += m_P.transpose() * inner;
    }

    /// The gradients of Σ_l ⟨G_l, projections of x_l⟩ with respect to the parameters, for the
    /// whole sequence X (D×L) and G ((D+2N)×L), accumulated over token blocks: S_Δ (or Up and
    /// Down), S_B and S_C are written; the other fields of `grads` are left alone.
    template <typename Gradients, typename XDerived, typename GDerived>
    void parameter_gradients(const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<GDerived>& G,
                             Eigen::Index block, MatrixX<Scalar>& GP, Gradients& grads) {
        const Eigen::Index L = X.cols(), k = m_P.rows() - 2 * m_N;
        GP.setZero(m_P.rows(), m_D);
        if (m_up) grads.S_Delta_up.setZero(m_D, k);
        for (Eigen::Index first = 0; first < L; first += block) {
            const Eigen::Index count = std::min(block, L - first);
            const auto x = X.middleCols(first, count);
            const auto g = G.middleCols(first, count);
            if (!m_up) {
                GP.noalias() += g * x.transpose();
                continue;
            }
            // z = Up·w with w = Down·x: ∂/∂Up = g_z wᵀ, ∂/∂w = Upᵀ g_z.
            auto inner = m_inner.leftCols(count);
            inner.topRows(k).noalias() = m_P.topRows(k) * x;
            grads.S_Delta_up.noalias() += g.topRows(m_D) * inner.topRows(k).transpose();
            inner.topRows(k).noalias() = m_up->transpose() * g.topRows(m_D);
            inner.bottomRows(2 * m_N) = g.bottomRows(2 * m_N);
            GP.noalias() += inner * x.transpose();
        }
        if (m_up) {
            grads.S_Delta_down = GP.topRows(k);
            grads.S_Delta.resize(0, 0);
        } else {
            grads.S_Delta = GP.topRows(k);
            grads.S_Delta_up.resize(0, 0);
            grads.S_Delta_down.resize(0, 0);
        }
        grads.S_B = GP.middleRows(k, m_N);
        grads.S_C = GP.bottomRows(m_N);
    }

private:
    MatrixX<Scalar> m_P, m_inner;
    const MatrixX<Scalar>* m_up = nullptr;
    Eigen::Index m_D = 0, m_N = 0;
};

}  // namespace ssmdyn::detail
