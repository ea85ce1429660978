#include "support.hpp"

#include <tuple>

#include <unsupported/Eigen/MatrixFunctions>

#include <ssmdyn/core/selective_scan.hpp>

TEST_CASE("the scan equals the O(L^2) double sum on random D, N, L") {
    std::mt19937 rng(12345);
    struct Size { Eigen::Index D, N, L; };
    for (Size s : {Size{1, 1, 1}, Size{1, 1, 9}, Size{1, 4, 7}, Size{3, 1, 5}, Size{2, 3, 1},
                   Size{5, 4, 33}, Size{8, 16, 20}, Size{16, 3, 64}}) {
        CAPTURE(s.D, s.N, s.L);
        const auto p = test::random_params(rng, s.D, s.N);
        const Eigen::MatrixXd X = test::random_tokens(rng, s.D, s.L);
        Eigen::MatrixXd Y(s.D, s.L);
        ssmdyn::selective_scan(p, X, Y);
        const Eigen::MatrixXd Y_ref = ssmdyn::selective_scan_reference(p, X);
        CHECK(test::max_rel_err(Y, Y_ref) < 1e-13);
    }
}

TEST_CASE("structured decays (equal per channel, harmonic) take the fast path and equal the double sum") {
    using ssmdyn::detail::DecayPattern;
    std::mt19937 rng(77);
    struct Size { Eigen::Index D, N, L; };
    // D = 5, 17, 19 leave channels outside whole SIMD packets: the scalar tail is covered too.
    for (Size s : {Size{1, 1, 6}, Size{5, 3, 40}, Size{16, 16, 64}, Size{17, 8, 33}, Size{19, 24, 50}}) {
        for (DecayPattern pattern : {DecayPattern::Equal, DecayPattern::Harmonic, DecayPattern::General}) {
            CAPTURE(s.D, s.N, s.L, int(pattern));
            auto p = test::random_params(rng, s.D, s.N);
            for (Eigen::Index n = 1; n < s.N; ++n)
                if (pattern == DecayPattern::Equal) p.A.col(n) = p.A.col(0);
                else if (pattern == DecayPattern::Harmonic) p.A.col(n) = double(n + 1) * p.A.col(0);
            const DecayPattern detected = ssmdyn::detail::decay_pattern(p.A);
            CHECK((detected == pattern || s.N == 1));
            const Eigen::MatrixXd X = test::random_tokens(rng, s.D, s.L);
            Eigen::MatrixXd Y(s.D, s.L);
            ssmdyn::selective_scan(p, X, Y);
            CHECK(test::max_rel_err(Y, ssmdyn::selective_scan_reference(p, X)) < 1e-13);
        }
    }
    // One entry off the pattern sends the layer down the general path.
    std::mt19937 rng2(78);
    auto p = test::random_params(rng2, 4, 3);
    p.A.col(1) = 2 * p.A.col(0);
    p.A.col(2) = 3 * p.A.col(0);
    CHECK(ssmdyn::detail::decay_pattern(p.A) == DecayPattern::Harmonic);
    p.A(2, 2) *= 1 + 1e-15;
    CHECK(ssmdyn::detail::decay_pattern(p.A) == DecayPattern::General);
}

TEST_CASE("the scan gives the 1-D closed form for two tokens") {
    // dx_1 = mu x1^3 Δ1;  dx_2 = mu x2 (x1^2 Δ1 e^{-a Δ2} + x2^2 Δ2)
    const double mu = -0.7, s = 0.3, a = 1.4, b = 0.2, x1 = 1.1, x2 = -0.6;
    auto p = ssmdyn::S6Params<double>::one_dimensional({mu, s, a, b});
    Eigen::MatrixXd X(1, 2), Y(1, 2);
    X << x1, x2;
    ssmdyn::selective_scan(p, X, Y);
    const double d1 = std::log1p(std::exp(s * x1 + b)), d2 = std::log1p(std::exp(s * x2 + b));
    CHECK(test::rel_err(Y(0, 0), mu * x1 * x1 * x1 * d1) < 1e-15);
    CHECK(test::rel_err(Y(0, 1), mu * x2 * (x1 * x1 * d1 * std::exp(-a * d2) + x2 * x2 * d2)) < 1e-14);
}

TEST_CASE("the scan is causal: a token only sees the tokens before it") {
    std::mt19937 rng(3);
    const auto p = test::random_params(rng, 4, 5);
    Eigen::MatrixXd X = test::random_tokens(rng, 4, 10), Y(4, 10), Y2(4, 10);
    ssmdyn::selective_scan(p, X, Y);
    X.col(7).setRandom();
    ssmdyn::selective_scan(p, X, Y2);
    CHECK(Y.leftCols(7) == Y2.leftCols(7));
    CHECK((Y.rightCols(3) - Y2.rightCols(3)).norm() > 0);
}

TEST_CASE("the scan works for long double as well") {
    std::mt19937 rng(4);
    const auto pd = test::random_params(rng, 3, 2);
    const ssmdyn::S6Params<long double> p = pd.cast<long double>();
    const Eigen::MatrixXd Xd = test::random_tokens(rng, 3, 6);
    const ssmdyn::MatrixX<long double> X = Xd.cast<long double>();
    ssmdyn::MatrixX<long double> Y(3, 6);
    ssmdyn::selective_scan(p, X, Y);
    const auto Y_ref = ssmdyn::selective_scan_reference(p, X);
    CHECK(static_cast<double>((Y - Y_ref).cwiseAbs().maxCoeff() / Y_ref.cwiseAbs().maxCoeff()) < 1e-16);
}

namespace {
// Mamba's reference selective scan (mamba_ssm selective_scan_ref), transcribed loop by loop
// for one sequence: u = X, delta = S_Δ X before softplus, B = S_B X, C = S_C X,
// delta_softplus with delta_bias, skip D, gate z. zoh switches the input term to
// ∫_0^Δ e^{A s} ds · B, taken from the matrix exponential of [[AΔ, Δ], [0, 0]] (Van Loan).
Eigen::MatrixXd mamba_reference(const ssmdyn::S6Params<double>& p, const Eigen::MatrixXd& u,
                                const Eigen::VectorXd* D, const Eigen::MatrixXd* z, bool zoh) {
    const Eigen::Index Dm = u.rows(), L = u.cols(), N = p.state_dim();
    const Eigen::MatrixXd delta_raw = p.S_Delta * u, B = p.S_B * u, C = p.S_C * u;
    Eigen::MatrixXd x = Eigen::MatrixXd::Zero(Dm, N), out(Dm, L);
    for (Eigen::Index l = 0; l < L; ++l) {
        for (Eigen::Index d = 0; d < Dm; ++d) {
            const double delta = std::log1p(std::exp(delta_raw(d, l) + p.delta_bias(d)));
            for (Eigen::Index n = 0; n < N; ++n) {
                const double deltaA = std::exp(delta * p.A(d, n));
                double deltaB = delta * B(n, l);
                if (zoh) {
                    Eigen::Matrix2d m;
                    m << p.A(d, n) * delta, delta, 0.0, 0.0;
                    deltaB = Eigen::Matrix2d(m.exp())(0, 1) * B(n, l);
                }
                x(d, n) = deltaA * x(d, n) + deltaB * u(d, l);
            }
            double y = 0;
            for (Eigen::Index n = 0; n < N; ++n) y += x(d, n) * C(n, l);
            if (D) y += u(d, l) * (*D)(d);
            if (z) y *= (*z)(d, l) / (1 + std::exp(-(*z)(d, l)));
            out(d, l) = y;
        }
    }
    return out;
}
}  // namespace

TEST_CASE("the layer equals Mamba's reference selective scan, with skip, gate and zero-order hold") {
    std::mt19937 rng(77);
    for (auto [D, N, L] : {std::tuple<Eigen::Index, Eigen::Index, Eigen::Index>{1, 1, 5}, {4, 3, 9}, {8, 16, 17}}) {
        CAPTURE(D, N, L);
        const auto p = test::random_params(rng, D, N);
        const Eigen::MatrixXd X = test::random_tokens(rng, D, L);
        const Eigen::VectorXd skip = test::random_tokens(rng, D, 1);
        const Eigen::MatrixXd gate = test::random_tokens(rng, D, L);
        for (bool zoh : {false, true})
            for (int extras = 0; extras < 4; ++extras) {
                CAPTURE(zoh, extras);
                ssmdyn::LayerOptions<double> o;
                o.discretization = zoh ? ssmdyn::Discretization::ZeroOrderHold : ssmdyn::Discretization::Simplified;
                if (extras & 1) o.D_skip = skip;
                if (extras & 2) o.gate = gate;
                Eigen::MatrixXd Y(D, L);
                ssmdyn::selective_scan(p, ssmdyn::Softplus{}, X, Y, o);
                const Eigen::MatrixXd ref =
                    mamba_reference(p, X, (extras & 1) ? &skip : nullptr, (extras & 2) ? &gate : nullptr, zoh);
                CHECK(test::max_rel_err(Y, ref) < 1e-12);
            }
    }
}

TEST_CASE("zero-order hold tends to Mamba's discretisation as the steps shrink") {
    std::mt19937 rng(78);
    auto p = test::random_params(rng, 3, 2);
    p.delta_bias.setConstant(-12.0);  // Δ ≈ e^{-12}: e^{ΔA} − 1 ≈ ΔA
    const Eigen::MatrixXd X = test::random_tokens(rng, 3, 6);
    Eigen::MatrixXd Y_zoh(3, 6), Y(3, 6);
    ssmdyn::LayerOptions<double> o;
    o.discretization = ssmdyn::Discretization::ZeroOrderHold;
    ssmdyn::selective_scan(p, ssmdyn::Softplus{}, X, Y_zoh, o);
    ssmdyn::selective_scan(p, X, Y);
    CHECK(test::max_rel_err(Y_zoh, Y) < 1e-4);
    CHECK(test::max_rel_err(Y_zoh, Y) > 0);
}

TEST_CASE("layer options with the wrong sizes are rejected") {
    std::mt19937 rng(79);
    const auto p = test::random_params(rng, 3, 2);
    const Eigen::MatrixXd X = test::random_tokens(rng, 3, 4);
    Eigen::MatrixXd Y(3, 4);
    ssmdyn::LayerOptions<double> o;
    o.D_skip = Eigen::VectorXd::Ones(2);
    CHECK_THROWS_AS(ssmdyn::selective_scan(p, ssmdyn::Softplus{}, X, Y, o), std::invalid_argument);
    o.D_skip.resize(0);
    o.gate = Eigen::MatrixXd::Ones(3, 5);
    CHECK_THROWS_AS(ssmdyn::selective_scan(p, ssmdyn::Softplus{}, X, Y, o), std::invalid_argument);
}

TEST_CASE("token matrices of the wrong shape are refused, not read out of bounds") {
    std::mt19937 rng(3);
    const auto p = test::random_params(rng, 3, 2);
    Eigen::MatrixXd X = test::random_tokens(rng, 2, 4), Y(2, 4);
    CHECK(test::message_of([&] { ssmdyn::selective_scan(p, X, Y); }).find("D = 3") != std::string::npos);
    X = test::random_tokens(rng, 3, 4);
    Eigen::MatrixXd Z(3, 5);
    CHECK_THROWS_AS(ssmdyn::selective_scan(p, X, Z), std::invalid_argument);
    for (auto d : {ssmdyn::Discretization::Simplified, ssmdyn::Discretization::ZeroOrderHold})
        CHECK(ssmdyn::parse_discretization(ssmdyn::to_string(d)) == d);
    CHECK_THROWS_AS(ssmdyn::parse_discretization("zoh"), std::invalid_argument);
}

TEST_CASE("the layer takes the flat state as well, and gives the flat state back") {
    std::mt19937 rng(8);
    const auto p = test::random_params(rng, 3, 2);
    const Eigen::MatrixXd X = test::random_tokens(rng, 3, 5);
    Eigen::MatrixXd Y(3, 5);
    ssmdyn::selective_scan(p, X, Y);
    const ssmdyn::StateVector<double> flat = ssmdyn::to_state(X);
    ssmdyn::StateVector<double> y(15);
    ssmdyn::selective_scan(p, flat, y);
    CHECK(y == ssmdyn::to_state(Y));
    ssmdyn::StateVector<double> short_y(14);
    CHECK(test::message_of([&] { ssmdyn::selective_scan(p, flat, short_y); }).find("Y must be one too") !=
          std::string::npos);
}

TEST_CASE("one-dimensional tokens as a flat vector of L numbers") {
    const auto p = ssmdyn::S6Params<double>::one_dimensional({0.7, 0.5, 1.0, 0.1});
    const ssmdyn::StateVector<double> x = test::tokens({1.0, -0.5, 2.0});
    ssmdyn::StateVector<double> y(3);
    ssmdyn::selective_scan(p, x, y);
    Eigen::MatrixXd Y(1, 3);
    ssmdyn::selective_scan(p, Eigen::MatrixXd(x.transpose()), Y);
    CHECK(y == Y.transpose());
}

TEST_CASE("a low-rank S_Delta gives the layer of its product, by the double sum") {
    std::mt19937 rng(2718);
    struct Size { Eigen::Index D, N, L, R; };
    for (Size s : {Size{1, 1, 5, 1}, Size{7, 3, 40, 2}, Size{40, 5, 300, 6}}) {
        CAPTURE(s.D, s.N, s.L, s.R);
        auto p = test::random_params(rng, s.D, s.N);
        p.S_Delta_up = test::random_tokens(rng, s.D, s.R) / std::sqrt(double(s.R));
        p.S_Delta_down = test::random_tokens(rng, s.R, s.D) / std::sqrt(double(s.D));
        p.S_Delta.resize(0, 0);
        const Eigen::MatrixXd X = test::random_tokens(rng, s.D, s.L);
        Eigen::MatrixXd Y(s.D, s.L);
        ssmdyn::selective_scan(p, X, Y);
        auto dense = p;
        dense.S_Delta = p.S_Delta_up * p.S_Delta_down;  // the reference from the dense matrix
        dense.S_Delta_up.resize(0, 0);
        dense.S_Delta_down.resize(0, 0);
        if (s.L <= 40) CHECK(test::max_rel_err(Y, ssmdyn::selective_scan_reference(dense, X)) < 1e-13);
        Eigen::MatrixXd Y_dense(s.D, s.L);
        ssmdyn::selective_scan(dense, X, Y_dense);
        CHECK(test::max_rel_err(Y, Y_dense) < 1e-13);
    }
}

TEST_CASE("every thread count gives the same bits as one thread") {
    std::mt19937 rng(31415);
    struct Size { Eigen::Index D, N, L; };
    // D below and above a chunk of channels, with a tail that fills no SIMD packet; L over
    // several token blocks; general, harmonic and zero-order-hold kernels; skip and gate.
    for (Size s : {Size{5, 3, 70}, Size{37, 4, 300}, Size{130, 16, 700}})
        for (int variant = 0; variant < 4; ++variant) {
            CAPTURE(s.D, s.N, s.L, variant);
            auto p = test::random_params(rng, s.D, s.N);
            ssmdyn::LayerOptions<double> o;
            if (variant == 1)
                for (Eigen::Index n = 0; n < s.N; ++n) p.A.col(n).setConstant(-double(n + 1));
            if (variant == 2) o.discretization = ssmdyn::Discretization::ZeroOrderHold;
            if (variant == 3) {
                o.D_skip = test::random_tokens(rng, s.D, 1);
                o.gate = test::random_tokens(rng, s.D, s.L);
                p.S_Delta_up = test::random_tokens(rng, s.D, 3);
                p.S_Delta_down = test::random_tokens(rng, 3, s.D) / std::sqrt(double(s.D));
                p.S_Delta.resize(0, 0);
            }
            const Eigen::MatrixXd X = test::random_tokens(rng, s.D, s.L);
            Eigen::MatrixXd Y1(s.D, s.L), Y(s.D, s.L);
            ssmdyn::selective_scan(p, ssmdyn::Softplus{}, X, Y1, o, 1);
            if (variant < 2 && s.D < 100)  // the reference has no options; O(L²) is slow at large sizes
                CHECK(test::max_rel_err(Y1, ssmdyn::selective_scan_reference(p, X)) < 1e-13);
            for (int threads : {2, 3, 8}) {
                CAPTURE(threads);
                ssmdyn::selective_scan(p, ssmdyn::Softplus{}, X, Y, o, threads);
                CHECK((Y.array() == Y1.array()).all());
            }
            // float: the same threads rule, and agreement with double to float's precision
            const ssmdyn::S6Params<float> pf = p.cast<float>();
            ssmdyn::LayerOptions<float> of;
            of.discretization = o.discretization;
            of.D_skip = o.D_skip.cast<float>();
            of.gate = o.gate.cast<float>();
            const Eigen::MatrixXf Xf = X.cast<float>();
            Eigen::MatrixXf Yf1(s.D, s.L), Yf(s.D, s.L);
            ssmdyn::selective_scan(pf, ssmdyn::Softplus{}, Xf, Yf1, of, 1);
            ssmdyn::selective_scan(pf, ssmdyn::Softplus{}, Xf, Yf, of, 2);
            CHECK((Yf.array() == Yf1.array()).all());
            CHECK(test::max_rel_err(Yf1.cast<double>(), Y1) < 2e-5);
        }
}
