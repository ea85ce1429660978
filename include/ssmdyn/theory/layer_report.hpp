#pragma once
/// \file layer_report.hpp
/// What the theorems need to know about a real Mamba layer, in numbers: the spectrum of
/// the symmetric part of μ = S_Cᵀ S_B (its signs label the paper's scenarios), the rank of
/// S_Δ, the decays A and the step-size bias; and, for a prompt, the step sizes the layer
/// really took and how much it grew the tokens.
///
/// Cheap at real size (d_inner = 1536): μ has rank ≤ 2N, so its symmetric part is
/// Uᵀ K U with U = [S_B; S_C] (2N × d_inner) and K = ½[[0, I], [I, 0]]; with Uᵀ = Q R (thin
/// QR) the non-zero eigenvalues are those of the 2N × 2N matrix R K Rᵀ and the other
/// d_inner − 2N are exactly zero. Likewise S_Δ = W_dt W_δ has the singular values of
/// R_dt R_δᵀ (dt_rank × dt_rank). No d_inner × d_inner eigenproblem is solved.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#include "../core/mamba_block.hpp"
#include "classify.hpp"

namespace ssmdyn {

/// One layer's report (see the file comment).
struct LayerReport {
    Eigen::Index layer = 0;
    /// The eigenvalues of (μ + μᵀ)/2 in increasing order (all d_inner of them).
    VectorX<double> mu_sym_eigenvalues;
    double mu_sym_max = 0, mu_sym_min = 0;
    /// Eigenvalues above +tol and below −tol, tol = 64 ε max|λ| (the rest count as zero).
    Eigen::Index mu_sym_positive = 0, mu_sym_negative = 0;
    MuScenario scenario = MuScenario::Zero;
    /// Singular values of S_Δ above d_inner · ε · σ_max.
    Eigen::Index s_delta_rank = 0;
    double A_min = 0, A_max = 0, dt_bias_min = 0, dt_bias_max = 0;
    /// For a prompt (set by mamba_layer_reports with a trace): the range of Δ over channels
    /// and tokens, and the mean over tokens of ‖h after the block‖ / ‖h before it‖ (the
    /// residual stream as mamba_ssm keeps it).
    std::optional<double> delta_min, delta_max, norm_growth;
};

namespace detail {

/// Eigenvalues of Uᵀ K U (U: m × n, K: m × m symmetric), through U's thin QR when m < n.
inline VectorX<double> low_rank_sym_eigenvalues(const MatrixX<double>& U, const MatrixX<double>& K) {
    const Eigen::Index m = U.rows(), n = U.cols();
    VectorX<double> eig = VectorX<double>::Zero(n);
    if (m >= n) {
        eig = Eigen::SelfAdjointEigenSolver<MatrixX<double>>(U.transpose() * K * U, Eigen::EigenvaluesOnly).eigenvalues();
        return eig;
    }
    Eigen::HouseholderQR<MatrixX<double>> qr(U.transpose());  // n × m
    const MatrixX<double> R = qr.matrixQR().topRows(m).triangularView<Eigen::Upper>();
    const VectorX<double> small =
        Eigen::SelfAdjointEigenSolver<MatrixX<double>>(R * K * R.transpose(), Eigen::EigenvaluesOnly).eigenvalues();
    eig.head(m) = small;  // then the zeros, and sort
    std::sort(eig.data(), eig.data() + n);
    return eig;
}

/// Singular values of A·B (A: n × r, B: r × n) through the factors' QRs when r < n.
inline VectorX<double> low_rank_singular_values(const MatrixX<double>& A, const MatrixX<double>& B) {
    const Eigen::Index r = A.cols(), n = A.rows();
    if (r >= n) return Eigen::JacobiSVD<MatrixX<double>>(A * B).singularValues();
    const MatrixX<double> Ra =
        Eigen::HouseholderQR<MatrixX<double>>(A).matrixQR().topRows(r).triangularView<Eigen::Upper>();
    const MatrixX<double> Rb =
        Eigen::HouseholderQR<MatrixX<double>>(B.transpose()).matrixQR().topRows(r).triangularView<Eigen::Upper>();
    return Eigen::JacobiSVD<MatrixX<double>>(Ra * Rb.transpose()).singularValues();
}

}  // namespace detail

/// The report of one mixer (its S6 parameters and the factors of S_Δ).
template <typename Scalar>
LayerReport mamba_layer_report(const MambaMixer<Scalar>& mixer, Eigen::Index layer = 0) {
    const S6Params<Scalar>& p = mixer.s6;
    const Eigen::Index N = p.state_dim(), D = p.dim();
    LayerReport r;
    r.layer = layer;
    MatrixX<double> U(2 * N, D);
    U << p.S_B.template cast<double>(), p.S_C.template cast<double>();
    MatrixX<double> K = MatrixX<double>::Zero(2 * N, 2 * N);
    K.topRightCorner(N, N).setIdentity();  // S_Bᵀ S_C / 2 + S_Cᵀ S_B / 2
    K.bottomLeftCorner(N, N).setIdentity();
    K /= 2;
    r.mu_sym_eigenvalues = detail::low_rank_sym_eigenvalues(U, K);
    r.mu_sym_max = r.mu_sym_eigenvalues.maxCoeff();
    r.mu_sym_min = r.mu_sym_eigenvalues.minCoeff();
    const double tol = 64 * std::numeric_limits<double>::epsilon() * r.mu_sym_eigenvalues.cwiseAbs().maxCoeff();
    r.mu_sym_positive = (r.mu_sym_eigenvalues.array() > tol).count();
    r.mu_sym_negative = (r.mu_sym_eigenvalues.array() < -tol).count();
    r.scenario = detail::mu_scenario(r.mu_sym_eigenvalues);
    const VectorX<double> sigma = p.low_rank_step()
                                      ? detail::low_rank_singular_values(p.S_Delta_up.template cast<double>(),
                                                                         p.S_Delta_down.template cast<double>())
                                      : Eigen::JacobiSVD<MatrixX<double>>(p.S_Delta.template cast<double>()).singularValues();
    const double cut = double(D) * std::numeric_limits<double>::epsilon() * (sigma.size() ? sigma.maxCoeff() : 0.0);
    r.s_delta_rank = (sigma.array() > cut).count();
    r.A_min = double(p.A.minCoeff());
    r.A_max = double(p.A.maxCoeff());
    r.dt_bias_min = double(p.delta_bias.minCoeff());
    r.dt_bias_max = double(p.delta_bias.maxCoeff());
    return r;
}

/// Every layer's report; with a trace of the model on a prompt, also Δ's range and the
/// token-norm growth of each block.
template <typename Scalar>
std::vector<LayerReport> mamba_layer_reports(const MambaModel<Scalar>& model, const MambaTrace<Scalar>* trace = nullptr) {
    std::vector<LayerReport> out;
    for (std::size_t k = 0; k < model.layers.size(); ++k) {
        LayerReport r = mamba_layer_report(model.layers[k].mixer, static_cast<Eigen::Index>(k));
        if (trace != nullptr && k < trace->mixers.size() && k + 1 < trace->hidden.size()) {
            const MatrixX<Scalar>& delta = trace->mixers[k].delta;
            r.delta_min = double(delta.minCoeff());
            r.delta_max = double(delta.maxCoeff());
            const auto before = trace->hidden[k].colwise().norm().array();
            const auto after = trace->hidden[k + 1].colwise().norm().array();
            r.norm_growth = double((after / before).mean());
        }
        out.push_back(std::move(r));
    }
    return out;
}

}  // namespace ssmdyn
