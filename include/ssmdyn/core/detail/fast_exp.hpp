#pragma once
/// \file fast_exp.hpp
/// A faster packet exponential than Eigen's `pexp` for the scan's hot loop (simd.hpp), with
/// ≤ 2 ulp error wherever the result is a normal number and correct behaviour everywhere
/// else: gradual underflow to the subnormal numbers and then 0, +inf on overflow,
/// exp(±inf) = (inf, 0), NaN → NaN. Eigen 3.4's double `pexp` divides (a Padé form) and
/// splits 2^n into four factors for every input; here a division-free polynomial and, with
/// AVX-512, one vscalefpd do (no branch), and with SSE/AVX one integer addition to the
/// exponent bits, where packets with an input outside |x| ≤ 708 (87 for float) take a
/// slower exact-scaling path. Eigen 3.4's float `pexp` is not used either: it clamps its
/// input to ±88.72 (±88.38 with AVX-512, where it also has 2.8 ulp errors), so its
/// subnormal results are wrong and it never returns 0.
///
/// Like simd.hpp, the packet code is written against `Eigen::internal` of Eigen 3.4 and is
/// compiled only under the same condition; the scalar `exp_fast` always exists.

#include <cmath>
#include <type_traits>

#include <Eigen/Core>

#if !defined(SSMDYN_NO_EIGEN_PACKETS) && EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 5, 0)
#define SSMDYN_FAST_EXP_PACKETS 1
#else
#define SSMDYN_FAST_EXP_PACKETS 0
#endif

namespace ssmdyn::detail {

/// The scalar companion of pexp_fast, for the channels that do not fill a packet: the C
/// library's exp, which is already within 1 ulp for every input.
inline double exp_fast(double x) { return std::exp(x); }
/// \copydoc exp_fast(double)
inline float exp_fast(float x) { return std::exp(x); }

#if SSMDYN_FAST_EXP_PACKETS
namespace fast_exp {

/// Constants of e^x = 2^n · e^r, n = round(x/ln 2), r = x − n·ln 2, |r| ≤ ln(2)/2 (up to
/// ~1e-3 more when x·log2(e) is rounded without FMA), and e^r = 1 + r + r²·P(r).
template <typename Scalar>
struct Constants;

template <>
struct Constants<double> {
    static constexpr double log2e = 1.4426950408889634;
    /// 1.5·2^52: adding it rounds x·log2(e) to an integer n, which then sits in the low
    /// mantissa bits (as n + 2^51), so bits << 52 is n << 52 in two's complement.
    static constexpr double shifter = 0x1.8p52;
    /// ln 2 = ln2_hi + ln2_lo; ln2_hi has 32 significant bits, so n·ln2_hi is exact for
    /// |n| < 2^21 and x − n·ln2_hi is exact (Sterbenz) with or without FMA (fdlibm's split).
    static constexpr double ln2_hi = 0x1.62e42feep-1;
    static constexpr double ln2_lo = 0x1.a39ef35793c76p-33;
    /// The fast path needs 2^n·e^r normal: |x| ≤ 708 gives |n| ≤ 1022 and e^r ≥ 1 at n = −1022.
    static constexpr double fast_limit = 708.0;
    /// Below lo the result is 0 (e^x < 2^-1075, half the smallest subnormal, rounds to 0
    /// below −745.1332), above hi it is inf (overflow from 709.7827).
    static constexpr double lo = -745.14, hi = 710.0;
    /// P: Chebyshev fit of (e^r − 1 − r)/r² on |r| ≤ 0.35, degree 9 (e^r to 2e-17 relative,
    /// 0.09 ulp; degree 8 would give 6 ulp). Highest degree first.
    static constexpr int degree = 9;
    static constexpr double p[degree + 1] = {
        2.5101335854788522e-08, 2.7621324269313687e-07, 2.7557266442353424e-06, 2.4801518672268355e-05,
        0.00019841269864364933, 0.0013888888918918907, 0.0083333333333297961, 0.04166666666662068,
        0.16666666666666669,    0.50000000000000011};
};

template <>
struct Constants<float> {
    static constexpr float log2e = 1.44269504f;
    static constexpr float shifter = 0x1.8p23f;  ///< 1.5·2^23, as for double
    /// Cephes' split: ln2_hi = 355/512 has 9 significant bits, n·ln2_hi exact for |n| < 2^15.
    static constexpr float ln2_hi = 0.693359375f;
    static constexpr float ln2_lo = -2.12194440e-4f;
    static constexpr float fast_limit = 87.0f;  ///< |n| ≤ 126 and e^r > 1 at n = −126
    static constexpr float lo = -103.98f, hi = 89.0f;  ///< 0 below −103.9721, inf above 88.7228
    /// P: Chebyshev fit as for double, degree 4 (0.09 ulp of float).
    static constexpr int degree = 4;
    static constexpr float p[degree + 1] = {0.00139269186f, 0.0083637666f, 0.0416665487f, 0.166665733f, 0.5f};
};

/// e^r for the reduced argument r: 1 + r·(1 + r·(1/2 + r·P₁(r))) by Horner's scheme, with
/// FMA where the target has it. Horner has the fewest operations, and throughput counts
/// more than latency: in the scan and in loops over arrays the exponentials of different
/// iterations overlap. (1 + r + r²·P(r) costs one operation more and measured 1.06 ulp
/// against 0.94.)
template <typename Packet, typename Scalar>
EIGEN_STRONG_INLINE Packet exp_reduced(const Packet& r) {
    namespace ei = Eigen::internal;
    using K = Constants<Scalar>;
    const Packet one = ei::pset1<Packet>(Scalar(1));
    Packet u = ei::pset1<Packet>(K::p[0]);
    for (int i = 1; i <= K::degree; ++i) u = ei::pmadd(u, r, ei::pset1<Packet>(K::p[i]));
    return ei::pmadd(ei::pmadd(u, r, one), r, one);
}

/// Range reduction: n = round(x·log2(e)) (as the double n and as kd = shifter + n) and
/// e^r, r = x − n·ln 2 in two steps.
template <typename Packet, typename Scalar>
EIGEN_STRONG_INLINE Packet reduce(const Packet& x, Packet& n, Packet& kd) {
    namespace ei = Eigen::internal;
    using K = Constants<Scalar>;
    kd = ei::pmadd(x, ei::pset1<Packet>(K::log2e), ei::pset1<Packet>(K::shifter));
    n = ei::psub(kd, ei::pset1<Packet>(K::shifter));
    Packet r = ei::pmadd(n, ei::pset1<Packet>(-K::ln2_hi), x);
    r = ei::pmadd(n, ei::pset1<Packet>(-K::ln2_lo), r);
    return exp_reduced<Packet, Scalar>(r);
}

/// How 2^n is applied, per instruction set.
enum class Mode {
    Generic,  ///< every packet by the exact-scaling path pexp_wide (architectures other than x86)
    Bits,     ///< n added to the exponent bits, packets with a lane outside the fast range by pexp_wide
    Scalef    ///< AVX-512's vscalefpd/ps: exact scaling incl. underflow and overflow, no branch
};

/// The instruction-set specific pieces, keyed by scalar type and packet size (each names
/// one x86 packet type; template arguments would drop the packet types' attributes).
/// Bits: any_outside(x, limit) tells whether a lane has |x| > limit or is NaN (a compare
/// and a movemask) and scale(p, kd) is p·2^n by adding n << 52 (n read from the low
/// mantissa bits of kd) to p's bits, valid while the result is normal. Eigen 3.4 has no
/// 64-bit integer packets on x86, hence the intrinsics. Scalef: clamp(x, lo, hi) keeps
/// NaN (vmaxpd/vminpd return their second operand when one is NaN) and
/// scale_exact(x, p, n, lo) is p·2^n rounded once, into the subnormal numbers too, and 0
/// by the mask where x < lo, as underflowing to 0 would cost a microcode assist (~100
/// cycles) per packet.
template <typename Scalar, int Size>
struct Arch {
    static constexpr Mode mode = Mode::Generic;
};

#ifdef EIGEN_VECTORIZE_SSE2
template <>
struct Arch<double, 2> {
    using P = Eigen::internal::Packet2d;
    static constexpr Mode mode = Mode::Bits;
    static bool any_outside(const P& x, const P& limit) {
        return _mm_movemask_pd(_mm_cmpnle_pd(Eigen::internal::pabs(x), limit)) != 0;
    }
    static P scale(const P& p, const P& kd) {
        return _mm_castsi128_pd(_mm_add_epi64(_mm_castpd_si128(p), _mm_slli_epi64(_mm_castpd_si128(kd), 52)));
    }
};
template <>
struct Arch<float, 4> {
    using P = Eigen::internal::Packet4f;
    static constexpr Mode mode = Mode::Bits;
    static bool any_outside(const P& x, const P& limit) {
        return _mm_movemask_ps(_mm_cmpnle_ps(Eigen::internal::pabs(x), limit)) != 0;
    }
    static P scale(const P& p, const P& kd) {
        return _mm_castsi128_ps(_mm_add_epi32(_mm_castps_si128(p), _mm_slli_epi32(_mm_castps_si128(kd), 23)));
    }
};
#endif

#ifdef EIGEN_VECTORIZE_AVX
template <>
struct Arch<double, 4> {
    using P = Eigen::internal::Packet4d;
    static constexpr Mode mode = Mode::Bits;
    static bool any_outside(const P& x, const P& limit) {
        return _mm256_movemask_pd(_mm256_cmp_pd(Eigen::internal::pabs(x), limit, _CMP_NLE_UQ)) != 0;
    }
    static P scale(const P& p, const P& kd) {
#ifdef EIGEN_VECTORIZE_AVX2
        return _mm256_castsi256_pd(
            _mm256_add_epi64(_mm256_castpd_si256(p), _mm256_slli_epi64(_mm256_castpd_si256(kd), 52)));
#else  // AVX without AVX2 has no 256-bit integer operations: two 128-bit halves
        using H = Arch<double, 2>;
        return _mm256_insertf128_pd(
            _mm256_castpd128_pd256(H::scale(_mm256_castpd256_pd128(p), _mm256_castpd256_pd128(kd))),
            H::scale(_mm256_extractf128_pd(p, 1), _mm256_extractf128_pd(kd, 1)), 1);
#endif
    }
};
template <>
struct Arch<float, 8> {
    using P = Eigen::internal::Packet8f;
    static constexpr Mode mode = Mode::Bits;
    static bool any_outside(const P& x, const P& limit) {
        return _mm256_movemask_ps(_mm256_cmp_ps(Eigen::internal::pabs(x), limit, _CMP_NLE_UQ)) != 0;
    }
    static P scale(const P& p, const P& kd) {
#ifdef EIGEN_VECTORIZE_AVX2
        return _mm256_castsi256_ps(
            _mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(kd), 23)));
#else
        using H = Arch<float, 4>;
        return _mm256_insertf128_ps(
            _mm256_castps128_ps256(H::scale(_mm256_castps256_ps128(p), _mm256_castps256_ps128(kd))),
            H::scale(_mm256_extractf128_ps(p, 1), _mm256_extractf128_ps(kd, 1)), 1);
#endif
    }
};
#endif

#ifdef EIGEN_VECTORIZE_AVX512
template <>
struct Arch<double, 8> {
    using P = Eigen::internal::Packet8d;
    static constexpr Mode mode = Mode::Scalef;
    static P clamp(const P& x, double lo, double hi) {
        return _mm512_min_pd(_mm512_set1_pd(hi), _mm512_max_pd(_mm512_set1_pd(lo), x));
    }
    static P scale_exact(const P& x, const P& p, const P& n, double lo) {
        return _mm512_maskz_scalef_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(lo), _CMP_NLT_UQ), p, n);
    }
};
template <>
struct Arch<float, 16> {
    using P = Eigen::internal::Packet16f;
    static constexpr Mode mode = Mode::Scalef;
    static P clamp(const P& x, float lo, float hi) {
        return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x));
    }
    static P scale_exact(const P& x, const P& p, const P& n, float lo) {
        return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lo), _CMP_NLT_UQ), p, n);
    }
};
#endif

/// Every input, taken by packets with a lane outside the fast range: 2^n is applied by
/// Eigen's pldexp, which splits it into factors so that the only rounding into the
/// subnormal range is the last multiplication (gradual underflow within 1 ulp). Lanes
/// below lo are set to 0 and computed at x = 0 (underflowing to 0 would cost a microcode
/// assist), lanes above hi computed at hi (inf), NaN lanes are passed on. Out of line: it
/// is rare, and keeps the hot loop small.
template <typename Packet>
EIGEN_DONT_INLINE Packet pexp_wide(const Packet& x) {
    namespace ei = Eigen::internal;
    using Scalar = typename ei::unpacket_traits<Packet>::type;
    using K = Constants<Scalar>;
    const Packet zero = ei::pzero(x), to_zero = ei::pcmp_lt(x, ei::pset1<Packet>(K::lo));
    const Packet xc = ei::pselect(to_zero, zero, ei::pmin(x, ei::pset1<Packet>(K::hi)));
    Packet n, kd;
    const Packet p = reduce<Packet, Scalar>(xc, n, kd);
    return ei::pselect(ei::pcmp_eq(x, x), ei::pselect(to_zero, zero, ei::pldexp(p, n)), x);
}

}  // namespace fast_exp

/// e^x for a packet of doubles (Packet2d/4d/8d) or floats (Packet4f/8f/16f), any input:
/// ≤ 2 ulp where the result is normal (measured 0.94 with FMA, 1.22 without), gradual
/// underflow below (x < −708.4, float −87.3) within 1 ulp of the subnormal grid, exactly
/// +0 below −745.14 (float −103.98), +inf above 709.79 (float 88.73), exp(+inf) = inf,
/// exp(−inf) = 0, NaN → NaN.
/// With AVX-512 (Packet8d, Packet16f) one branch-free path serves every input; with the
/// smaller packets a packet with a lane outside |x| ≤ 708 (float 87) or NaN takes the
/// slower pexp_wide.
template <typename Packet>
EIGEN_STRONG_INLINE Packet pexp_fast(const Packet& x) {
    namespace ei = Eigen::internal;
    using Scalar = typename ei::unpacket_traits<Packet>::type;
    static_assert(std::is_same<Scalar, double>::value || std::is_same<Scalar, float>::value,
                  "pexp_fast: packets of double or float only");
    using A = fast_exp::Arch<Scalar, ei::unpacket_traits<Packet>::size>;
    using K = fast_exp::Constants<Scalar>;
    if constexpr (A::mode == fast_exp::Mode::Scalef) {
        Packet n, kd;
        const Packet p = fast_exp::reduce<Packet, Scalar>(A::clamp(x, K::lo, K::hi), n, kd);
        return A::scale_exact(x, p, n, K::lo);
    } else if constexpr (A::mode == fast_exp::Mode::Bits) {
        if (!A::any_outside(x, ei::pset1<Packet>(K::fast_limit))) {
            Packet n, kd;
            const Packet p = fast_exp::reduce<Packet, Scalar>(x, n, kd);
            return A::scale(p, kd);
        }
    }
    return fast_exp::pexp_wide(x);
}
#endif

}  // namespace ssmdyn::detail
