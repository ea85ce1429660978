// Eigen reports a heap allocation inside a no-malloc region through eigen_assert; make
// that assertion throw (in every build type) so the test can see it.
#include <stdexcept>
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
    do {                   \
        if (!(x)) throw std::runtime_error("Eigen assertion failed: " #x); \
    } while (0)

#include "support.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <ssmdyn/core/scan_derivatives.hpp>
#include <ssmdyn/core/selective_scan.hpp>

// selective_scan_jvp and selective_scan_vjp refuse, at compile time, a step-size map without
// `Scalar derivative(Scalar z) const` (a static_assert with a full-sentence message). A
// compile-time error cannot be a run-time test; it was checked by hand with a map that has
// only operator().

namespace {

using Matrix = Eigen::MatrixXd;
using Vector = Eigen::VectorXd;
using Options = ssmdyn::LayerOptions<double>;
using Gradients = ssmdyn::S6Gradients<double>;

struct Size {
    Eigen::Index L, D, N;
};

/// One layer with its options, tokens X and an output gradient W (the loss is <W, S6(X)>).
struct Problem {
    ssmdyn::S6Params<double> p;
    Options o;
    Matrix X, W;
};

/// The options of combination `extras` (0..7): bit 0 zero-order hold, bit 1 skip, bit 2 gate.
Options make_options(std::mt19937& rng, Eigen::Index D, Eigen::Index L, int extras) {
    Options o;
    if (extras & 1) o.discretization = ssmdyn::Discretization::ZeroOrderHold;
    if (extras & 2) o.D_skip = test::random_tokens(rng, D, 1);
    if (extras & 4) o.gate = test::random_tokens(rng, D, L);
    return o;
}

Problem make_problem(std::mt19937& rng, Size s, int extras = 0) {
    Problem q;
    q.p = test::random_params(rng, s.D, s.N);
    q.o = make_options(rng, s.D, s.L, extras);
    q.X = test::random_tokens(rng, s.D, s.L);
    q.W = test::random_tokens(rng, s.D, s.L);
    return q;
}

/// S_Δ replaced by random factors of rank R (S_Delta emptied).
void make_low_rank(std::mt19937& rng, Problem& q, Eigen::Index R) {
    const Eigen::Index D = q.p.dim();
    q.p.S_Delta_up = test::random_tokens(rng, D, R) / std::sqrt(double(R));
    q.p.S_Delta_down = test::random_tokens(rng, R, D) / std::sqrt(double(D));
    q.p.S_Delta.resize(0, 0);
}

std::string describe(int extras) {
    std::string s = (extras & 1) ? "zero-order hold" : "Mamba discretisation";
    if (extras & 2) s += " + skip";
    if (extras & 4) s += " + gate";
    return s;
}

Matrix layer(const Problem& q) {
    Matrix Y(q.X.rows(), q.X.cols());
    ssmdyn::selective_scan(q.p, ssmdyn::Softplus{}, q.X, Y, q.o);
    return Y;
}

double loss(const Problem& q) { return (layer(q).array() * q.W.array()).sum(); }

Matrix jvp(const Problem& q, const Matrix& V) {
    Matrix dY(q.X.rows(), q.X.cols());
    ssmdyn::selective_scan_jvp(q.p, ssmdyn::Softplus{}, q.X, V, dY, q.o);
    return dY;
}

/// A named array inside a Problem or a gradient, seen as a flat vector.
struct Field {
    std::string name;
    double* data;
    Eigen::Index size;
    Eigen::Map<Vector> vec() const { return {data, size}; }
};

/// The inputs the VJP differentiates, in one order: X, then the parameters, then the
/// options that are present.
std::vector<Field> inputs(Problem& q) {
    std::vector<Field> f = {{"X", q.X.data(), q.X.size()},
                            {"S_B", q.p.S_B.data(), q.p.S_B.size()},
                            {"S_C", q.p.S_C.data(), q.p.S_C.size()},
                            {"S_Delta", q.p.S_Delta.data(), q.p.S_Delta.size()},
                            {"delta_bias", q.p.delta_bias.data(), q.p.delta_bias.size()},
                            {"A", q.p.A.data(), q.p.A.size()}};
    if (q.p.low_rank_step()) {
        f[3] = {"S_Delta_up", q.p.S_Delta_up.data(), q.p.S_Delta_up.size()};
        f.push_back({"S_Delta_down", q.p.S_Delta_down.data(), q.p.S_Delta_down.size()});
    }
    if (q.o.D_skip.size()) f.push_back({"D_skip", q.o.D_skip.data(), q.o.D_skip.size()});
    if (q.o.gate.size()) f.push_back({"gate", q.o.gate.data(), q.o.gate.size()});
    return f;
}

/// The VJP's outputs in the order of inputs().
std::vector<Field> outputs(Matrix& gX, Gradients& g) {
    std::vector<Field> f = {{"X", gX.data(), gX.size()},
                            {"S_B", g.S_B.data(), g.S_B.size()},
                            {"S_C", g.S_C.data(), g.S_C.size()},
                            {"S_Delta", g.S_Delta.data(), g.S_Delta.size()},
                            {"delta_bias", g.delta_bias.data(), g.delta_bias.size()},
                            {"A", g.A.data(), g.A.size()}};
    if (g.S_Delta_down.size()) {
        f[3] = {"S_Delta_up", g.S_Delta_up.data(), g.S_Delta_up.size()};
        f.push_back({"S_Delta_down", g.S_Delta_down.data(), g.S_Delta_down.size()});
    }
    if (g.D_skip.size()) f.push_back({"D_skip", g.D_skip.data(), g.D_skip.size()});
    if (g.gate.size()) f.push_back({"gate", g.gate.data(), g.gate.size()});
    return f;
}

/// gX and the gradients of <W, S6(X)>.
std::pair<Matrix, Gradients> vjp(const Problem& q) {
    Matrix gX(q.X.rows(), q.X.cols());
    Gradients g;
    ssmdyn::selective_scan_vjp(q.p, ssmdyn::Softplus{}, q.X, q.W, gX, g, q.o);
    return {gX, g};
}

/// ||a − b|| / ||b||, with an absolute floor for a reference that is (close to) zero.
double norm_err(const Eigen::Ref<const Vector>& a, const Eigen::Ref<const Vector>& b, double floor = 1e-300) {
    return (a - b).norm() / std::max(b.norm(), floor);
}

// ---- Forward-mode dual numbers through a templated copy of the O(L²) double sum -------

struct Dual {
    double v = 0, d = 0;  // value and tangent
    Dual() = default;
    Dual(double value, double tangent = 0) : v(value), d(tangent) {}
};
Dual operator+(Dual a, Dual b) { return {a.v + b.v, a.d + b.d}; }
Dual operator-(Dual a) { return {-a.v, -a.d}; }
Dual operator*(Dual a, Dual b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }
Dual operator/(Dual a, Dual b) { return {a.v / b.v, (a.d * b.v - a.v * b.d) / (b.v * b.v)}; }
Dual& operator+=(Dual& a, Dual b) { return a = a + b; }
Dual exp(Dual a) { const double e = std::exp(a.v); return {e, e * a.d}; }
Dual expm1(Dual a) { return {std::expm1(a.v), std::exp(a.v) * a.d}; }
Dual log1p(Dual a) { return {std::log1p(a.v), a.d / (1 + a.v)}; }

/// A column-major grid of any number type.
template <typename T>
struct Grid {
    Eigen::Index rows = 0, cols = 0;
    std::vector<T> v;
    Grid(Eigen::Index r, Eigen::Index c) : rows(r), cols(c), v(std::size_t(r * c)) {}
    T& operator()(Eigen::Index i, Eigen::Index j) { return v[std::size_t(i + j * rows)]; }
    const T& operator()(Eigen::Index i, Eigen::Index j) const { return v[std::size_t(i + j * rows)]; }
};

/// Every input of the layer as duals: the value from `q`, the tangent from `seed` (same layout).
struct DualLayer {
    Grid<Dual> X, S_B, S_C, S_Delta, bias, A, D_skip, gate;
    bool zoh, skip, gated;
};

Grid<Dual> dual_grid(const Field& value, const Field& tangent, Eigen::Index rows) {
    Grid<Dual> g(rows, value.size / std::max<Eigen::Index>(rows, 1));
    for (Eigen::Index i = 0; i < value.size; ++i) g.v[std::size_t(i)] = Dual(value.data[i], tangent.data[i]);
    return g;
}

/// The dual layer of q with tangents `seed` (a copy of q whose arrays hold the tangents).
DualLayer dual_layer(Problem& q, Problem& seed) {
    const auto v = inputs(q), t = inputs(seed);
    const Eigen::Index D = q.p.dim(), N = q.p.state_dim();
    DualLayer l{dual_grid(v[0], t[0], D), dual_grid(v[1], t[1], N), dual_grid(v[2], t[2], N),
                dual_grid(v[3], t[3], D), dual_grid(v[4], t[4], D), dual_grid(v[5], t[5], D),
                Grid<Dual>(0, 0), Grid<Dual>(0, 0), q.o.discretization == ssmdyn::Discretization::ZeroOrderHold,
                q.o.D_skip.size() != 0, q.o.gate.size() != 0};
    std::size_t k = 6;
    if (l.skip) {
        l.D_skip = dual_grid(v[k], t[k], D);
        ++k;
    }
    if (l.gated) l.gate = dual_grid(v[k], t[k], D);
    return l;
}

/// The layer from its defining double sum (DESIGN.md §1), for any number type T:
/// y_l^d = Σ_{j≤l} Σ_n C_{l,n} exp(A_{d,n} Σ_{k=j+1..l} Δ_k^d) B_{j,n} β_{j,d,n} x_j^d with
/// β = Δ_j^d (Mamba) or expm1(A_{d,n} Δ_j^d)/A_{d,n} (zero-order hold), softplus = log1p∘exp,
/// then + D_skip ⊙ x_l and ⊙ z/(1 + e^{−z}). Written without reference to the library.
template <typename T>
Grid<T> double_sum(const DualLayer& p) {
    const Eigen::Index D = p.X.rows, L = p.X.cols, N = p.S_B.rows;
    Grid<T> Delta(D, L), B(N, L), C(N, L), Y(D, L);
    for (Eigen::Index l = 0; l < L; ++l) {
        for (Eigen::Index d = 0; d < D; ++d) {
            T z = p.bias(d, 0);
            for (Eigen::Index k = 0; k < D; ++k) z += p.S_Delta(d, k) * p.X(k, l);
            Delta(d, l) = log1p(exp(z));
        }
        for (Eigen::Index n = 0; n < N; ++n) {
            T b = 0.0, c = 0.0;
            for (Eigen::Index k = 0; k < D; ++k) b += p.S_B(n, k) * p.X(k, l), c += p.S_C(n, k) * p.X(k, l);
            B(n, l) = b;
            C(n, l) = c;
        }
    }
    for (Eigen::Index l = 0; l < L; ++l)
        for (Eigen::Index d = 0; d < D; ++d) {
            T y = 0.0, elapsed = 0.0;
            for (Eigen::Index j = l; j >= 0; --j) {
                if (j < l) elapsed += Delta(d, j + 1);
                for (Eigen::Index n = 0; n < N; ++n) {
                    const T a = p.A(d, n);
                    const T beta = p.zoh ? expm1(a * Delta(d, j)) / a : Delta(d, j);
                    y += C(n, l) * exp(a * elapsed) * B(n, j) * beta * p.X(d, j);
                }
            }
            if (p.skip) y += p.D_skip(d, 0) * p.X(d, l);
            if (p.gated) y = y * p.gate(d, l) / (1.0 + exp(-p.gate(d, l)));
            Y(d, l) = y;
        }
    return Y;
}

/// A problem of the same shape as q with every array zero: the tangents to fill in.
Problem zero_like(const Problem& q) {
    Problem z = q;
    for (const Field& f : inputs(z)) f.vec().setZero();
    return z;
}

/// The tangent of the double sum and, beside it, <W, tangent>.
Matrix dual_tangent(Problem& q, Problem& seed) {
    const Grid<Dual> Y = double_sum<Dual>(dual_layer(q, seed));
    Matrix T(Y.rows, Y.cols);
    for (Eigen::Index i = 0; i < T.size(); ++i) T(i) = Y.v[std::size_t(i)].d;
    return T;
}

const std::vector<Size> kSizes = {{1, 1, 1}, {1, 3, 2}, {7, 1, 1}, {6, 5, 4}, {17, 9, 3}, {33, 17, 2}};

}  // namespace

TEST_CASE("softplus' derivative is the sigmoid, stable at both ends, and its array form agrees") {
    const ssmdyn::Softplus phi;
    for (double z : {-30.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 5.0, 30.0}) {
        CAPTURE(z);
        CHECK(test::rel_err(phi.derivative(z), std::exp(z) / (1 + std::exp(z))) < 1e-15);
        const double h = 1e-5;  // central difference of softplus itself
        CHECK(test::rel_err(phi.derivative(z), (phi(z + h) - phi(z - h)) / (2 * h)) < 1e-9);
    }
    CHECK(test::rel_err(phi.derivative(-700.0), std::exp(-700.0)) < 1e-15);  // no 0, no overflow
    CHECK(phi.derivative(800.0) == 1.0);
    CHECK(phi.derivative(-800.0) == 0.0);
    CHECK(phi.derivative(0.0) == 0.5);
    STATIC_REQUIRE(ssmdyn::detail::has_scalar_derivative<ssmdyn::Softplus, double>::value);
    STATIC_REQUIRE(ssmdyn::detail::has_vectorized_derivative<ssmdyn::Softplus, Eigen::ArrayXd>::value);

    Eigen::ArrayXd z(20001 + 3);
    z << Eigen::ArrayXd::LinSpaced(20001, -708.0, 760.0), 0.0, -1e-300, 1e-300;
    const Eigen::ArrayXd fast = phi.vectorized_derivative(z);
    for (Eigen::Index i = 0; i < z.size(); ++i) CHECK(test::rel_err(fast(i), phi.derivative(z(i))) < 1e-15);
    Eigen::ArrayXd far(3), far_fast(3);
    far << -709.5, -745.0, -2000.0;  // below Eigen's exp range: tiny, not exact
    far_fast = phi.vectorized_derivative(far);
    for (Eigen::Index i = 0; i < far.size(); ++i) CHECK(std::abs(far_fast(i) - phi.derivative(far(i))) < 1e-307);
}

TEST_CASE("the JVP equals a central difference of the scan") {
    std::mt19937 rng(101);
    for (Size s : kSizes)
        for (int extras = 0; extras < 8; ++extras) {
            CAPTURE(s.L, s.D, s.N, describe(extras));
            const Problem q = make_problem(rng, s, extras);
            const Matrix V = test::random_tokens(rng, s.D, s.L);
            const double h = 1e-6;
            Problem plus = q, minus = q;
            plus.X += h * V;
            minus.X -= h * V;
            const Matrix fd = (layer(plus) - layer(minus)) / (2 * h);
            const Matrix dY = jvp(q, V);
            CHECK((dY - fd).norm() <= 1e-6 * fd.norm());
        }
}

/// Every VJP output (gX and the gradients g of q's loss) against central differences of
/// the loss, input by input, entry by entry.
void check_by_central_differences(Problem& q, Matrix& gX, Gradients& g) {
    const auto got = outputs(gX, g);
    const auto in = inputs(q);
    REQUIRE(got.size() == in.size());
    for (std::size_t k = 0; k < in.size(); ++k) {
        CAPTURE(in[k].name);
        REQUIRE(got[k].size == in[k].size);
        Vector fd(in[k].size);
        for (Eigen::Index i = 0; i < in[k].size; ++i) {
            double& theta = in[k].data[i];
            const double old = theta, h = 1e-6 * std::max(1.0, std::abs(old));
            theta = old + h;
            const double up = loss(q);
            theta = old - h;
            const double down = loss(q);
            theta = old;
            fd(i) = (up - down) / (2 * h);
        }
        // The floor: a gradient that is exactly zero (A at L = 1, where h_0 = 0)
        // is matched by differences of rounding size.
        CHECK(norm_err(got[k].vec(), fd, 1e-3) <= 1e-6);
    }
}

TEST_CASE("the VJP's gX and every parameter gradient equal central differences, entry by entry") {
    std::mt19937 rng(102);
    for (Size s : kSizes)
        for (int extras = 0; extras < 8; ++extras) {
            CAPTURE(s.L, s.D, s.N, describe(extras));
            Problem q = make_problem(rng, s, extras);
            auto [gX, g] = vjp(q);
            check_by_central_differences(q, gX, g);
        }
}

TEST_CASE("the JVP equals the tangent of the O(L^2) double sum in dual numbers") {
    std::mt19937 rng(103);
    for (Size s : {Size{1, 1, 1}, Size{5, 3, 2}, Size{16, 8, 5}, Size{17, 9, 3}, Size{40, 4, 4}})
        for (int extras = 0; extras < 8; ++extras) {
            CAPTURE(s.L, s.D, s.N, describe(extras));
            Problem q = make_problem(rng, s, extras);
            Problem seed = zero_like(q);
            seed.X = test::random_tokens(rng, s.D, s.L);
            const Matrix truth = dual_tangent(q, seed);
            CHECK(test::max_rel_err(jvp(q, seed.X), truth) < 1e-12);
        }
}

TEST_CASE("every VJP output equals the tangents of the O(L^2) double sum, entry by entry") {
    // Seeding one input entry at a time with tangent 1, <W, tangent> is that entry of the
    // gradient, exact to rounding: no step size to choose.
    std::mt19937 rng(104);
    for (Size s : {Size{1, 1, 1}, Size{4, 3, 2}, Size{17, 5, 3}})
        for (int extras = 0; extras < 8; ++extras) {
            CAPTURE(s.L, s.D, s.N, describe(extras));
            Problem q = make_problem(rng, s, extras);
            auto [gX, g] = vjp(q);
            const auto got = outputs(gX, g);
            Problem seed = zero_like(q);
            const auto in = inputs(seed);
            double scale = 0;  // the size of the whole gradient, for fields that are zero
            for (const Field& f : got) scale = std::max(scale, f.vec().norm());
            for (std::size_t k = 0; k < in.size(); ++k) {
                CAPTURE(in[k].name);
                Vector truth(in[k].size);
                for (Eigen::Index i = 0; i < in[k].size; ++i) {
                    in[k].data[i] = 1;
                    truth(i) = (dual_tangent(q, seed).array() * q.W.array()).sum();
                    in[k].data[i] = 0;
                }
                CHECK(norm_err(got[k].vec(), truth, 1e-3 * scale) <= 1e-12);
            }
        }
}

TEST_CASE("the VJP agrees with the double sum along random directions of each input, over many chunks") {
    // L up to 100 walks the reverse scan through several checkpointed chunks (of 16).
    std::mt19937 rng(105);
    for (Size s : {Size{15, 3, 2}, Size{16, 3, 2}, Size{33, 4, 3}, Size{100, 3, 2}})
        for (int extras : {0, 1, 6, 7}) {
            CAPTURE(s.L, s.D, s.N, describe(extras));
            Problem q = make_problem(rng, s, extras);
            auto [gX, g] = vjp(q);
            const auto got = outputs(gX, g);
            Problem seed = zero_like(q);
            const auto in = inputs(seed);
            for (std::size_t k = 0; k < in.size(); ++k) {
                CAPTURE(in[k].name);
                const Vector direction = test::random_tokens(rng, in[k].size, 1);
                in[k].vec() = direction;
                const Matrix tangent = dual_tangent(q, seed);
                in[k].vec().setZero();
                const double lhs = (tangent.array() * q.W.array()).sum(), rhs = got[k].vec().dot(direction);
                const double terms = (got[k].vec().array() * direction.array()).abs().sum();
                CHECK(std::abs(lhs - rhs) <= 1e-12 * terms);
            }
        }
}

TEST_CASE("structured decays (equal per channel, harmonic) give the same derivatives as the double sum") {
    std::mt19937 rng(106);
    for (Size s : {Size{9, 5, 3}, Size{20, 17, 6}})
        for (int layout = 0; layout < 2; ++layout)
            for (int extras : {0, 6}) {
                CAPTURE(s.L, s.D, s.N, layout, describe(extras));
                Problem q = make_problem(rng, s, extras);
                for (Eigen::Index n = 1; n < s.N; ++n)
                    q.p.A.col(n) = (layout == 0 ? 1.0 : double(n + 1)) * q.p.A.col(0);
                REQUIRE(ssmdyn::detail::decay_pattern(q.p.A) ==
                        (layout == 0 ? ssmdyn::detail::DecayPattern::Equal : ssmdyn::detail::DecayPattern::Harmonic));
                Problem seed = zero_like(q);
                seed.X = test::random_tokens(rng, s.D, s.L);
                seed.p.A = test::random_tokens(rng, s.D, s.N);
                const Matrix tangent = dual_tangent(q, seed);
                // The JVP differentiates in X only; the A part is checked through the VJP.
                Problem seed_x = zero_like(q);
                seed_x.X = seed.X;
                CHECK(test::max_rel_err(jvp(q, seed.X), dual_tangent(q, seed_x)) < 1e-12);
                auto [gX, g] = vjp(q);
                const double lhs = (tangent.array() * q.W.array()).sum();
                const double rhs = (gX.array() * seed.X.array()).sum() + (g.A.array() * seed.p.A.array()).sum();
                CHECK(std::abs(lhs - rhs) <= 1e-12 * (std::abs(lhs) + std::abs(rhs)));
            }
}

TEST_CASE("the dot-product identity <JVP v, w> = <v, VJP w> holds to rounding") {
    std::mt19937 rng(107);
    // Long sequences take the reverse scan's larger chunks (32 beyond L = 512, 64 beyond 2048).
    for (Size s : {Size{1, 1, 1}, Size{1, 16, 16}, Size{17, 9, 3}, Size{100, 5, 4}, Size{600, 16, 16},
                   Size{2100, 3, 2}})
        for (int extras = 0; extras < 8; ++extras) {
            CAPTURE(s.L, s.D, s.N, describe(extras));
            const Problem q = make_problem(rng, s, extras);
            const Matrix V = test::random_tokens(rng, s.D, s.L);
            // The flat-state forms (token_matrix views) are accepted too.
            const ssmdyn::StateVector<double> v = ssmdyn::to_state(V);
            ssmdyn::StateVector<double> jv(v.size());
            ssmdyn::selective_scan_jvp(q.p, ssmdyn::Softplus{}, q.X, ssmdyn::token_matrix(v, s.D),
                                       ssmdyn::token_matrix(jv, s.D), q.o);
            const Matrix dY = ssmdyn::token_matrix(jv, s.D);
            const Matrix gX = vjp(q).first;
            // Relative to the sum of the terms' magnitudes, the scale at which rounding acts
            // (the sum itself may cancel).
            const double lhs = (dY.array() * q.W.array()).sum(), rhs = (V.array() * gX.array()).sum();
            const double terms = std::max((dY.array() * q.W.array()).abs().sum(), (V.array() * gX.array()).abs().sum());
            CHECK(std::abs(lhs - rhs) <= 1e-12 * terms);
        }
}

namespace {
struct Exponential {  // a user map with the scalar forms only: Δ = e^z
    double operator()(double z) const { return std::exp(z); }
    double derivative(double z) const { return std::exp(z); }
};
}  // namespace

TEST_CASE("a user step-size map with a scalar derivative only is differentiated through it") {
    STATIC_REQUIRE_FALSE(ssmdyn::detail::has_vectorized_derivative<Exponential, Eigen::ArrayXd>::value);
    std::mt19937 rng(108);
    const Size s{12, 5, 3};
    Problem q = make_problem(rng, s, 0);
    q.p.delta_bias.setConstant(-1.0);
    auto scan = [&](const Matrix& X) {
        Matrix Y(s.D, s.L);
        ssmdyn::selective_scan(q.p, Exponential{}, X, Y);
        return Y;
    };
    const Matrix V = test::random_tokens(rng, s.D, s.L);
    Matrix dY(s.D, s.L), gX(s.D, s.L);
    ssmdyn::selective_scan_jvp(q.p, Exponential{}, q.X, V, dY);
    const double h = 1e-6;
    const Matrix fd = (scan(q.X + h * V) - scan(q.X - h * V)) / (2 * h);
    CHECK((dY - fd).norm() <= 1e-6 * fd.norm());
    Gradients g;
    ssmdyn::selective_scan_vjp(q.p, Exponential{}, q.X, q.W, gX, g);
    // b_Δ by differences: the step-size map's derivative enters every parameter through it.
    Vector fd_bias(s.D);
    for (Eigen::Index d = 0; d < s.D; ++d) {
        auto p = q.p;
        p.delta_bias(d) += h;
        Matrix up(s.D, s.L), down(s.D, s.L);
        ssmdyn::selective_scan(p, Exponential{}, q.X, up);
        p.delta_bias(d) -= 2 * h;
        ssmdyn::selective_scan(p, Exponential{}, q.X, down);
        fd_bias(d) = ((up - down).array() * q.W.array()).sum() / (2 * h);
    }
    CHECK(norm_err(g.delta_bias, fd_bias) <= 1e-6);
    CHECK(std::abs((dY.array() * q.W.array()).sum() - (V.array() * gX.array()).sum()) <=
          1e-12 * (V.array() * gX.array()).abs().sum());
}

TEST_CASE("long double runs the scalar kernels and agrees with double") {
    std::mt19937 rng(109);
    const Size s{20, 5, 3};
    for (int extras : {0, 7}) {
        CAPTURE(describe(extras));
        const Problem q = make_problem(rng, s, extras);
        using LD = long double;
        const ssmdyn::S6Params<LD> p = q.p.cast<LD>();
        ssmdyn::LayerOptions<LD> o;
        o.discretization = q.o.discretization;
        o.D_skip = q.o.D_skip.cast<LD>();
        o.gate = q.o.gate.cast<LD>();
        const Matrix V = test::random_tokens(rng, s.D, s.L);
        ssmdyn::MatrixX<LD> dY(s.D, s.L), gX(s.D, s.L);
        ssmdyn::selective_scan_jvp(p, ssmdyn::Softplus{}, ssmdyn::MatrixX<LD>(q.X.cast<LD>()),
                                   ssmdyn::MatrixX<LD>(V.cast<LD>()), dY, o);
        ssmdyn::S6Gradients<LD> g;
        ssmdyn::selective_scan_vjp(p, ssmdyn::Softplus{}, ssmdyn::MatrixX<LD>(q.X.cast<LD>()),
                                   ssmdyn::MatrixX<LD>(q.W.cast<LD>()), gX, g, o);
        CHECK(test::max_rel_err(Matrix(dY.cast<double>()), jvp(q, V)) < 1e-13);
        const auto [gX_d, g_d] = vjp(q);
        CHECK(test::max_rel_err(Matrix(gX.cast<double>()), gX_d) < 1e-13);
        CHECK(test::max_rel_err(Matrix(g.A.cast<double>()), g_d.A) < 1e-13);
        CHECK(test::max_rel_err(Matrix(g.S_Delta.cast<double>()), g_d.S_Delta) < 1e-13);
    }
}

TEST_CASE("no tokens: the JVP writes nothing and every gradient is zero") {
    std::mt19937 rng(110);
    const auto p = test::random_params(rng, 3, 2);
    Matrix X(3, 0), dY(3, 0), gX(3, 0);
    ssmdyn::selective_scan_jvp(p, X, X, dY);
    Gradients g;
    ssmdyn::selective_scan_vjp(p, X, X, gX, g);
    CHECK(g.S_Delta.rows() == 3);
    CHECK(g.S_B.rows() == 2);
    CHECK(g.A.cols() == 2);
    CHECK(g.S_Delta.norm() + g.S_B.norm() + g.S_C.norm() + g.delta_bias.norm() + g.A.norm() == 0);
}

TEST_CASE("sizes that do not fit are refused with std::invalid_argument naming the argument") {
    std::mt19937 rng(111);
    const Size s{4, 3, 2};
    const Problem q = make_problem(rng, s, 0);
    Matrix good(3, 4), wrong_rows(2, 4), wrong_cols(3, 5);
    Gradients g;
    auto jvp_message = [&](const Matrix& X, const Matrix& dX, Matrix& dY, const Options& o) {
        return test::message_of([&] { ssmdyn::selective_scan_jvp(q.p, ssmdyn::Softplus{}, X, dX, dY, o); });
    };
    auto vjp_message = [&](const Matrix& X, const Matrix& gY, Matrix& gX, const Options& o) {
        return test::message_of([&] { ssmdyn::selective_scan_vjp(q.p, ssmdyn::Softplus{}, X, gY, gX, g, o); });
    };
    const Options none;
    CHECK(jvp_message(wrong_rows, wrong_rows, wrong_rows, none).find("X is 2x4") != std::string::npos);
    CHECK(jvp_message(q.X, wrong_cols, good, none).find("dX is 3x5") != std::string::npos);
    CHECK(jvp_message(q.X, q.X, wrong_rows, none).find("dY is 2x4") != std::string::npos);
    CHECK(vjp_message(wrong_rows, wrong_rows, wrong_rows, none).find("X is 2x4") != std::string::npos);
    CHECK(vjp_message(q.X, wrong_rows, good, none).find("gY is 2x4") != std::string::npos);
    CHECK(vjp_message(q.X, q.W, wrong_cols, none).find("gX is 3x5") != std::string::npos);
    Options skip;
    skip.D_skip = Vector::Ones(2);
    CHECK(jvp_message(q.X, q.X, good, skip).find("D_skip has 2 entries") != std::string::npos);
    CHECK(vjp_message(q.X, q.W, good, skip).find("D_skip has 2 entries") != std::string::npos);
    Options gate;
    gate.gate = Matrix::Ones(3, 5);
    CHECK(jvp_message(q.X, q.X, good, gate).find("gate is 3x5") != std::string::npos);
    CHECK(vjp_message(q.X, q.W, good, gate).find("gate is 3x5") != std::string::npos);
    CHECK_THROWS_AS(ssmdyn::selective_scan_jvp(q.p, q.X, wrong_cols, good), std::invalid_argument);
    CHECK(jvp_message(q.X, q.X, good, none) == "<no exception>");
}

TEST_CASE("low-rank S_Delta: every gradient equals central differences, and the chain rule of the dense layer's") {
    std::mt19937 rng(121);
    for (Size s : {Size{1, 3, 2}, Size{9, 5, 3}, Size{70, 6, 4}})
        for (Eigen::Index R : {1, 2})
            for (int extras = 0; extras < 8; ++extras) {
                CAPTURE(s.L, s.D, s.N, R, describe(extras));
                Problem q = make_problem(rng, s, extras);
                make_low_rank(rng, q, R);
                auto [gX, g] = vjp(q);
                CHECK(g.S_Delta.size() == 0);
                check_by_central_differences(q, gX, g);
                // The same layer with S_Δ multiplied out: same output, JVP and gX; the
                // factors' gradients are G·Downᵀ and Upᵀ·G for the dense gradient G.
                Problem dense = q;
                dense.p.S_Delta = q.p.step_matrix();
                dense.p.S_Delta_up.resize(0, 0);
                dense.p.S_Delta_down.resize(0, 0);
                const Matrix V = test::random_tokens(rng, s.D, s.L);
                CHECK(test::max_rel_err(layer(q), layer(dense)) < 1e-13);
                CHECK(test::max_rel_err(jvp(q, V), jvp(dense, V)) < 1e-12);
                auto [gX_dense, g_dense] = vjp(dense);
                CHECK(test::max_rel_err(gX, gX_dense) < 1e-12);
                CHECK(test::max_rel_err(g.S_Delta_up, Matrix(g_dense.S_Delta * q.p.S_Delta_down.transpose())) < 1e-12);
                CHECK(test::max_rel_err(g.S_Delta_down, Matrix(q.p.S_Delta_up.transpose() * g_dense.S_Delta)) < 1e-12);
                CHECK(test::max_rel_err(g.S_B, g_dense.S_B) < 1e-12);
                CHECK(test::max_rel_err(g.A, g_dense.A) < 1e-12);
            }
}

TEST_CASE("repeated JVP and VJP calls of the same size allocate nothing") {
    std::mt19937 rng(112);
    struct Case { Size s; int extras; bool harmonic; };
    for (Case c : {Case{{40, 6, 5}, 0, false}, Case{{4096, 16, 16}, 0, false}, Case{{4096, 16, 16}, 0, true},
                   Case{{50, 7, 3}, 7, false}, Case{{30, 5, 4}, 6, true}, Case{{300, 64, 16}, 0, false},
                   Case{{300, 64, 16}, 7, false}})
        for (bool low_rank : {false, true}) {
        CAPTURE(c.s.L, c.s.D, c.s.N, describe(c.extras), c.harmonic, low_rank);
        Problem q = make_problem(rng, c.s, c.extras);
        if (low_rank) make_low_rank(rng, q, 4);
        if (c.harmonic)
            for (Eigen::Index n = 0; n < c.s.N; ++n) q.p.A.col(n).setConstant(-double(n + 1));
        const Matrix V = test::random_tokens(rng, c.s.D, c.s.L);
        Matrix dY(c.s.D, c.s.L), gX(c.s.D, c.s.L);
        Gradients g;
        // The first calls on this thread size the scratch and the gradients.
        ssmdyn::selective_scan_jvp(q.p, ssmdyn::Softplus{}, q.X, V, dY, q.o);
        ssmdyn::selective_scan_vjp(q.p, ssmdyn::Softplus{}, q.X, q.W, gX, g, q.o);
        Eigen::internal::set_is_malloc_allowed(false);
        CHECK_NOTHROW(ssmdyn::selective_scan_jvp(q.p, ssmdyn::Softplus{}, q.X, V, dY, q.o));
        CHECK_NOTHROW(ssmdyn::selective_scan_vjp(q.p, ssmdyn::Softplus{}, q.X, q.W, gX, g, q.o));
        CHECK_NOTHROW(ssmdyn::selective_scan_jvp(q.p, ssmdyn::Softplus{}, q.X, V, dY, q.o));
        Eigen::internal::set_is_malloc_allowed(true);
        }
    // The check is live: an allocating expression inside the region throws.
    Eigen::internal::set_is_malloc_allowed(false);
    CHECK_THROWS(Vector(7));
    Eigen::internal::set_is_malloc_allowed(true);
}
