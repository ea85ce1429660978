#include "support.hpp"

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

#include <ssmdyn/core/memory_limit.hpp>

namespace {

/// Sets (or, with nullptr, unsets) SSMDYN_MEMORY_LIMIT and the programmatic limit for one
/// scope, restoring both at its end.
class LimitScope {
public:
    explicit LimitScope(const char* env) {
        if (const char* old = std::getenv("SSMDYN_MEMORY_LIMIT")) m_old = old, m_had = true;
        if (env) ::setenv("SSMDYN_MEMORY_LIMIT", env, 1);
        else ::unsetenv("SSMDYN_MEMORY_LIMIT");
        ssmdyn::set_memory_limit(0);
    }
    ~LimitScope() {
        if (m_had) ::setenv("SSMDYN_MEMORY_LIMIT", m_old.c_str(), 1);
        else ::unsetenv("SSMDYN_MEMORY_LIMIT");
        ssmdyn::set_memory_limit(0);
    }
    LimitScope(const LimitScope&) = delete;
    LimitScope& operator=(const LimitScope&) = delete;

private:
    std::string m_old;
    bool m_had = false;
};

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("memory_limit: physical memory by default, SSMDYN_MEMORY_LIMIT, set_memory_limit") {
    const std::size_t physical = ssmdyn::physical_memory_bytes();
    CHECK(physical >= (std::size_t(64) << 20));  // any machine that runs the tests
    {
        LimitScope scope(nullptr);
        CHECK(ssmdyn::memory_limit() == ssmdyn::default_memory_limit());
        CHECK(ssmdyn::default_memory_limit() <= physical);
    }
    {
        LimitScope scope("4G");
        CHECK(ssmdyn::memory_limit() == (std::size_t(4) << 30));
        ssmdyn::set_memory_limit(12345);  // the program's own choice wins over the variable
        CHECK(ssmdyn::memory_limit() == 12345);
        ssmdyn::set_memory_limit(0);  // back to the variable
        CHECK(ssmdyn::memory_limit() == (std::size_t(4) << 30));
    }
    {
        LimitScope scope("");  // empty: as if unset
        CHECK(ssmdyn::memory_limit() == ssmdyn::default_memory_limit());
    }
    {
        LimitScope scope("lots");
        const std::string m = test::message_of([] { (void)ssmdyn::memory_limit(); });
        CHECK(m.rfind("SSMDYN_MEMORY_LIMIT: 'lots'", 0) == 0);
        // check_allocation reports the bad variable the same way.
        CHECK(test::message_of([] { ssmdyn::check_allocation(1, "x"); }).rfind("SSMDYN_MEMORY_LIMIT", 0) == 0);
    }
}

TEST_CASE("parse_memory_size: decimal digits and one optional suffix, nothing else") {
    using ssmdyn::parse_memory_size;
    CHECK(parse_memory_size("1") == 1);
    CHECK(parse_memory_size("268435456") == 268435456);
    CHECK(parse_memory_size("512K") == 512 * 1024);
    CHECK(parse_memory_size("256M") == (std::size_t(256) << 20));
    CHECK(parse_memory_size("4G") == (std::size_t(4) << 30));
    CHECK(parse_memory_size("4g") == (std::size_t(4) << 30));
    CHECK(parse_memory_size("2T") == (std::size_t(2) << 40));
    CHECK(parse_memory_size("18446744073709551615") == std::numeric_limits<std::size_t>::max());
    for (const char* bad : {"", "0", "0G", "-1", "+1", " 1", "1 ", "1.5G", "0x10", "1e9", "1GB", "1KiB", "G", "1Q",
                            "inf", "nan", "18446744073709551616", "99999999999999999999999", "16777216T"}) {
        CAPTURE(bad);
        const std::string m = test::message_of([&] { (void)parse_memory_size(bad, "LIMIT"); });
        CHECK(m.rfind(std::string("LIMIT: '") + bad + "'", 0) == 0);
    }
}

TEST_CASE("checked_bytes: the product of the counts, overflow and negative counts refused") {
    using ssmdyn::checked_bytes;
    CHECK(checked_bytes(sizeof(double)) == 8);
    CHECK(checked_bytes(3, 4, sizeof(double)) == 96);
    CHECK(checked_bytes(Eigen::Index(40000), Eigen::Index(40000), sizeof(double)) == 12800000000ull);
    CHECK(checked_bytes(0, std::numeric_limits<std::size_t>::max(), 8) == 0);  // an empty array
    const std::string overflow = test::message_of(
        [] { (void)checked_bytes(std::uint64_t(1) << 32, std::uint64_t(1) << 32, sizeof(double)); });
    CHECK(overflow.rfind("memory: 4294967296 x 4294967296 x 8 bytes overflows std::size_t", 0) == 0);
    CHECK(test::message_of([] { (void)checked_bytes(-1, 8); }).rfind("memory: negative count -1", 0) == 0);
    CHECK(ssmdyn::checked_sum(std::size_t(1), std::size_t(2)) == 3);
    CHECK_THROWS_AS(ssmdyn::checked_sum(std::numeric_limits<std::size_t>::max(), std::size_t(1)),
                    std::invalid_argument);
}

TEST_CASE("check_allocation: refuses above the limit, naming what and both sizes in human units") {
    LimitScope scope(nullptr);
    ssmdyn::set_memory_limit(std::size_t(1) << 30);
    ssmdyn::check_allocation(std::size_t(1) << 30, "exactly the limit");  // allowed
    ssmdyn::check_allocation(0, "nothing");
    const std::string m = test::message_of([] {
        ssmdyn::check_allocation(ssmdyn::checked_bytes(40000, 40000, sizeof(double)),
                                 "the dense S_Delta (40000 x 40000 doubles)");
    });
    CAPTURE(m);
    CHECK(m.rfind("the dense S_Delta (40000 x 40000 doubles) needs 11.9 GiB (12800000000 bytes), "
                  "more than the memory limit of 1 GiB (1073741824 bytes",
                  0) == 0);
    CHECK(contains(m, "SSMDYN_MEMORY_LIMIT"));
    // The default refuses what no machine has.
    ssmdyn::set_memory_limit(0);
    CHECK_THROWS_AS(ssmdyn::check_allocation(std::numeric_limits<std::size_t>::max(), "everything"),
                    std::invalid_argument);
}

TEST_CASE("format_bytes: three significant digits in IEC units") {
    using ssmdyn::format_bytes;
    CHECK(format_bytes(0) == "0 bytes");
    CHECK(format_bytes(1) == "1 byte");
    CHECK(format_bytes(1023) == "1023 bytes");
    CHECK(format_bytes(1024) == "1 KiB");
    CHECK(format_bytes(1536) == "1.50 KiB");
    CHECK(format_bytes(std::size_t(256) << 20) == "256 MiB");
    CHECK(format_bytes(12800000000ull) == "11.9 GiB");
    CHECK(format_bytes(std::numeric_limits<std::size_t>::max()) == "16 EiB");
}
