#include "support.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <ssmdyn/core/detail/fast_exp.hpp>

// pexp_fast and exp_fast against a long double exp, densely over the whole range of
// inputs: ≤ 2 ulp where the result is a normal number, within 1 ulp of the subnormal grid
// below, 0 and inf beyond, and the special values. Every packet type of double and float
// this build has (the full packet and its halves) is checked, each point both in packets of
// in-range neighbours (the fast path) and in a packet whose first lane is out of range (so
// the whole packet takes the exact-scaling path).

namespace {

/// The error of y against the exact e in units of the spacing of S at e (the spacing of
/// the subnormal grid below the normal range); inf counts as the next power of 2 above
/// the largest finite number, so rounding up to inf at the overflow threshold is 1 ulp.
template <typename S>
long double ulp_error(S y, long double e) {
    constexpr int digits = std::numeric_limits<S>::digits;             // 53, 24
    constexpr int min_exp = std::numeric_limits<S>::min_exponent - 1;  // -1022, -126
    const long double top = std::ldexp(1.0L, std::numeric_limits<S>::max_exponent);
    const long double ye = std::isinf(y) ? top : static_cast<long double>(y);
    const long double ee = std::min(e, top);
    const int ex = ee > 0 ? std::max(std::ilogb(ee), min_exp) : min_exp;
    return std::abs(ye - ee) / std::ldexp(1.0L, ex - (digits - 1));
}

/// Worst errors of one function over a set of points, split by the range of the result.
struct Errors {
    long double normal = 0, subnormal = 0;  // max ulp error, per range of the exact result
    double worst_x = 0;                     // where `normal` is reached
    long wrong_special = 0;                 // points beyond the range not giving 0/inf exactly
    std::string first_wrong;
};

template <typename S>
void account(Errors& err, S x, S y) {
    const long double e = std::exp(static_cast<long double>(x));
    const S smallest_normal = std::numeric_limits<S>::min();
    // Beyond the thresholds (with a margin for the tie) the result must be exactly 0 / inf.
    const bool must_be_zero = e < std::ldexp(0.499L, std::numeric_limits<S>::min_exponent - std::numeric_limits<S>::digits);
    const bool must_be_inf = e > std::ldexp(1.001L, std::numeric_limits<S>::max_exponent);
    if (must_be_zero || must_be_inf) {
        if (must_be_zero ? y != S(0) || std::signbit(y) : !std::isinf(y) || y < 0) {
            if (err.wrong_special++ == 0) err.first_wrong = std::to_string(x) + " -> " + std::to_string(y);
        }
        return;
    }
    const long double u = ulp_error(y, e);
    if (e >= smallest_normal) {
        if (u > err.normal) err.normal = u, err.worst_x = double(x);
    } else {
        err.subnormal = std::max(err.subnormal, u);
    }
}

/// Points over the whole range of inputs of S: a uniform grid from below the underflow to
/// above the overflow threshold, random points over the same range and over [-50, 0],
/// dense around 0, the thresholds and the reduction boundaries (k + 1/2)·ln 2.
template <typename S>
std::vector<S> test_points() {
    const bool is_double = std::is_same<S, double>::value;
    const S lo = is_double ? S(-760) : S(-110), hi = is_double ? S(720) : S(95);
    const S underflow = is_double ? S(-745.1332191019411) : S(-103.97208f);
    const S subnormal = is_double ? S(-708.3964185322641) : S(-87.336544f);
    const S overflow = is_double ? S(709.782712893384) : S(88.72284f);
    std::vector<S> v;
    const long grid = 2'000'000;
    for (long i = 0; i <= grid; ++i) v.push_back(lo + (hi - lo) * S(i) / S(grid));
    std::mt19937_64 rng(20240611);
    std::uniform_real_distribution<S> whole(lo, hi), typical(S(-50), S(0));
    for (int i = 0; i < 1'000'000; ++i) v.push_back(whole(rng));
    for (int i = 0; i < 1'000'000; ++i) v.push_back(typical(rng));
    for (S t : {underflow, subnormal, overflow, S(0)}) {  // the 20,000 neighbours of each threshold
        S a = t, b = t;
        for (int i = 0; i < 10'000; ++i) {
            a = std::nextafter(a, -std::numeric_limits<S>::infinity());
            b = std::nextafter(b, std::numeric_limits<S>::infinity());
            v.push_back(a);
            v.push_back(b);
        }
    }
    for (int k = -2000; k <= 2000; ++k) {  // ±1 ulp neighbours of the boundaries of round(x/ln 2)
        const S t = S((k + 0.5L) * 0.69314718055994530941723L);
        if (t < lo || t > hi) continue;
        for (S s : {std::nextafter(t, lo), t, std::nextafter(t, hi)}) v.push_back(s);
    }
    for (int e = std::numeric_limits<S>::min_exponent - std::numeric_limits<S>::digits; e < 0; ++e)
        for (S m : {S(1), S(1.5), S(-1), S(-1.5)}) v.push_back(std::ldexp(m, e));  // tiny |x|, subnormals too
    return v;
}

template <typename S>
std::vector<S> special_inputs() {
    using L = std::numeric_limits<S>;
    return {S(0),         -S(0),          L::infinity(), -L::infinity(), L::max(),    L::lowest(),
            L::min(),     -L::min(),      L::denorm_min(), -L::denorm_min(), S(1),    S(-1),
            S(1e6),       S(-1e6),        S(-800),       S(800),         S(-1e30),    S(1e30),
            L::epsilon(), -L::epsilon()};
}

void require_ok(const Errors& err, const std::string& what) {
    INFO(what << ": max ulp (normal results) " << double(err.normal) << " at x = " << err.worst_x
              << ", max ulp of the subnormal grid " << double(err.subnormal) << ", first wrong 0/inf: "
              << err.first_wrong);
    CHECK(err.normal <= 2);
    CHECK(err.subnormal <= 1);
    CHECK(err.wrong_special == 0);
}

#if SSMDYN_FAST_EXP_PACKETS
/// pexp_fast<Packet> at every point, lanes filled with consecutive points; with
/// `force_wide` lane 0 is replaced by an out-of-range input and the point moved to lane 1.
template <typename Packet, typename S>
Errors check_packet(const std::vector<S>& x, bool force_wide) {
    namespace ei = Eigen::internal;
    constexpr int size = ei::unpacket_traits<Packet>::size;
    Errors err;
    S in[size], out[size];
    if (!force_wide) {
        for (std::size_t i = 0; i + size <= x.size(); i += size) {
            ei::pstoreu(out, ssmdyn::detail::pexp_fast(ei::ploadu<Packet>(x.data() + i)));
            for (int j = 0; j < size; ++j) account(err, x[i + j], out[j]);
        }
    } else {
        for (std::size_t i = 0; i + size - 1 <= x.size(); i += size - 1) {
            in[0] = S(-1e4);
            for (int j = 1; j < size; ++j) in[j] = x[i + j - 1];
            ei::pstoreu(out, ssmdyn::detail::pexp_fast(ei::ploadu<Packet>(in)));
            CHECK(out[0] == S(0));
            for (int j = 1; j < size; ++j) account(err, in[j], out[j]);
        }
    }
    return err;
}

/// The special values through one packet type: lanes filled with one value each time, so
/// that also a packet of NaNs or of infinities alone is checked.
template <typename Packet, typename S>
void check_specials(const std::string& what) {
    namespace ei = Eigen::internal;
    constexpr int size = ei::unpacket_traits<Packet>::size;
    S out[size];
    std::vector<S> values = special_inputs<S>();
    values.push_back(std::numeric_limits<S>::quiet_NaN());
    values.push_back(-std::numeric_limits<S>::quiet_NaN());
    for (S v : values) {
        ei::pstoreu(out, ssmdyn::detail::pexp_fast(ei::pset1<Packet>(v)));
        for (int j = 0; j < size; ++j) {
            INFO(what << ": exp(" << v << ") = " << out[j]);
            if (std::isnan(v)) CHECK(std::isnan(out[j]));
            else if (v == std::numeric_limits<S>::infinity() || v > S(1000)) CHECK(out[j] == std::numeric_limits<S>::infinity());
            else if (v == -std::numeric_limits<S>::infinity() || v < S(-1000)) CHECK((out[j] == S(0) && !std::signbit(out[j])));
            else CHECK(ulp_error(out[j], std::exp(static_cast<long double>(v))) <= 2);
        }
    }
    // A NaN and an infinity among ordinary lanes leave the other lanes alone.
    if constexpr (size >= 2) {
        S in[size];
        for (int j = 0; j < size; ++j) in[j] = S(-0.5) * S(j + 1);
        in[0] = std::numeric_limits<S>::quiet_NaN();
        in[size - 1] = std::numeric_limits<S>::infinity();
        ei::pstoreu(out, ssmdyn::detail::pexp_fast(ei::ploadu<Packet>(in)));
        CHECK(std::isnan(out[0]));
        CHECK(out[size - 1] == std::numeric_limits<S>::infinity());
        for (int j = 1; j + 1 < size; ++j) CHECK(ulp_error(out[j], std::exp(static_cast<long double>(in[j]))) <= 2);
    }
}

/// Packet, its half packet, and so on down to the smallest packet of the type.
template <typename Packet, typename S>
void check_packet_family(const std::vector<S>& x) {
    namespace ei = Eigen::internal;
    constexpr int size = ei::unpacket_traits<Packet>::size;
    const std::string what = std::string(std::is_same<S, double>::value ? "double" : "float") + " packet of " +
                             std::to_string(size);
    std::vector<S> all = x;
    for (S v : special_inputs<S>()) all.push_back(v);
    const Errors fast = check_packet<Packet, S>(all, false);
    require_ok(fast, what);
    if constexpr (size >= 2) require_ok(check_packet<Packet, S>(all, true), what + ", out-of-range lane 0");
    check_specials<Packet, S>(what);
    WARN(what << ": max ulp " << double(fast.normal) << " (normal results), " << double(fast.subnormal)
              << " (subnormal grid)");
    // Down to 16 bytes, whose half is itself.
    if constexpr (size * sizeof(S) > 16)
        check_packet_family<typename ei::unpacket_traits<Packet>::half, S>(x);
}

#endif

template <typename S>
void check_scalar(const std::vector<S>& x) {
    Errors err;
    for (S v : x) account(err, v, ssmdyn::detail::exp_fast(v));
    for (S v : special_inputs<S>()) account(err, v, ssmdyn::detail::exp_fast(v));
    require_ok(err, "scalar");
    WARN("scalar: max ulp " << double(err.normal) << " (normal results), " << double(err.subnormal)
                            << " (subnormal grid)");
    CHECK(std::isnan(ssmdyn::detail::exp_fast(std::numeric_limits<S>::quiet_NaN())));
}

}  // namespace

TEST_CASE("exp_fast and pexp_fast are within 2 ulp of exp for doubles, over the whole range") {
    const std::vector<double> x = test_points<double>();
    REQUIRE(x.size() > 4'000'000);
    check_scalar(x);
#if SSMDYN_FAST_EXP_PACKETS
    check_packet_family<Eigen::internal::packet_traits<double>::type, double>(x);
#endif
}

TEST_CASE("exp_fast and pexp_fast are within 2 ulp of exp for floats, over the whole range") {
    const std::vector<float> x = test_points<float>();
    REQUIRE(x.size() > 4'000'000);
    check_scalar(x);
#if SSMDYN_FAST_EXP_PACKETS
    check_packet_family<Eigen::internal::packet_traits<float>::type, float>(x);
#endif
}
