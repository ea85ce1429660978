#pragma once
// Shared test support: the one place that knows which Catch2 is in use, plus seeded
// random problems and the independent truths (quadratures) the tests compare against.

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <random>

#include <boost/math/quadrature/gauss_kronrod.hpp>
#include <boost/math/quadrature/tanh_sinh.hpp>

#include <ssmdyn/core/params.hpp>
#include <ssmdyn/core/state.hpp>
#include <ssmdyn/core/step_size.hpp>

namespace test {

/// Runs f and returns the message of the std::invalid_argument it throws, or
/// "<no exception>" when it throws nothing (any other exception escapes and fails the test).
template <typename F>
std::string message_of(F f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "<no exception>";
}

/// A file path under the temporary directory, unique to this object (and process),
/// removed with whatever it names when the object goes.
class TempPath {
public:
    explicit TempPath(const std::string& suffix = "") {
        static int counter = 0;
        m_path = (std::filesystem::temp_directory_path() /
                  ("ssmdyn-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + suffix))
                     .string();
    }
    ~TempPath() {
        std::error_code ignored;
        std::filesystem::remove_all(m_path, ignored);
    }
    TempPath(const TempPath&) = delete;
    TempPath& operator=(const TempPath&) = delete;
    const std::string& path() const { return m_path; }

private:
    std::string m_path;
};

/// A flat state from a list of numbers, e.g. tokens({1.0, -0.5}) for two 1-D tokens.
inline ssmdyn::StateVector<double> tokens(std::initializer_list<double> v) {
    ssmdyn::StateVector<double> x(static_cast<Eigen::Index>(v.size()));
    Eigen::Index i = 0;
    for (double e : v) x(i++) = e;
    return x;
}

/// |a − b| / max(|b|, tiny): the relative error of a against the reference b.
inline double rel_err(double a, double b) {
    return std::abs(a - b) / std::max(std::abs(b), std::numeric_limits<double>::min());
}

/// max |a − b| / max |b| over two arrays of the same shape.
template <typename A, typename B>
double max_rel_err(const A& a, const B& b) {
    return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

/// Random S6 parameters with entries of order one and decays in [−2, −0.1].
inline ssmdyn::S6Params<double> random_params(std::mt19937& rng, Eigen::Index D, Eigen::Index N) {
    std::normal_distribution<double> g(0.0, 1.0);
    std::uniform_real_distribution<double> decay(0.1, 2.0);
    auto gauss = [&](Eigen::Index r, Eigen::Index c) {
        Eigen::MatrixXd m(r, c);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = g(rng) / std::sqrt(double(D));
        return m;
    };
    ssmdyn::S6Params<double> p;
    p.S_B = gauss(N, D);
    p.S_C = gauss(N, D);
    p.S_Delta = gauss(D, D);
    p.delta_bias = gauss(D, 1);
    p.A.resize(D, N);
    for (Eigen::Index i = 0; i < p.A.size(); ++i) p.A(i) = -decay(rng);
    return p;
}

/// Random tokens, D×L, entries N(0, 1).
inline Eigen::MatrixXd random_tokens(std::mt19937& rng, Eigen::Index D, Eigen::Index L) {
    std::normal_distribution<double> g(0.0, 1.0);
    Eigen::MatrixXd X(D, L);
    for (Eigen::Index i = 0; i < X.size(); ++i) X(i) = g(rng);
    return X;
}

/// Time for token 1 of the 1-D system to go from x0 to x (same sign, |x| beyond |x0| in
/// the direction of motion): t = ∫ du / (μ u³ softplus(s u + b)) by adaptive Gauss–Kronrod
/// quadrature. Token 1 sees only itself, so this is its exact solution in implicit form.
inline double token1_time(double mu, double s, double b, double x0, double x) {
    auto f = [=](double u) { return 1.0 / (mu * u * u * u * ssmdyn::softplus(s * u + b)); };
    return boost::math::quadrature::gauss_kronrod<double, 61>::integrate(f, x0, x, 15, 1e-14);
}

/// Blow-up time of token 1, T* = ∫_{|x0|}^∞ du / (μ u³ softplus(s·sign(x0)·u + b)), computed
/// independently of the library's exp-sinh quadrature: substitute u = 1/w and integrate
/// w / (μ softplus(s·sign(x0)/w + b)) over (0, 1/|x0|] by tanh-sinh. Needs s·x0 >= 0.
inline double token1_blowup_time(double mu, double s, double b, double x0) {
    boost::math::quadrature::tanh_sinh<double> q;
    const double sg = x0 > 0 ? 1.0 : -1.0;
    auto f = [=](double w) { return w <= 0 ? 0.0 : w / (mu * ssmdyn::softplus(s * sg / w + b)); };
    return q.integrate(f, 0.0, 1.0 / std::abs(x0));
}

/// Central differences of a scalar loss f(M) in every entry of M:
/// (f(M + h e_i) − f(M − h e_i)) / 2h.
template <typename F>
Eigen::MatrixXd central_differences(F f, const Eigen::MatrixXd& M, double h) {
    Eigen::MatrixXd fd(M.rows(), M.cols()), moved = M;
    for (Eigen::Index i = 0; i < M.size(); ++i) {
        moved(i) = M(i) + h;
        const double up = f(moved);
        moved(i) = M(i) - h;
        const double down = f(moved);
        moved(i) = M(i);
        fd(i) = (up - down) / (2 * h);
    }
    return fd;
}

/// max |got − fd| relative to max(1, max |fd|).
inline double fd_err(const Eigen::MatrixXd& got, const Eigen::MatrixXd& fd) {
    return (got - fd).cwiseAbs().maxCoeff() / std::max(1.0, fd.cwiseAbs().maxCoeff());
}

}  // namespace test
