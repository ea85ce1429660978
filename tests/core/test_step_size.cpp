#include "support.hpp"

#include <ssmdyn/core/step_size.hpp>

TEST_CASE("softplus matches ln(1 + e^z) where that is computable, and its limits elsewhere") {
    for (double z : {-30.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 5.0, 30.0})
        CHECK(test::rel_err(ssmdyn::softplus(z), std::log1p(std::exp(z))) < 1e-15);
    // Very negative: softplus(z) = e^z to full relative precision (ln(1+e^z) would be 0
    // with a naive log).
    CHECK(test::rel_err(ssmdyn::softplus(-700.0), std::exp(-700.0)) < 1e-15);
    CHECK(test::rel_err(ssmdyn::softplus(-40.0), std::exp(-40.0)) < 1e-15);
    // Very positive: no overflow, softplus(z) = z.
    CHECK(ssmdyn::softplus(1e300) == 1e300);
    CHECK(ssmdyn::softplus(800.0) == 800.0);
    CHECK(test::rel_err(ssmdyn::softplus(0.0), std::log(2.0)) < 1e-15);
    CHECK(test::rel_err(ssmdyn::softplus(-1e-20), std::log(2.0)) < 1e-15);
}

TEST_CASE("the vectorised softplus equals the scalar one entrywise") {
    // Dense over the whole range (subnormal results below z = -708 included) and near 0.
    Eigen::ArrayXd z(40002 + 4);
    z << Eigen::ArrayXd::LinSpaced(20001, -760.0, 760.0), Eigen::ArrayXd::LinSpaced(20001, -1e-6, 1e-6),
        -1e-300, 1e-300, 0.0, -745.0;
    Eigen::ArrayXd out(z.size());
    ssmdyn::detail::apply_step_size(ssmdyn::Softplus{}, z, out);
    for (Eigen::Index i = 0; i < z.size(); ++i)
        CHECK(test::rel_err(out(i), ssmdyn::softplus(z(i))) < 1e-15);
}

namespace {
struct Exponential {  // a user map with the scalar form only
    template <typename S>
    S operator()(S z) const {
        return std::exp(z);
    }
};
}  // namespace

TEST_CASE("a user step-size map without an array form is applied entrywise") {
    STATIC_REQUIRE_FALSE(ssmdyn::detail::has_array_form<Exponential, Eigen::ArrayXd>::value);
    STATIC_REQUIRE(ssmdyn::detail::has_array_form<ssmdyn::Softplus, Eigen::ArrayXd>::value);
    Eigen::ArrayXd z(3), out(3);
    z << -1.0, 0.0, 2.0;
    ssmdyn::detail::apply_step_size(Exponential{}, z, out);
    CHECK(out(0) == std::exp(-1.0));
    CHECK(out(1) == 1.0);
    CHECK(out(2) == std::exp(2.0));
}
