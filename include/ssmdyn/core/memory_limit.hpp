#pragma once
/// \file memory_limit.hpp
/// A memory budget for allocations whose size comes from input: before allocating
/// anything sized by a file, a grid or a token count, compute the bytes needed
/// (checked_bytes(), which refuses a product that overflows) and call check_allocation(),
/// which refuses with std::invalid_argument, naming what and both sizes, what is above
/// memory_limit(). A bad input then fails at once with a message, instead of with
/// std::bad_alloc after a long wait, or by the kernel's out-of-memory killer.
///
/// The limit is, in order of precedence: the value given to set_memory_limit(); the
/// environment variable SSMDYN_MEMORY_LIMIT (bytes, optionally with the suffix K, M, G or
/// T for 2^10, 2^20, 2^30, 2^40 bytes, e.g. `SSMDYN_MEMORY_LIMIT=4G`); by default the
/// machine's physical memory, or the process's address-space limit (`ulimit -v`) when
/// that is smaller.
///
/// \code
/// // Refuse a dense D x D matrix of doubles that does not fit.
/// ssmdyn::check_allocation(ssmdyn::checked_bytes(D, D, sizeof(double)), "the dense S_Delta");
/// Eigen::MatrixXd S(D, D);
/// \endcode
///
/// Needs only the C++ standard library (and POSIX's sysconf and getrlimit where they exist).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#include <sys/resource.h>
#include <unistd.h>
#define SSMDYN_MEMORY_LIMIT_POSIX 1
#endif

namespace ssmdyn {

namespace detail {

/// The limit set by set_memory_limit() (0: none set).
inline std::atomic<std::size_t>& memory_limit_override() {
    static std::atomic<std::size_t> limit{0};
    return limit;
}

/// Physical memory when the system cannot tell: 1 TiB (or the largest size_t, if smaller),
/// so that only sizes no machine has are refused.
constexpr std::size_t fallback_physical_memory() {
    return std::numeric_limits<std::size_t>::max() / 2 < (std::uint64_t(1) << 40)
               ? std::numeric_limits<std::size_t>::max()
               : static_cast<std::size_t>(std::uint64_t(1) << 40);
}

}  // namespace detail

/// The machine's physical memory in bytes (sysconf(_SC_PHYS_PAGES) × page size on POSIX
/// systems); 1 TiB where the system does not say.
inline std::size_t physical_memory_bytes() {
#if defined(SSMDYN_MEMORY_LIMIT_POSIX) && defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page_size = ::sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page_size > 0) {
        const auto p = static_cast<std::uint64_t>(pages), s = static_cast<std::uint64_t>(page_size);
        if (p > std::numeric_limits<std::size_t>::max() / s) return std::numeric_limits<std::size_t>::max();
        return static_cast<std::size_t>(p * s);
    }
#endif
    return detail::fallback_physical_memory();
}

/// `bytes` in human units, e.g. "11.9 GiB", "512 KiB", "100 bytes" (IEC prefixes:
/// 1 KiB = 1024 bytes), three significant digits at most.
inline std::string format_bytes(std::size_t bytes) {
    static const char* const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
    double v = static_cast<double>(bytes);
    int u = -1;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        ++u;
    }
    char text[32];
    if (v >= 99.95 || v == static_cast<double>(static_cast<long long>(v)))
        std::snprintf(text, sizeof text, "%.0f %s", v, units[u]);
    else if (v >= 9.995)
        std::snprintf(text, sizeof text, "%.1f %s", v, units[u]);
    else
        std::snprintf(text, sizeof text, "%.2f %s", v, units[u]);
    return text;
}

/// Parses a memory size, strictly: decimal digits, then optionally one of the suffixes
/// K, M, G, T (or k, m, g, t) for 2^10, 2^20, 2^30, 2^40 bytes; no sign, no spaces, no
/// fraction, > 0, and within std::size_t.
/// \param text e.g. "268435456", "256M", "4G"
/// \param what how the message names the value, e.g. "SSMDYN_MEMORY_LIMIT"
/// \throws std::invalid_argument naming `what` and quoting `text`
inline std::size_t parse_memory_size(const std::string& text, const std::string& what = "memory size") {
    const auto fail = [&](const std::string& problem) {
        throw std::invalid_argument(what + ": '" + text + "' " + problem);
    };
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0)
        fail("is not a size in bytes (expected decimal digits, optionally followed by K, M, G or T)");
    unsigned shift = 0;
    if (digits < text.size()) {
        if (digits + 1 != text.size())
            fail("is not a size in bytes (expected decimal digits, optionally followed by K, M, G or T)");
        switch (text[digits]) {
            case 'K': case 'k': shift = 10; break;
            case 'M': case 'm': shift = 20; break;
            case 'G': case 'g': shift = 30; break;
            case 'T': case 't': shift = 40; break;
            default: fail("has an unknown suffix (expected K, M, G or T)");
        }
    }
    constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
    std::size_t value = 0;
    for (std::size_t i = 0; i < digits; ++i) {
        const auto d = static_cast<std::size_t>(text[i] - '0');
        if (value > (max - d) / 10) fail("is too large");
        value = value * 10 + d;
    }
    if (shift >= static_cast<unsigned>(std::numeric_limits<std::size_t>::digits) || value > (max >> shift))
        fail("is too large");
    value <<= shift;
    if (value == 0) fail("must be > 0");
    return value;
}

/// The default memory limit: physical_memory_bytes(), or the soft address-space limit
/// (RLIMIT_AS, `ulimit -v`) when that is set and smaller.
inline std::size_t default_memory_limit() {
    std::size_t limit = physical_memory_bytes();
#if defined(SSMDYN_MEMORY_LIMIT_POSIX) && defined(RLIMIT_AS)
    struct rlimit r;
    if (::getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
        static_cast<std::uint64_t>(r.rlim_cur) < static_cast<std::uint64_t>(limit))
        limit = static_cast<std::size_t>(r.rlim_cur);
#endif
    return limit;
}

/// The current memory limit in bytes: set_memory_limit()'s value if one is set, else
/// SSMDYN_MEMORY_LIMIT if that is set (and not empty), else default_memory_limit().
/// \throws std::invalid_argument when SSMDYN_MEMORY_LIMIT is set but not a valid size
///   (see parse_memory_size), naming the variable
inline std::size_t memory_limit() {
    if (const std::size_t set = detail::memory_limit_override().load(std::memory_order_relaxed)) return set;
    if (const char* env = std::getenv("SSMDYN_MEMORY_LIMIT"); env != nullptr && *env != '\0')
        return parse_memory_size(env, "SSMDYN_MEMORY_LIMIT");
    return default_memory_limit();
}

/// Sets the memory limit of this process to `bytes`, overriding SSMDYN_MEMORY_LIMIT;
/// 0 restores the default (SSMDYN_MEMORY_LIMIT, else default_memory_limit()).
inline void set_memory_limit(std::size_t bytes) {
    detail::memory_limit_override().store(bytes, std::memory_order_relaxed);
}

/// Refuses an allocation of `bytes` above memory_limit().
/// \param bytes the bytes the allocation needs (from checked_bytes, say)
/// \param what what would be allocated, with its sizes, e.g. "the dense S_Delta
///   (d_inner x d_inner = 40000 x 40000 doubles)"; the message starts with it
/// \throws std::invalid_argument "<what> needs 11.9 GiB (12800000000 bytes), more than
///   the memory limit of 4 GiB (4294967296 bytes; ...)" when bytes > memory_limit()
inline void check_allocation(std::size_t bytes, const std::string& what) {
    const std::size_t limit = memory_limit();
    if (bytes <= limit) return;
    throw std::invalid_argument(what + " needs " + format_bytes(bytes) + " (" + std::to_string(bytes) +
                                " bytes), more than the memory limit of " + format_bytes(limit) + " (" +
                                std::to_string(limit) +
                                " bytes; physical memory by default, set SSMDYN_MEMORY_LIMIT to change it)");
}

namespace detail {

template <typename T>
std::size_t memory_factor(T n) {
    static_assert(std::is_integral<T>::value, "checked_bytes takes integer counts");
    if constexpr (std::is_signed<T>::value)
        if (n < 0) throw std::invalid_argument("memory: negative count " + std::to_string(n) + " in a size");
    if (static_cast<std::uintmax_t>(n) > std::numeric_limits<std::size_t>::max())
        throw std::invalid_argument("memory: count " + std::to_string(n) + " does not fit in std::size_t");
    return static_cast<std::size_t>(n);
}

template <typename T>
std::string memory_factors_text(T n) {
    return std::to_string(n);
}
template <typename T, typename... Rest>
std::string memory_factors_text(T n, Rest... rest) {
    return std::to_string(n) + " x " + memory_factors_text(rest...);
}

}  // namespace detail

/// The product of the counts and the element size, the bytes of `count1 × count2 × …`
/// elements of `element_size` bytes each, checked for overflow.
/// \code
/// check_allocation(checked_bytes(rows, cols, sizeof(double)), "a rows x cols matrix");
/// \endcode
/// \param counts any number of integer counts (signed ones must be >= 0), the element size last
/// \throws std::invalid_argument "memory: 4294967296 x 4294967296 x 8 bytes overflows
///   std::size_t ..." when the product does not fit (or a count is negative)
template <typename... Counts>
std::size_t checked_bytes(Counts... counts) {
    static_assert(sizeof...(Counts) >= 1, "checked_bytes needs at least the element size");
    const std::size_t factors[] = {detail::memory_factor(counts)...};
    std::size_t product = 1;
    bool zero = false;
    for (std::size_t f : factors) zero = zero || f == 0;
    if (zero) return 0;
    for (std::size_t f : factors) {
        if (product > std::numeric_limits<std::size_t>::max() / f)
            throw std::invalid_argument("memory: " + detail::memory_factors_text(counts...) +
                                        " bytes overflows std::size_t (more than " +
                                        format_bytes(std::numeric_limits<std::size_t>::max()) + ")");
        product *= f;
    }
    return product;
}

/// checked_bytes(a, b) + checked_bytes(c, d) …: the sum of sizes, checked for overflow.
/// \throws std::invalid_argument when the sum does not fit in std::size_t
template <typename... Sizes>
std::size_t checked_sum(Sizes... sizes) {
    const std::size_t terms[] = {static_cast<std::size_t>(sizes)...};
    std::size_t sum = 0;
    for (std::size_t t : terms) {
        if (t > std::numeric_limits<std::size_t>::max() - sum)
            throw std::invalid_argument("memory: a sum of sizes overflows std::size_t");
        sum += t;
    }
    return sum;
}

}  // namespace ssmdyn

#undef SSMDYN_MEMORY_LIMIT_POSIX
