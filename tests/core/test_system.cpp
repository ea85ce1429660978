// Eigen reports a heap allocation inside a no-malloc region through eigen_assert; make
// that assertion throw (in every build type) so the test can see it.
#include <stdexcept>
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
    do {                   \
        if (!(x)) throw std::runtime_error("Eigen assertion failed: " #x); \
    } while (0)

#include "support.hpp"

#include <functional>
#include <thread>
#include <vector>

#include <ssmdyn/integrate/odeint.hpp>

#include <boost/numeric/odeint/integrate/integrate_adaptive.hpp>
#include <boost/numeric/odeint/integrate/integrate_const.hpp>
#include <ssmdyn/core/system.hpp>

using System = ssmdyn::SelectiveSystem<double>;
using State = System::State;

TEST_CASE("the system's right-hand side is the S6 layer of the token matrix") {
    std::mt19937 rng(11);
    const auto p = test::random_params(rng, 4, 3);
    const System sys(p);
    const Eigen::MatrixXd X = test::random_tokens(rng, 4, 9);
    const State x = ssmdyn::to_state(X);
    State dxdt;
    sys(x, dxdt, 0.0);
    REQUIRE(dxdt.size() == 36);
    CHECK(test::max_rel_err(ssmdyn::token_matrix(dxdt, 4), ssmdyn::selective_scan_reference(p, X)) < 1e-13);
    // token l is entries l·D … l·D+D−1
    CHECK(ssmdyn::token_matrix(x, 4).col(2) == x.segment(8, 4));
}

TEST_CASE("evaluating the right-hand side allocates nothing once sizes are known") {
    std::mt19937 rng(12);
    // Small and large (the matrix products of a long sequence must not allocate either),
    // general and structured decays (the scan's two kinds of inner loop).
    struct Size { Eigen::Index D, N, L; bool harmonic; };
    for (Size s : {Size{6, 5, 40, false}, Size{16, 16, 4096, false}, Size{16, 16, 4096, true}}) {
        CAPTURE(s.D, s.N, s.L, s.harmonic);
        auto p = test::random_params(rng, s.D, s.N);
        if (s.harmonic)
            for (Eigen::Index n = 0; n < s.N; ++n) p.A.col(n).setConstant(-double(n + 1));
        const System sys(p);
        const State x = ssmdyn::to_state(test::random_tokens(rng, s.D, s.L));
        State dxdt(x.size());
        sys(x, dxdt, 0.0);  // first call on this thread sizes the scratch
        Eigen::internal::set_is_malloc_allowed(false);
        CHECK_NOTHROW(sys(x, dxdt, 0.0));
        Eigen::internal::set_is_malloc_allowed(true);
    }
    // The check is live: an allocating expression inside the region throws.
    Eigen::internal::set_is_malloc_allowed(false);
    CHECK_THROWS(State(7));
    Eigen::internal::set_is_malloc_allowed(true);
}

TEST_CASE("the right-hand side allocates nothing with a low-rank S_Delta, on several threads, and in float") {
    std::mt19937 rng(13);
    struct Size { Eigen::Index D, N, L, R; int threads; };
    for (Size s : {Size{64, 16, 1000, 8, 1}, Size{64, 16, 1000, 8, 2}, Size{100, 16, 300, 0, 2}}) {
        CAPTURE(s.D, s.N, s.L, s.R, s.threads);
        auto p = test::random_params(rng, s.D, s.N);
        if (s.R > 0) {
            p.S_Delta_up = test::random_tokens(rng, s.D, s.R);
            p.S_Delta_down = test::random_tokens(rng, s.R, s.D) / std::sqrt(double(s.D));
            p.S_Delta.resize(0, 0);
        }
        System sys(p);
        sys.set_threads(s.threads);
        CHECK(sys.threads() == s.threads);
        const State x = ssmdyn::to_state(test::random_tokens(rng, s.D, s.L));
        State dxdt(x.size()), serial(x.size());
        const System serial_system(p);
        serial_system(x, serial, 0.0);
        sys(x, dxdt, 0.0);  // sizes the scratch of this thread
        Eigen::internal::set_is_malloc_allowed(false);
        CHECK_NOTHROW(sys(x, dxdt, 0.0));
        Eigen::internal::set_is_malloc_allowed(true);
        CHECK((dxdt.array() == serial.array()).all());  // bitwise, whatever the thread count

        ssmdyn::SelectiveSystem<float> fsys(p.cast<float>());
        fsys.set_threads(s.threads);
        const ssmdyn::StateVector<float> xf = x.cast<float>();
        ssmdyn::StateVector<float> df(xf.size());
        fsys(xf, df, 0.0f);
        Eigen::internal::set_is_malloc_allowed(false);
        CHECK_NOTHROW(fsys(xf, df, 0.0f));
        Eigen::internal::set_is_malloc_allowed(true);
        CHECK(test::max_rel_err(df.cast<double>(), serial) < 2e-5);
    }
    CHECK_THROWS_AS(System(test::random_params(rng, 2, 2)).set_threads(0), std::invalid_argument);
}

TEST_CASE("odeint's own steppers and integrate functions accept the system") {
    namespace odeint = boost::numeric::odeint;
    using Steppers = ssmdyn::odeint_steppers<double>;
    std::mt19937 rng(13);
    auto p = test::random_params(rng, 3, 2);
    p.S_B = -p.S_C;  // μ = −S_Cᵀ S_C: negative semi-definite, bounded trajectories
    const System sys(p);
    const State x0 = ssmdyn::to_state(test::random_tokens(rng, 3, 5));

    State x_rk4 = x0;
    const std::size_t rk4_steps = odeint::integrate_const(Steppers::rk4(), sys, x_rk4, 0.0, 2.0, 2e-4);
    CHECK(rk4_steps == 10000);

    State x_dp = x0;
    odeint::integrate_adaptive(odeint::make_controlled(1e-12, 1e-12, Steppers::dopri5()), sys, x_dp,
                               0.0, 2.0, 1e-3);
    State x_bs = x0;
    odeint::integrate_adaptive(Steppers::bulirsch_stoer(1e-12, 1e-12), std::ref(sys), x_bs, 0.0, 2.0,
                               1e-3);
    CHECK((x_dp - x0).norm() > 1e-3);  // the tokens really moved
    CHECK(test::max_rel_err(x_rk4, x_dp) < 1e-9);
    CHECK(test::max_rel_err(x_bs, x_dp) < 1e-9);
}

TEST_CASE("copies share the parameters, and a custom step-size map is used") {
    struct Exponential {
        double operator()(double z) const { return std::exp(z); }
    };
    auto p = ssmdyn::S6Params<double>::one_dimensional({2.0, 0.5, 1.0, 0.0});
    const ssmdyn::SelectiveSystem<double, Exponential> sys(p);
    const auto copy = sys;
    CHECK(&copy.params() == &sys.params());
    State x(1), dxdt(1);
    x << 1.5;
    copy(x, dxdt, 0.0);
    CHECK(test::rel_err(dxdt(0), 2.0 * 1.5 * 1.5 * 1.5 * std::exp(0.75)) < 1e-15);
}

TEST_CASE("one system evaluated from several threads at once gives the serial results") {
    std::mt19937 rng(14);
    const System sys(test::random_params(rng, 5, 4));
    std::vector<State> inputs, expected;
    for (int i = 0; i < 4; ++i) {  // different L per thread: the scratch is per thread
        inputs.push_back(ssmdyn::to_state(test::random_tokens(rng, 5, 10 + 7 * i)));
        expected.emplace_back();
        sys(inputs.back(), expected.back(), 0.0);
    }
    std::vector<State> got(inputs.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < inputs.size(); ++i)
        threads.emplace_back([&, i] {
            State dxdt;
            for (int rep = 0; rep < 200; ++rep) sys(inputs[i], dxdt, 0.0);
            got[i] = dxdt;
        });
    for (auto& t : threads) t.join();
    for (std::size_t i = 0; i < inputs.size(); ++i) CHECK(got[i] == expected[i]);
}

TEST_CASE("the system rejects invalid parameters and token states") {
    auto p = ssmdyn::S6Params<double>::one_dimensional({1.0, 1.0, 1.0});
    p.A(0, 0) = 1.0;
    CHECK_THROWS_AS(System(p), std::invalid_argument);
    std::mt19937 rng(15);
    const System sys(test::random_params(rng, 2, 2));
    CHECK_THROWS_AS(sys.validate_state(State::Ones(3)), std::invalid_argument);
    CHECK_NOTHROW(sys.validate_state(State::Ones(4)));
}
