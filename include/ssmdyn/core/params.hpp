#pragma once
/// \file params.hpp
/// Parameters of one selective-scan (S6) layer, shared by every layer of the deep model.

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <Eigen/Core>

#include "state.hpp"

namespace ssmdyn {
namespace detail {

/// The value most of `votes` agree on (ties go to the earliest): shape checks use it to
/// blame the one field that disagrees with the others.
template <typename T>
T majority(std::initializer_list<T> votes) {
    T best = *votes.begin();
    std::ptrdiff_t best_count = 0;
    for (T v : votes) {
        const auto count = std::count(votes.begin(), votes.end(), v);
        if (count > best_count) best = v, best_count = count;
    }
    return best;
}

}  // namespace detail

/// The std::invalid_argument that S6Params::validate() throws: the message names the
/// field, and field() gives it to code that wants to add its own context (e.g. which
/// checkpoint tensor the field came from) without parsing the message.
class InvalidParameter : public std::invalid_argument {
public:
    InvalidParameter(std::string field, const std::string& message)
        : std::invalid_argument(message), m_field(std::move(field)) {}
    /// The field at fault: "S_B", "S_C", "S_Delta", "S_Delta_up", "S_Delta_down",
    /// "delta_bias" or "A".
    const std::string& field() const { return m_field; }

private:
    std::string m_field;
};

/// The paper's one-dimensional system (DESIGN.md §2), by name, so that no two functions
/// can take its four numbers in different orders:
/// \f[ \frac{dx_l}{dt} = \mu\, x_l \sum_{j\le l} x_j^2\, \Delta(x_j)\,
///     e^{-a \sum_{k=j+1}^{l} \Delta(x_k)},\qquad \Delta(u) = \varphi(s\,u + b). \f]
/// Aggregate: `OneDimensional<double>{mu, s, a, b}` or set the fields by name.
template <typename Scalar = double>
struct OneDimensional {
    /// The input-output scalar μ = S_C S_B.
    Scalar mu = Scalar(0);
    /// The step-size slope S_Δ.
    Scalar s = Scalar(0);
    /// The decay rate, A = −a; must be > 0.
    Scalar a = Scalar(1);
    /// The step-size bias b_Δ (the paper takes 0).
    Scalar b = Scalar(0);
};

/// Parameters of the S6 layer (D channels, N state dimensions per channel).
///
/// For token x_l (a D-vector): B_l = S_B x_l, C_l = S_C x_l, and the step size of channel d
/// is Δ_l^d = φ((S_Δ x_l + b_Δ)_d) with φ = softplus by default. The layer is
/// \f[ y_l^d = \sum_{j\le l}\Big[\sum_n C_{l,n}\, e^{A_{d,n}\sum_{k=j+1}^{l}\Delta_k^d}\,
///     B_{j,n}\Big]\Delta_j^d x_j^d . \f]
///
/// S_Δ comes in one of two forms. Dense: `S_Delta` is D×D and the factors are empty.
/// Low rank, as in every Mamba checkpoint (dt_proj.weight times the first dt_rank rows of
/// x_proj.weight): S_Δ = S_Delta_up · S_Delta_down with S_Delta_up D×R, S_Delta_down R×D,
/// and `S_Delta` empty. The library never multiplies the factors out where it can avoid it
/// (the scan, its derivatives and the reports use them as they are), so a d_inner = 1536
/// layer costs 2·R·D numbers and 2·R·D multiply-adds per token instead of D².
///
/// D = S_B.cols() and N = S_B.rows() once validate() has checked that the shapes agree.
template <typename Scalar = double>
struct S6Params {
    using Matrix = MatrixX<Scalar>;
    using Vector = VectorX<Scalar>;

    /// Input projection, N×D: B_l = S_B x_l.
    Matrix S_B;
    /// Output projection, N×D: C_l = S_C x_l.
    Matrix S_C;
    /// Step-size projection, D×D: Δ_l = φ(S_Δ x_l + b_Δ). Empty when S_Δ is low rank.
    Matrix S_Delta;
    /// Step-size bias b_Δ, length D (Mamba's dt_proj bias; the paper takes 0).
    Vector delta_bias;
    /// State decay, D×N, every entry strictly negative (Mamba: A = −exp(A_log)).
    Matrix A;
    /// Low-rank S_Δ = S_Delta_up · S_Delta_down: D×R (Mamba's dt_proj.weight). Empty when
    /// dense. (Last, so that aggregate initialisation of the first five keeps its meaning.)
    Matrix S_Delta_up{};
    /// Low-rank S_Δ = S_Delta_up · S_Delta_down: R×D (x_proj.weight's first R rows). Empty when dense.
    Matrix S_Delta_down{};

    /// Token dimension D.
    Eigen::Index dim() const { return S_B.cols(); }
    /// State dimension N per channel.
    Eigen::Index state_dim() const { return S_B.rows(); }

    /// The input-output matrix \f$ \mu = S_C^\top S_B \f$ (D×D).
    Matrix mu() const { return S_C.transpose() * S_B; }

    /// Whether S_Δ is kept as its low-rank factors (S_Delta_up, S_Delta_down).
    bool low_rank_step() const { return S_Delta_up.size() != 0 || S_Delta_down.size() != 0; }
    /// Rows of the stacked step projection: R when S_Δ is low rank, else D.
    Eigen::Index step_rows() const { return low_rank_step() ? S_Delta_down.rows() : S_Delta.rows(); }
    /// S_Δ as a dense D×D matrix (multiplied out when low rank: D² numbers, so only for
    /// code that needs the matrix itself, e.g. a Jacobian's D×D blocks).
    Matrix step_matrix() const { return low_rank_step() ? Matrix(S_Delta_up * S_Delta_down) : S_Delta; }
    /// S_Δ X for D×L tokens X, without forming S_Δ.
    template <typename Derived>
    Matrix step_projection(const Eigen::MatrixBase<Derived>& X) const {
        if (!low_rank_step()) return S_Delta * X;
        return S_Delta_up * (S_Delta_down * X);
    }

    /// The same parameters in another scalar type (e.g. float, for speed: see README).
    template <typename Other>
    S6Params<Other> cast() const {
        S6Params<Other> p;
        p.S_B = S_B.template cast<Other>();
        p.S_C = S_C.template cast<Other>();
        p.S_Delta = S_Delta.template cast<Other>();
        p.S_Delta_up = S_Delta_up.template cast<Other>();
        p.S_Delta_down = S_Delta_down.template cast<Other>();
        p.delta_bias = delta_bias.template cast<Other>();
        p.A = A.template cast<Other>();
        return p;
    }

    /// The paper's one-dimensional case (see OneDimensional): D = N = 1, S_C = [1],
    /// S_B = [μ], S_Δ = [s], b_Δ = [b], A = [−a]. Validated (a must be > 0).
    static S6Params one_dimensional(const OneDimensional<Scalar>& system) {
        S6Params p;
        p.S_B = Matrix::Constant(1, 1, system.mu);
        p.S_C = Matrix::Constant(1, 1, Scalar(1));
        p.S_Delta = Matrix::Constant(1, 1, system.s);
        p.delta_bias = Vector::Constant(1, system.b);
        p.A = Matrix::Constant(1, 1, -system.a);
        p.validate();
        return p;
    }

    /// Throws std::invalid_argument naming the field and the problem when a shape is
    /// inconsistent, an entry is not finite, or an entry of A is not strictly negative.
    void validate() const {
        // D and N by majority over the fields that carry them, so that one malformed
        // field is the one blamed (ties go to S_B).
        const bool low_rank = low_rank_step();
        const Eigen::Index d =
            low_rank ? detail::majority<Eigen::Index>({S_B.cols(), S_C.cols(), S_Delta_up.rows(), S_Delta_down.cols(),
                                                       delta_bias.size(), A.rows()})
                     : detail::majority<Eigen::Index>({S_B.cols(), S_C.cols(), S_Delta.rows(), S_Delta.cols(),
                                                       delta_bias.size(), A.rows()});
        const Eigen::Index n = detail::majority<Eigen::Index>({S_B.rows(), S_C.rows(), A.cols()});
        if (n < 1 || d < 1)
            fail("S_B", "is " + shape(S_B) + "; need N >= 1 rows and D >= 1 columns");
        expect_shape("S_B", S_B, n, d, "N x D");
        expect_shape("S_C", S_C, n, d, "N x D");
        if (low_rank) {
            if (S_Delta.size() != 0)
                fail("S_Delta", "is given (" + shape(S_Delta) +
                                    ") together with S_Delta_up and S_Delta_down; give one form of S_Delta");
            const Eigen::Index r = S_Delta_down.rows();
            if (r < 1) fail("S_Delta_down", "is " + shape(S_Delta_down) + "; need R >= 1 rows and D columns");
            expect_shape("S_Delta_up", S_Delta_up, d, r, "D x R");
            expect_shape("S_Delta_down", S_Delta_down, r, d, "R x D");
        } else {
            expect_shape("S_Delta", S_Delta, d, d, "D x D");
        }
        if (delta_bias.size() != d)
            fail("delta_bias", "has " + std::to_string(delta_bias.size()) + " entries, expected D = " +
                                   std::to_string(d));
        expect_shape("A", A, d, n, "D x N");
        expect_finite("S_B", S_B);
        expect_finite("S_C", S_C);
        expect_finite("S_Delta", S_Delta);
        expect_finite("S_Delta_up", S_Delta_up);
        expect_finite("S_Delta_down", S_Delta_down);
        expect_finite("delta_bias", delta_bias);
        expect_finite("A", A);
        for (Eigen::Index j = 0; j < A.cols(); ++j)
            for (Eigen::Index i = 0; i < A.rows(); ++i)
                if (!(A(i, j) < Scalar(0))) {
                    std::ostringstream os;
                    os << "A(" << i << "," << j << ") = " << A(i, j) << " must be < 0";
                    throw InvalidParameter("A", os.str());
                }
    }

private:
    [[noreturn]] static void fail(const std::string& field, const std::string& what) {
        throw InvalidParameter(field, field + " " + what);
    }
    template <typename M>
    static std::string shape(const M& m) {
        return std::to_string(m.rows()) + "x" + std::to_string(m.cols());
    }
    template <typename M>
    static void expect_shape(const char* field, const M& m, Eigen::Index rows, Eigen::Index cols,
                             const char* meaning) {
        if (m.rows() != rows || m.cols() != cols)
            fail(field, "has shape " + shape(m) + " but must be " + meaning + " = " +
                            std::to_string(rows) + "x" + std::to_string(cols));
    }
    template <typename M>
    static void expect_finite(const char* field, const M& m) {
        for (Eigen::Index j = 0; j < m.cols(); ++j)
            for (Eigen::Index i = 0; i < m.rows(); ++i)
                if (!std::isfinite(static_cast<double>(m(i, j))))
                    throw InvalidParameter(field, std::string(field) + "(" + std::to_string(i) + "," +
                                                      std::to_string(j) + ") is not finite");
    }
};

/// Check a flat token state against the parameters: non-empty, length a multiple of D,
/// every entry finite. Throws std::invalid_argument naming "tokens" and the problem.
template <typename Scalar, typename Derived>
void validate_tokens(const S6Params<Scalar>& params, const Eigen::DenseBase<Derived>& x) {
    const Eigen::Index d = params.dim();
    if (x.size() == 0) throw std::invalid_argument("tokens is empty; need at least one token");
    if (d < 1 || x.size() % d != 0)
        throw std::invalid_argument("tokens has " + std::to_string(x.size()) +
                                    " entries, not a multiple of D = " + std::to_string(d));
    for (Eigen::Index i = 0; i < x.size(); ++i)
        if (!std::isfinite(static_cast<double>(x(i))))
            throw std::invalid_argument("tokens: token " + std::to_string(i / d + 1) +
                                        ", channel " + std::to_string(i % d + 1) +
                                        " is not finite");
}

}  // namespace ssmdyn
