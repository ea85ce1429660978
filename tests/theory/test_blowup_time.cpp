#include "support.hpp"

#include <ssmdyn/theory/blowup_time.hpp>

TEST_CASE("T* for s = 0 has the closed form 1 / (2 mu softplus(b) x0^2)") {
    for (double b : {-2.0, 0.0, 0.7})
        for (double x0 : {0.3, -1.2}) {
            const auto T = ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{1.5, 0.0, 1.0, b}, x0);
            REQUIRE(T.has_value());
            CHECK(test::rel_err(*T, 1.0 / (2 * 1.5 * ssmdyn::softplus(b) * x0 * x0)) < 1e-12);
        }
}

TEST_CASE("T* agrees with an independent tanh-sinh quadrature to 1e-10") {
    std::mt19937 rng(31);
    std::uniform_real_distribution<double> mu(0.05, 3.0), s(-3.0, 3.0), b(-2.0, 2.0), x(0.05, 3.0);
    for (int i = 0; i < 200; ++i) {
        const double m = mu(rng), sd = s(rng), bd = b(rng);
        const double x0 = sd >= 0 ? x(rng) : -x(rng);  // s·x0 > 0: blows up
        CAPTURE(m, sd, bd, x0);
        const auto T = ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{m, sd, 1.0, bd}, x0);
        REQUIRE(T.has_value());
        CHECK(test::rel_err(*T, test::token1_blowup_time(m, sd, bd, x0)) < 1e-10);
    }
}

TEST_CASE("no blow-up time when token 1 does not blow up") {
    CHECK_FALSE(ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{1.0, 0.5, 1.0, 0.0}, -1.0).has_value());  // s·x < 0
    CHECK_FALSE(ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{-1.0, 0.5, 1.0, 0.0}, 1.0).has_value());  // μ < 0
    CHECK_FALSE(ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{0.0, 0.5, 1.0, 0.0}, 1.0).has_value());   // μ = 0
    CHECK_FALSE(ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{1.0, 0.5, 1.0, 0.0}, 0.0).has_value());   // x = 0
}

TEST_CASE("the general test tells convergent blow-up integrals from divergent ones") {
    // ∫_1^∞ du / (u³ Δ(u)) with Δ = u^-k: converges to 1/(2 − k) for k < 2, diverges for k ≥ 2.
    auto power = [](double k) { return [k](double u) { return std::pow(u, -k); }; };
    const auto half = ssmdyn::blowup_integral(power(1.5), 1.0);
    REQUIRE(half.has_value());
    CHECK(test::rel_err(*half, 2.0) < 1e-12);
    const auto one = ssmdyn::blowup_integral(power(0.0), 2.0);
    REQUIRE(one.has_value());
    CHECK(test::rel_err(*one, 1.0 / 8.0) < 1e-12);
    CHECK_FALSE(ssmdyn::blowup_integral(power(2.0), 1.0).has_value());
    CHECK_FALSE(ssmdyn::blowup_integral(power(3.0), 1.0).has_value());
    // Softplus decaying as e^{-u}: the integrand grows exponentially.
    CHECK_FALSE(
        ssmdyn::blowup_integral([](double u) { return ssmdyn::softplus(-u); }, 1.0).has_value());
    // A user map through first_token_blowup_time: Δ = e^{s x} with s·x > 0 blows up.
    struct Exponential {
        double operator()(double z) const { return std::exp(z); }
    };
    const auto T = ssmdyn::first_token_blowup_time(ssmdyn::OneDimensional<double>{1.0, 1.0, 1.0, 0.0}, 1.0, Exponential{});
    REQUIRE(T.has_value());
    boost::math::quadrature::tanh_sinh<double> q;  // u = 1/w again
    const double truth = q.integrate([](double w) { return w <= 0 ? 0.0 : w * std::exp(-1.0 / w); }, 0.0, 1.0);
    CHECK(test::rel_err(*T, truth) < 1e-10);
    CHECK_THROWS_AS(ssmdyn::blowup_integral(power(1.0), 0.0), std::invalid_argument);
}
