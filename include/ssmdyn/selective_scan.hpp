#pragma once
/// \file selective_scan.hpp
/// The S6 layer y = S6(X) computed by the selective scan, and the O(L²) double-sum
/// formula it must equal (kept as an independent reference for tests and benchmarks).

#include <Eigen/Core>

#include "params.hpp"
#include "state.hpp"
#include "step_size.hpp"

namespace ssmdyn {
namespace detail {

/// Per-thread scratch of the scan: the hidden state h (D×N) and per-token vectors.
/// Sized once per (D, N); later calls of the same size allocate nothing.
template <typename Scalar>
struct ScanWorkspace {
    MatrixX<Scalar> h;                                 // D×N hidden state
    Eigen::Array<Scalar, Eigen::Dynamic, 1> delta, u;  // Δ_l and Δ_l ⊙ x_l (D)
    VectorX<Scalar> z, B, C;                           // S_Δ x_l + b_Δ (D), B_l and C_l (N)

    void resize(Eigen::Index d, Eigen::Index n) {
        h.resize(d, n);
        delta.resize(d);
        u.resize(d);
        z.resize(d);
        B.resize(n);
        C.resize(n);
    }

    /// One workspace per thread and scalar type: the scan stays allocation-free and a
    /// system shared between threads (e.g. passed with std::ref) needs no locking.
    static ScanWorkspace& local() {
        thread_local ScanWorkspace ws;
        return ws;
    }
};

}  // namespace detail

/// Selective scan: Y = S6(X) in O(L·D·(D+N)) time and O(D·N) extra memory.
///
/// \f[ h_l = e^{A \odot \Delta_l} \odot h_{l-1} + (\Delta_l \odot x_l)\, B_l^\top,\qquad
///     y_l = h_l\, C_l,\qquad h_0 = 0 \f]
/// (h_l is D×N; the exponential and products are entrywise, Δ_l broadcast along rows.)
///
/// \param params the layer (assumed valid: see S6Params::validate)
/// \param phi    the step-size map (see step_size.hpp)
/// \param X      D×L tokens, column l is token l
/// \param Y      D×L output, written; may not alias X
template <typename Scalar, typename StepSizeMap, typename XDerived, typename YDerived>
void selective_scan(const S6Params<Scalar>& params, const StepSizeMap& phi,
                    const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<YDerived>& Y_) {
    auto& Y = const_cast<Eigen::MatrixBase<YDerived>&>(Y_);  // Eigen's idiom for writable expressions
    const Eigen::Index n_state = params.state_dim();
    eigen_assert(X.rows() == params.dim() && Y.rows() == X.rows() && Y.cols() == X.cols());

    auto& ws = detail::ScanWorkspace<Scalar>::local();
    ws.resize(params.dim(), n_state);
    ws.h.setZero();
    for (Eigen::Index l = 0; l < X.cols(); ++l) {
        const auto x = X.col(l);
        ws.z.noalias() = params.S_Delta * x;
        ws.z += params.delta_bias;
        detail::apply_step_size(phi, ws.z.array(), ws.delta);
        ws.u = ws.delta * x.array();
        ws.B.noalias() = params.S_B * x;
        ws.C.noalias() = params.S_C * x;
        // Column n of h is contiguous over the D channels: one vectorised exp per column.
        for (Eigen::Index n = 0; n < n_state; ++n)
            ws.h.col(n).array() =
                (params.A.col(n).array() * ws.delta).exp() * ws.h.col(n).array() + ws.u * ws.B(n);
        Y.col(l).noalias() = ws.h * ws.C;
    }
}

/// Selective scan with the default step-size map (softplus).
template <typename Scalar, typename XDerived, typename YDerived>
void selective_scan(const S6Params<Scalar>& params, const Eigen::MatrixBase<XDerived>& X,
                    const Eigen::MatrixBase<YDerived>& Y) {
    selective_scan(params, Softplus{}, X, Y);
}

/// The same layer from its defining double sum, in O(L²·D·N) time:
/// \f[ y_l^d = \sum_{j\le l}\Big[\sum_n C_{l,n}\, e^{A_{d,n}\sum_{k=j+1}^{l}\Delta_k^d}\,
///     B_{j,n}\Big]\Delta_j^d x_j^d . \f]
/// Written independently of selective_scan so that each checks the other.
template <typename Scalar, typename StepSizeMap = Softplus>
MatrixX<Scalar> selective_scan_reference(const S6Params<Scalar>& params, const MatrixX<Scalar>& X,
                                         const StepSizeMap& phi = {}) {
    const Eigen::Index D = X.rows(), L = X.cols(), N = params.state_dim();
    MatrixX<Scalar> Delta(D, L), B(N, L), C(N, L);
    for (Eigen::Index l = 0; l < L; ++l) {
        for (Eigen::Index d = 0; d < D; ++d)
            Delta(d, l) = phi(Scalar(params.S_Delta.row(d).dot(X.col(l)) + params.delta_bias(d)));
        B.col(l) = params.S_B * X.col(l);
        C.col(l) = params.S_C * X.col(l);
    }
    MatrixX<Scalar> Y = MatrixX<Scalar>::Zero(D, L);
    for (Eigen::Index l = 0; l < L; ++l)
        for (Eigen::Index d = 0; d < D; ++d) {
            Scalar elapsed = 0;  // Σ_{k=j+1..l} Δ_k^d, grown as j walks down from l
            for (Eigen::Index j = l; j >= 0; --j) {
                if (j < l) elapsed += Delta(d, j + 1);
                Scalar kernel = 0;
                for (Eigen::Index n = 0; n < N; ++n)
                    kernel += C(n, l) * std::exp(params.A(d, n) * elapsed) * B(n, j);
                Y(d, l) += kernel * Delta(d, j) * X(d, j);
            }
        }
    return Y;
}

}  // namespace ssmdyn
