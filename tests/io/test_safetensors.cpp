#include "support.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <ssmdyn/io/safetensors.hpp>

namespace {

using test::message_of;
using test::TempPath;

using Bytes = std::vector<unsigned char>;
using ssmdyn::DType;
using ssmdyn::NamedTensor;
using ssmdyn::SafetensorsFile;


bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The n low bytes of v, least significant first: the test's own little-endian encoder.
void put_le(Bytes& out, std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

// A safetensors file assembled by hand: 8-byte little-endian length, header, data.
Bytes assemble(const std::string& header, const Bytes& data = {}) {
    Bytes out;
    put_le(out, header.size(), 8);
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

std::uint64_t bits_of(double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
}

std::uint32_t bits_of(float v) {
    std::uint32_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
}

float float_from_bits(std::uint32_t b) {
    float v;
    std::memcpy(&v, &b, sizeof v);
    return v;
}

// x rounded to float by the hardware, the independent truth for F32. Through a volatile:
// GCC 12.2 at -O3 was seen to SLP-vectorise `m.cast<float>().cast<double>()` of a 7x5
// matrix in this file into plain copies of two of the elements, dropping the rounding.
double to_float(double x) {
    volatile float f = static_cast<float>(x);
    return static_cast<double>(f);
}

// Same value, including the sign of zero; any NaN equals any NaN.
bool same(double a, double b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return a == b && std::signbit(a) == std::signbit(b);
}


void write_bytes(const std::string& path, const Bytes& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

Bytes read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The test's own F16 decoder, written from the IEEE-754 definition.
double half_reference(std::uint16_t h) {
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    const int e = (h >> 10) & 0x1F;
    const int m = h & 0x3FF;
    if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
    if (e == 0) return sign * (m / 1024.0) * std::pow(2.0, -14);
    return sign * (1.0 + m / 1024.0) * std::pow(2.0, e - 15);
}

// BF16 of a float by the usual integer trick (independent of the library): add half an
// ulp minus one plus the lowest kept bit, then truncate. Valid for non-NaN floats.
std::uint16_t bf16_of_float(float f) {
    std::uint32_t b = bits_of(f);
    b += 0x7FFFu + ((b >> 16) & 1u);
    return static_cast<std::uint16_t>(b >> 16);
}

// Whether the pattern r of a 16-bit format (largest finite magnitude pattern max_finite)
// is the correctly rounded value of v: the nearest of the neighbouring patterns, the
// even one on a tie, infinity from the largest finite value plus half an ulp on.
template <typename Decode>
bool correctly_rounded(double v, std::uint16_t r, std::uint16_t max_finite, Decode decode) {
    if (std::signbit(v) != bool(r & 0x8000)) return false;
    const int sign = r & 0x8000;
    const int mag = r & 0x7FFF;
    const double top = decode(max_finite);
    const double overflow = top + (top - decode(static_cast<std::uint16_t>(max_finite - 1))) / 2;
    if (mag == max_finite + 1) return std::abs(v) >= overflow;
    if (mag > max_finite + 1 || std::abs(v) >= overflow) return false;
    const double err = std::abs(v - decode(r));
    for (int step : {-1, 1}) {
        const int other = mag + step;
        if (other < 0 || other > int(max_finite)) continue;
        const double other_err = std::abs(v - decode(static_cast<std::uint16_t>(sign | other)));
        if (other_err < err) return false;
        if (other_err == err && (r & 1u)) return false;
    }
    return true;
}

// Same shape and the same entries.
bool equal(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Reading: independent truth from bytes assembled by hand.

TEST_CASE("safetensors: a file assembled byte by byte reads back exactly") {
    // Offsets: a 0..32 (4 F64), f 32..48 (4 F32), h 48..72 (12 F16), b 72..80 (4 BF16),
    // the scalar 80..88 (F64), e 88..88 (empty F32).
    std::string header = R"({"__metadata__":{"format":"pt","note":"tab\there"},)"
                         R"("a":{"dtype":"F64","shape":[2,2],"data_offsets":[0,32]},)"
                         R"( "f" : { "shape" : [4], "dtype" : "F32", "data_offsets" : [32, 48] },)"
                         R"("h":{"dtype":"F16","shape":[3,4],"data_offsets":[48,72]},)"
                         R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[72,80]},)"
                         R"("na\u00efve \"q\"":{"dtype":"F64","shape":[],"data_offsets":[80,88]},)"
                         R"("e":{"dtype":"F32","shape":[0,3],"data_offsets":[88,88]}})";
    header += "     ";  // the reference writer pads with spaces
    Bytes data;
    for (std::uint64_t b : {0x3FF0000000000000ull, 0xC004000000000000ull, 0x3FB999999999999Aull, 0x1ull})
        put_le(data, b, 8);  // 1, -2.5, 0.1, 2^-1074 (row-major 2x2)
    for (std::uint64_t b : {0x3F800000ull, 0xBDCCCCCDull, 0x00000001ull, 0x7F800000ull})
        put_le(data, b, 4);  // 1, -0.1f, 2^-149, inf
    for (std::uint64_t b : {0x3C00, 0xC000, 0x0001, 0x7C00, 0x7BFF, 0x03FF, 0x8000, 0x7E00, 0x3555, 0xFC00, 0x0400,
                            0x3BFF})
        put_le(data, b, 2);
    for (std::uint64_t b : {0x3F80, 0x4049, 0xFF80, 0x0001}) put_le(data, b, 2);
    put_le(data, 0x400921FB54442D18ull, 8);  // pi
    const Bytes bytes = assemble(header, data);

    TempPath tmp;
    write_bytes(tmp.path(), bytes);
    for (const SafetensorsFile& file : {SafetensorsFile(tmp.path()), SafetensorsFile::from_bytes(bytes)}) {
        const std::string q = "na\xC3\xAFve \"q\"";
        CHECK(file.names() == std::vector<std::string>{"a", "f", "h", "b", q, "e"});
        CHECK(!file.contains("__metadata__"));
        CHECK(file.metadata().size() == 2);
        CHECK(file.metadata().at("format") == "pt");
        CHECK(file.metadata().at("note") == "tab\there");

        const auto& hi = file.info("h");
        CHECK(hi.dtype == DType::F16);
        CHECK(hi.shape == std::vector<std::int64_t>{3, 4});
        CHECK(hi.begin == 48);
        CHECK(hi.end == 72);
        CHECK(hi.element_count() == 12);

        const Eigen::MatrixXd a = file.matrix("a");
        REQUIRE(a.rows() == 2);
        REQUIRE(a.cols() == 2);
        CHECK(a(0, 0) == 1.0);
        CHECK(a(0, 1) == -2.5);
        CHECK(a(1, 0) == 0.1);
        CHECK(a(1, 1) == std::numeric_limits<double>::denorm_min());

        const Eigen::VectorXd f = file.vector("f");
        REQUIRE(f.size() == 4);
        CHECK(f(0) == 1.0);
        CHECK(f(1) == static_cast<double>(-0.1f));
        CHECK(f(2) == std::ldexp(1.0, -149));
        CHECK(f(3) == std::numeric_limits<double>::infinity());

        const Eigen::MatrixXd h = file.matrix("h");
        REQUIRE(h.rows() == 3);
        REQUIRE(h.cols() == 4);
        CHECK(h(0, 0) == 1.0);
        CHECK(h(0, 1) == -2.0);
        CHECK(h(0, 2) == std::ldexp(1.0, -24));
        CHECK(h(0, 3) == std::numeric_limits<double>::infinity());
        CHECK(h(1, 0) == 65504.0);
        CHECK(h(1, 1) == 1023 * std::ldexp(1.0, -24));
        CHECK(h(1, 2) == 0.0);
        CHECK(std::signbit(h(1, 2)));
        CHECK(std::isnan(h(1, 3)));
        CHECK(h(2, 0) == 0.333251953125);
        CHECK(h(2, 1) == -std::numeric_limits<double>::infinity());
        CHECK(h(2, 2) == std::ldexp(1.0, -14));
        CHECK(h(2, 3) == 0.99951171875);

        const Eigen::VectorXd b = file.vector("b");
        REQUIRE(b.size() == 4);
        CHECK(b(0) == 1.0);
        CHECK(b(1) == 3.140625);
        CHECK(b(2) == -std::numeric_limits<double>::infinity());
        CHECK(b(3) == std::ldexp(1.0, -133));

        CHECK(file.info(q).shape.empty());
        CHECK(file.values(q) == std::vector<double>{3.141592653589793});
        const Eigen::MatrixXd e = file.matrix("e");
        CHECK(e.rows() == 0);
        CHECK(e.cols() == 3);
    }
}

TEST_CASE("safetensors: F16 and BF16 conversions are exact and correctly rounded") {
    // Every bit pattern: decoding is exact and re-encoding gives the pattern back.
    for (std::uint32_t p = 0; p <= 0xFFFF; ++p) {
        const auto bits = static_cast<std::uint16_t>(p);
        const double h = ssmdyn::half_to_double(bits);
        REQUIRE(same(h, half_reference(bits)));
        const double b = ssmdyn::bfloat16_to_double(bits);
        REQUIRE(same(b, static_cast<double>(float_from_bits(std::uint32_t(bits) << 16))));
        if (std::isnan(h)) {
            const std::uint16_t r = ssmdyn::double_to_half(h);
            REQUIRE((r & 0x7C00) == 0x7C00);
            REQUIRE((r & 0x03FF) != 0);
            REQUIRE(bool(r & 0x8000) == bool(bits & 0x8000));
        } else {
            REQUIRE(ssmdyn::double_to_half(h) == bits);
        }
        if (std::isnan(b)) {
            const std::uint16_t r = ssmdyn::double_to_bfloat16(b);
            REQUIRE((r & 0x7F80) == 0x7F80);
            REQUIRE((r & 0x007F) != 0);
        } else {
            REQUIRE(ssmdyn::double_to_bfloat16(b) == bits);
        }
    }

    // Ties go to even, including in the subnormal range; overflow at max + half an ulp.
    const double u = std::ldexp(1.0, -11);
    CHECK(ssmdyn::double_to_half(1.0 + u) == 0x3C00);
    CHECK(ssmdyn::double_to_half(1.0 + 3 * u) == 0x3C02);
    CHECK(ssmdyn::double_to_half(1.0 + u + std::ldexp(1.0, -40)) == 0x3C01);
    CHECK(ssmdyn::double_to_half(std::ldexp(1.0, -25)) == 0x0000);
    CHECK(ssmdyn::double_to_half(std::ldexp(3.0, -25)) == 0x0002);
    CHECK(ssmdyn::double_to_half(std::ldexp(1.0, -25) + std::ldexp(1.0, -60)) == 0x0001);
    CHECK(ssmdyn::double_to_half(-std::ldexp(1.0, -26)) == 0x8000);
    CHECK(ssmdyn::double_to_half(std::ldexp(1023.5, -24)) == 0x0400);  // rounds up into the normals
    CHECK(ssmdyn::double_to_half(65519.99) == 0x7BFF);
    CHECK(ssmdyn::double_to_half(65520.0) == 0x7C00);
    CHECK(ssmdyn::double_to_half(-1e300) == 0xFC00);
    CHECK(ssmdyn::double_to_half(std::numeric_limits<double>::denorm_min()) == 0x0000);

    const double v = 1.0 + std::ldexp(1.0, -8);  // halfway between two BF16 neighbours
    CHECK(ssmdyn::double_to_bfloat16(v) == 0x3F80);
    CHECK(ssmdyn::double_to_bfloat16(1.0 + std::ldexp(3.0, -8)) == 0x3F82);
    // Just above the tie: rounding through float first would land on the tie and go down.
    const double above = v + std::ldexp(1.0, -30);
    CHECK(to_float(above) == v);
    CHECK(ssmdyn::double_to_bfloat16(above) == 0x3F81);
    CHECK(ssmdyn::double_to_bfloat16(1e300) == 0x7F80);
    CHECK(ssmdyn::double_to_bfloat16(-std::ldexp(1.0, -134)) == 0x8000);  // tie with 2^-133: to even (zero)

    // Random doubles over the whole range of each format: the nearest pattern, ties to even.
    std::mt19937_64 rng(20240611);
    std::uniform_real_distribution<double> mantissa(1.0, 2.0);
    std::uniform_int_distribution<int> exponent(-140, 130);
    for (int i = 0; i < 20000; ++i) {
        const double frac = mantissa(rng);  // separate statements: a fixed draw order
        const double x = (i % 2 ? -1.0 : 1.0) * std::ldexp(frac, exponent(rng));
        CAPTURE(x);
        REQUIRE(correctly_rounded(x, ssmdyn::double_to_half(x), 0x7BFF, ssmdyn::half_to_double));
        REQUIRE(correctly_rounded(x, ssmdyn::double_to_bfloat16(x), 0x7F7F, ssmdyn::bfloat16_to_double));
        // For values that are floats, BF16 agrees with the integer trick on float bits.
        if (std::abs(x) < 3e38) {
            const auto f = static_cast<float>(to_float(x));
            REQUIRE(ssmdyn::double_to_bfloat16(f) == bf16_of_float(f));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writing.

TEST_CASE("safetensors: the writer's files read back exactly or correctly rounded") {
    std::mt19937_64 rng(99);
    std::uniform_int_distribution<std::uint64_t> any_bits;
    // Doubles from random bit patterns with exponents inside the float range (so that
    // static_cast<float> is defined), plus special values.
    auto random_double = [&] {
        for (;;) {
            double x;
            const std::uint64_t b = any_bits(rng);
            std::memcpy(&x, &b, sizeof x);
            if (std::isfinite(x) && std::abs(x) < 3e38 && std::abs(x) > 1e-50) return x;
        }
    };
    Eigen::MatrixXd general(7, 5);
    for (Eigen::Index i = 0; i < general.size(); ++i) general(i) = random_double();
    general(0, 0) = 1.0 + std::ldexp(1.0, -24);  // a float tie
    general(0, 1) = std::ldexp(1.0, -149) * 0.5;  // half the smallest float subnormal: to zero
    general(0, 2) = -std::ldexp(1.0, -149) * 0.75;

    Eigen::VectorXd specials(9);
    specials << 0.0, -0.0, std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max(),
        -std::numeric_limits<double>::min(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN(), 0.1;

    // Exactly representable in each narrower type.
    Eigen::MatrixXd as_float = general.unaryExpr([](double x) { return to_float(x); });
    Eigen::MatrixXd as_half(3, 4), as_bf16(3, 4);
    std::uniform_int_distribution<int> pattern(0, 0xFFFF);
    for (Eigen::Index i = 0; i < as_half.size(); ++i) {
        do as_half(i) = ssmdyn::half_to_double(static_cast<std::uint16_t>(pattern(rng)));
        while (std::isnan(as_half(i)));
        do as_bf16(i) = ssmdyn::bfloat16_to_double(static_cast<std::uint16_t>(pattern(rng)));
        while (std::isnan(as_bf16(i)));
    }

    TempPath tmp;
    const std::vector<NamedTensor> tensors = {
        NamedTensor::from_matrix("f64", general, DType::F64),
        NamedTensor::from_vector("f64_specials", specials, DType::F64),
        NamedTensor::from_matrix("f32_exact", as_float, DType::F32),
        NamedTensor::from_matrix("f32_rounded", general, DType::F32),
        NamedTensor::from_matrix("f16_exact", as_half, DType::F16),
        NamedTensor::from_matrix("f16_rounded", general.topRows(2) * 1e-33, DType::F16),
        NamedTensor::from_matrix("bf16_exact", as_bf16, DType::BF16),
        NamedTensor::from_matrix("bf16_rounded", general, DType::BF16),
        NamedTensor{"scalar", DType::F32, {}, {2.5}},
        NamedTensor{"empty", DType::F16, {0, 4}, {}},
        NamedTensor{"cube", DType::F64, {2, 1, 3}, {1, 2, 3, 4, 5, 6}},
        NamedTensor{"odd name \"\n\" \xE2\x82\xAC", DType::BF16, {1}, {1.0}},
    };
    ssmdyn::write_safetensors(tmp.path(), tensors, {{"format", "pt"}, {"q\"uote", "\xC3\xA9"}});

    // The layout, checked on the raw bytes: aligned header, row-major F64 data first.
    const Bytes raw = read_bytes(tmp.path());
    REQUIRE(raw.size() >= 8);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | raw[static_cast<std::size_t>(i)];
    CHECK(n % 8 == 0);
    REQUIRE(8 + n + 8 * 2 <= raw.size());
    const std::string header_text(raw.begin() + 8, raw.begin() + 8 + long(n));
    const auto header = nlohmann::ordered_json::parse(header_text);
    REQUIRE(header.is_object());
    // Compact JSON, padded with spaces; "__metadata__" first, then the tensors in the order given.
    CHECK(header_text.find_last_not_of(' ') + 1 == header.dump().size());
    REQUIRE(header.size() == tensors.size() + 1);
    auto key = header.items().begin();
    CHECK(key.key() == "__metadata__");
    for (const NamedTensor& t : tensors) CHECK((++key).key() == t.name);
    CHECK(header.at("f64").dump() == R"({"dtype":"F64","shape":[7,5],"data_offsets":[0,280]})");
    CHECK(header.at("__metadata__").dump() == "{\"format\":\"pt\",\"q\\\"uote\":\"\xC3\xA9\"}");
    std::uint64_t second = 0;  // general(0, 1): row-major, so the second element of the data
    for (int i = 7; i >= 0; --i) second = (second << 8) | raw[8 + n + 8 + static_cast<std::size_t>(i)];
    CHECK(second == bits_of(general(0, 1)));

    const SafetensorsFile file(tmp.path());
    CHECK(file.names().size() == tensors.size());
    CHECK(file.names()[0] == "f64");
    CHECK(file.metadata().at("q\"uote") == "\xC3\xA9");
    CHECK(file.info("f16_exact").dtype == DType::F16);
    CHECK(file.info("bf16_exact").shape == std::vector<std::int64_t>{3, 4});

    const Eigen::MatrixXd f64 = file.matrix("f64");
    REQUIRE(f64.rows() == 7);
    REQUIRE(f64.cols() == 5);
    for (Eigen::Index i = 0; i < f64.size(); ++i) CHECK(bits_of(f64(i)) == bits_of(general(i)));
    const Eigen::VectorXd sp = file.vector("f64_specials");
    for (Eigen::Index i = 0; i < sp.size(); ++i) CHECK(same(sp(i), specials(i)));

    const Eigen::MatrixXd f32_exact = file.matrix("f32_exact");
    const Eigen::MatrixXd f32_rounded = file.matrix("f32_rounded");
    for (Eigen::Index i = 0; i < general.size(); ++i) {
        CHECK(same(f32_exact(i), as_float(i)));
        // The hardware's double -> float conversion is the independent truth.
        CHECK(same(f32_rounded(i), to_float(general(i))));
    }
    CHECK(f32_rounded(0, 0) == 1.0);  // the tie went to even
    CHECK(f32_rounded(0, 1) == 0.0);
    CHECK(f32_rounded(0, 2) == -std::ldexp(1.0, -149));

    CHECK(equal(file.matrix("f16_exact"), as_half));
    CHECK(equal(file.matrix("bf16_exact"), as_bf16));
    const Eigen::MatrixXd f16 = file.matrix("f16_rounded");
    const Eigen::MatrixXd f16_in = general.topRows(2) * 1e-33;
    const Eigen::MatrixXd bf16 = file.matrix("bf16_rounded");
    for (Eigen::Index i = 0; i < f16.size(); ++i) {
        const double x = f16_in(i);
        CHECK(correctly_rounded(x, ssmdyn::double_to_half(f16(i)), 0x7BFF, ssmdyn::half_to_double));
        if (std::abs(x) >= std::ldexp(1.0, -14) && std::abs(x) < 65504.0)
            CHECK(std::abs(f16(i) - x) <= std::ldexp(std::abs(x), -11));
    }
    for (Eigen::Index i = 0; i < bf16.size(); ++i) {
        CHECK(correctly_rounded(general(i), ssmdyn::double_to_bfloat16(bf16(i)), 0x7F7F, ssmdyn::bfloat16_to_double));
        if (std::abs(general(i)) >= std::ldexp(1.0, -126))
            CHECK(std::abs(bf16(i) - general(i)) <= std::ldexp(std::abs(general(i)), -8));
    }

    CHECK(file.values("scalar") == std::vector<double>{2.5});
    CHECK(file.matrix("empty").rows() == 0);
    CHECK(file.matrix("empty").cols() == 4);
    CHECK(file.values("cube") == std::vector<double>{1, 2, 3, 4, 5, 6});
    CHECK(file.vector("odd name \"\n\" \xE2\x82\xAC")(0) == 1.0);
}

TEST_CASE("safetensors: the writer rejects tensors it cannot write faithfully") {
    TempPath tmp;
    auto write = [&](std::vector<NamedTensor> t) {
        return message_of([&] { ssmdyn::write_safetensors(tmp.path(), t); });
    };
    CHECK(contains(write({{"w", DType::F32, {2, 3}, {1, 2, 3, 4, 5}}}), "\"w\" has 5 values but shape 2x3 needs 6"));
    CHECK(contains(write({{"w", DType::F32, {1}, {1}}, {"w", DType::F64, {1}, {2}}}), "\"w\" appears twice"));
    CHECK(contains(write({{"__metadata__", DType::F32, {1}, {1}}}), "reserved"));
    CHECK(contains(write({{"w", DType::I64, {1}, {1}}}), "unsupported dtype I64; supported: F64, F32, F16, BF16"));
    CHECK(contains(write({{"w", DType::F32, {-1}, {}}}), "negative dimension"));
    CHECK(contains(write({{"w", DType::F64, {std::int64_t(1) << 62, 4}, {}}}), "overflows"));
    CHECK(contains(write({{"bad \xFF", DType::F32, {1}, {1}}}), "tensor name \"bad \xEF\xBF\xBD\" is not valid UTF-8"));
    CHECK(contains(write({{"ok", DType::F32, {1}, {1}}, {"bad \xC3\x28", DType::F32, {1}, {1}}}), "not valid UTF-8"));
    auto write_meta = [&](std::map<std::string, std::string> meta) {
        return message_of([&] { ssmdyn::write_safetensors(tmp.path(), {{"w", DType::F32, {1}, {1}}}, meta); });
    };
    CHECK(contains(write_meta({{"key \xFF", "v"}}), "metadata entry \"key \xEF\xBF\xBD\" is not valid UTF-8"));
    CHECK(contains(write_meta({{"k", "value \xED\xA0\x80"}}), "metadata entry \"k\" is not valid UTF-8"));
    CHECK(contains(write_meta({{"k", "\xE2\x82"}}), "metadata entry \"k\" is not valid UTF-8"));  // truncated
    CHECK(write_meta({{"k", std::string("nul \0 and \x01", 11)}}) == "<no exception>");
    CHECK(SafetensorsFile(tmp.path()).metadata().at("k") == std::string("nul \0 and \x01", 11));
    CHECK(contains(message_of([] { (void)NamedTensor::from_vector("m", Eigen::MatrixXd(2, 2)); }), "not a vector"));
    const std::string missing_dir =
        (std::filesystem::temp_directory_path() / "ssmdyn-no-such-dir-8c1f" / "x.safetensors").string();
    CHECK(contains(message_of([&] { ssmdyn::write_safetensors(missing_dir, {}); }), "cannot open the file for writing"));

    // An empty file list is a valid file.
    ssmdyn::write_safetensors(tmp.path(), {});
    CHECK(SafetensorsFile(tmp.path()).names().empty());
}

// ---------------------------------------------------------------------------------------
// Malformed files.

TEST_CASE("safetensors: malformed files are rejected with a message naming the problem") {
    auto open = [](const Bytes& bytes) {
        return message_of([&] { (void)SafetensorsFile::from_bytes(bytes, "bad.safetensors"); });
    };
    auto entry = [](const std::string& body) { return assemble("{\"w\":" + body + "}", Bytes(24, 0)); };
    const std::string ok = R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";
    REQUIRE(open(entry(ok)) == "<no exception>");

    SECTION("the file itself") {
        TempPath tmp;
        CHECK(contains(message_of([&] { SafetensorsFile f(tmp.path()); }), "cannot be opened"));
        CHECK(contains(message_of([&] { SafetensorsFile f(tmp.path()); }), tmp.path()));
        const std::string dir = std::filesystem::temp_directory_path().string();
        CHECK(contains(message_of([&] { SafetensorsFile f(dir); }), "is a directory"));
        write_bytes(tmp.path(), Bytes{1, 0, 0, 0, 0});
        CHECK(contains(message_of([&] { SafetensorsFile f(tmp.path()); }),
                       "is 5 bytes long, shorter than the 8-byte header length"));
        write_bytes(tmp.path(), Bytes{});
        CHECK(contains(message_of([&] { SafetensorsFile f(tmp.path()); }), "is 0 bytes long"));
    }
    SECTION("the header length") {
        Bytes huge;
        put_le(huge, std::uint64_t(1) << 40, 8);
        CHECK(contains(open(huge), "declares a header of 1099511627776 bytes, larger than the limit of 100000000"));
        Bytes too_long;
        put_le(too_long, 100, 8);
        too_long.resize(28, ' ');
        CHECK(contains(open(too_long), "declares a header of 100 bytes, larger than the 20 bytes after the length"));
        Bytes max;
        put_le(max, ~std::uint64_t(0), 8);
        CHECK(contains(open(max), "larger than the limit"));
    }
    SECTION("the header JSON") {
        CHECK(contains(open(assemble("{\"w\":")), "header that is not valid JSON"));
        CHECK(contains(open(assemble("{\"w\":")), "at byte 5 of the header"));
        CHECK(contains(open(assemble("")), "has an empty header (0 bytes)"));
        CHECK(contains(open(assemble("[1, 2]")), "header that is a JSON array, not an object"));
        CHECK(contains(open(assemble("{} x")), "not valid JSON"));
        CHECK(contains(open(assemble("{\"w\":1,\"w\":2}")), "duplicate object key \"w\""));
        CHECK(contains(open(assemble("{\"\xC3\x28\":1}")), "ill-formed UTF-8"));
        CHECK(contains(open(assemble("{\"__metadata__\":[]}")), "\"__metadata__\" that is an array"));
        CHECK(contains(open(assemble("{\"__metadata__\":{\"k\":1}}")),
                       "\"__metadata__\" entry \"k\" that is a number, not a string"));
        CHECK(open(assemble("{}   ")) == "<no exception>");
        CHECK(open(assemble("{\"__metadata__\":{}}")) == "<no exception>");
    }
    SECTION("tensor entries") {
        const std::string m = open(entry("3"));
        CHECK(contains(m, "bad.safetensors"));
        CHECK(contains(m, "tensor \"w\" entry is a number, not an object"));
        CHECK(contains(open(entry(R"({"shape":[2,3],"data_offsets":[0,24]})")), "tensor \"w\" has no \"dtype\""));
        CHECK(contains(open(entry(R"({"dtype":"F32","data_offsets":[0,24]})")), "has no \"shape\""));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3]})")), "has no \"data_offsets\""));
        CHECK(contains(open(entry(R"({"dtype":32,"shape":[2,3],"data_offsets":[0,24]})")),
                       "\"dtype\" is a number, expected a string"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":"2x3","data_offsets":[0,24]})")),
                       "\"shape\" is a string, expected an array"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":{}})")),
                       "\"data_offsets\" is an object, expected an array"));
    }
    SECTION("shapes") {
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[-2,-3],"data_offsets":[0,24]})")),
                       "shape[0] = -2 is not a non-negative integer"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3.0],"data_offsets":[0,24]})")),
                       "shape[1] = 3.0 is not a non-negative integer"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3e0],"data_offsets":[0,24]})")), "shape[1] = 3e0"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[true],"data_offsets":[0,24]})")),
                       "shape[0] is a boolean"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,24]})")),
                       "(below 2^63)"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,24]})")),
                       "overflows a 64-bit integer"));
        CHECK(contains(open(entry(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,24]})")),
                       "overflows a 64-bit integer"));
        // A zero dimension empties the tensor whatever the others are.
        CHECK(open(entry(R"({"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[3,3]})")) ==
              "<no exception>");
    }
    SECTION("dtypes") {
        CHECK(contains(open(entry(R"({"dtype":"Q4","shape":[2,3],"data_offsets":[0,24]})")),
                       "tensor \"w\" has unknown dtype \"Q4\"; supported: F64, F32, F16, BF16"));
        CHECK(contains(open(entry(R"({"dtype":"f32","shape":[2,3],"data_offsets":[0,24]})")), "unknown dtype"));
        // A safetensors dtype that is not floating point: the file opens, the values do not.
        const auto bytes = entry(R"({"dtype":"I64","shape":[3],"data_offsets":[0,24]})");
        const auto file = SafetensorsFile::from_bytes(bytes, "ints.safetensors");
        CHECK(file.info("w").dtype == DType::I64);
        const std::string unsupported = "tensor \"w\" has unsupported dtype I64; supported: F64, F32, F16, BF16";
        CHECK(contains(message_of([&] { (void)file.vector("w"); }), unsupported));
        CHECK(contains(message_of([&] { (void)file.values("w"); }), unsupported));
        CHECK(contains(message_of([&] { (void)file.values("w"); }), "ints.safetensors"));
    }
    SECTION("data offsets") {
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[24,0]})")),
                       "has data_offsets [24, 0] with begin > end"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[8,32]})")),
                       "has data_offsets [8, 32] ending beyond the 24-byte data section"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0]})")),
                       "\"data_offsets\" has 1 entries, expected two"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24,48]})")), "has 3 entries"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":["0",24]})")),
                       "data_offsets[0] is a string"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,-24]})")),
                       "data_offsets[1] = -24 is not a non-negative integer"));
        CHECK(contains(open(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,16]})")),
                       "has data_offsets spanning 16 bytes, but shape 2x3 of F32 needs 24 bytes"));
        CHECK(contains(open(entry(R"({"dtype":"F16","shape":[2,3],"data_offsets":[0,24]})")),
                       "shape 2x3 of F16 needs 12 bytes"));
    }
    SECTION("asking for the wrong tensor or rank") {
        const auto file = SafetensorsFile::from_bytes(entry(ok), "x.safetensors");
        CHECK(contains(message_of([&] { (void)file.info("v"); }), "x.safetensors' has no tensor named \"v\""));
        CHECK(contains(message_of([&] { (void)file.matrix("v"); }), "no tensor named \"v\""));
        CHECK(contains(message_of([&] { (void)file.vector("w"); }),
                       "tensor \"w\" has shape 2x3 (2-D); vector() needs a 1-D tensor"));
        const auto vec = SafetensorsFile::from_bytes(
            entry(R"({"dtype":"F32","shape":[6],"data_offsets":[0,24]})"), "x.safetensors");
        CHECK(contains(message_of([&] { (void)vec.matrix("w"); }), "has shape 6 (1-D); matrix() needs a 2-D tensor"));
        const auto scalar = SafetensorsFile::from_bytes(
            entry(R"({"dtype":"F32","shape":[],"data_offsets":[0,4]})"), "x.safetensors");
        CHECK(contains(message_of([&] { (void)scalar.matrix("w"); }), "has shape scalar (0-D)"));
        CHECK(scalar.values("w") == std::vector<double>{0.0});
    }
}

// ---------------------------------------------------------------------------------------
// The header's JSON: nlohmann_json, with the strictness it lacks added by the reader.

TEST_CASE("safetensors: the header may use any JSON the format allows") {
    // Escapes, raw UTF-8, whitespace, key order and fields the reader ignores.
    const std::string header =
        " {\"__metadata__\" : {\"s\": \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20AC\\uD83D\\uDE00\xC3\xBC\", "
        "\"nul\": \"\\u0000\"},\n"
        "  \"x\\u00e9\\uD83D\\uDE00\": {\"shape\": [2], \"extra\": [[], {}, [1, [2]], true, false, null, -1.5e-3, "
        "1E+2, -9223372036854775808, 18446744073709551616, \"\\u0000\"], \"data_offsets\": [-0, 8],\r\n"
        "  \"dtype\": \"F32\"},\t\"z\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 8]}}\t\r\n  ";
    const auto file = SafetensorsFile::from_bytes(assemble(header, Bytes(8, 0)), "good.safetensors");
    const std::string x = "x\xC3\xA9\xF0\x9F\x98\x80";
    CHECK(file.names() == std::vector<std::string>{x, "z"});  // document order, not sorted
    CHECK(file.metadata().at("s") == "a\"b\\c/d\b\f\n\r\t\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xC3\xBC");
    CHECK(file.metadata().at("nul") == std::string(1, '\0'));
    CHECK(file.info(x).shape == std::vector<std::int64_t>{2});
    CHECK(file.info(x).begin == 0);  // -0 is the integer 0
    CHECK(file.values(x) == std::vector<double>{0.0, 0.0});

    // The largest integer accepted, 2^63 - 1, is read as such (and then found too large).
    const std::string largest = R"({"w":{"dtype":"U8","shape":[9223372036854775807],)"
                                R"("data_offsets":[0,9223372036854775807]}})";
    CHECK(contains(message_of([&] { (void)SafetensorsFile::from_bytes(assemble(largest)); }),
                   "data_offsets [0, 9223372036854775807] ending beyond the 0-byte data section"));
    // 64 levels of nesting are fine (the top-level object and the entry are two of them).
    const std::string deep = std::string(62, '[') + std::string(62, ']');
    CHECK(message_of([&] {
              (void)SafetensorsFile::from_bytes(
                  assemble(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":)" + deep + "}}", Bytes(4, 0)));
          }) == "<no exception>");
}

TEST_CASE("safetensors: the header is strict JSON, every deviation named with its place") {
    auto open = [](const std::string& header, const Bytes& data = {}) {
        return message_of([&] { (void)SafetensorsFile::from_bytes(assemble(header, data), "bad.safetensors"); });
    };
    const std::string ok = R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";
    auto entry = [&](const std::string& body) {
        return message_of([&] {
            (void)SafetensorsFile::from_bytes(assemble("{\"w\":" + body + "}", Bytes(24, 0)), "bad.safetensors");
        });
    };
    REQUIRE(entry(ok) == "<no exception>");
    const std::string not_json = "bad.safetensors' has a header that is not valid JSON: ";

    SECTION("duplicate keys, at every level") {
        // nlohmann::json::parse would keep the last of each silently.
        CHECK(open("{\"w\":" + ok + ",\"w\":" + ok + "}", Bytes(24, 0)) ==
              "safetensors file '" + not_json + "duplicate object key \"w\" in the top-level object");
        CHECK(contains(open("{\"w\":" + ok + ",\"\\u0077\":" + ok + "}", Bytes(24, 0)),
                       "duplicate object key \"w\" in the top-level object"));  // the same key once unescaped
        CHECK(contains(open(R"({"__metadata__":{},"__metadata__":{}})"),
                       "duplicate object key \"__metadata__\" in the top-level object"));
        CHECK(contains(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"dtype":"F64"})"),
                       not_json + "duplicate object key \"dtype\" in the entry of tensor \"w\""));
        CHECK(contains(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"data_offsets":[0,24]})"),
                       "duplicate object key \"data_offsets\" in the entry of tensor \"w\""));
        CHECK(contains(open(R"({"__metadata__":{"k":"a","k":"b"}})"),
                       not_json + "duplicate object key \"k\" in \"__metadata__\""));
        CHECK(contains(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"x":{"y":[1,{"a":1,"a":2}]}})"),
                       "duplicate object key \"a\" in the object at \"/w/x/y/1\""));
        // Keys that differ only after a NUL are different keys.
        CHECK(open(R"({"__metadata__":{"k\u0000a":"1","k\u0000b":"2"}})") == "<no exception>");
    }
    SECTION("bytes after the JSON value") {
        CHECK(open("{}    ") == "<no exception>");  // the writer's padding
        CHECK(open("{} \t\r\n") == "<no exception>");
        const std::string m = open("{} x");
        CHECK(contains(m, not_json + "unexpected content after the JSON value ("));
        CHECK(contains(m, "expected end of input"));
        CHECK(contains(m, ") at byte 3 of the header"));
        CHECK(contains(open("{}{}"), "unexpected content after the JSON value"));
        CHECK(contains(open("{}{}"), "at byte 2 of the header"));
        CHECK(contains(open("{} ]"), "at byte 3 of the header"));
        CHECK(contains(open("{} 1"), "after the JSON value"));
        CHECK(contains(open("{\"w\":" + ok + "} \"w\"", Bytes(24, 0)), "after the JSON value"));
        // A NUL byte: nlohmann's lexer would take it for the end of the text and accept.
        CHECK(open(std::string("{}\0", 3)) ==
              "safetensors file '" + not_json + "unexpected byte 0x00 (NUL) after the JSON value" +
                  " at byte 2 of the header");
        CHECK(contains(open(std::string("{}   \0\0\0", 8)), "byte 0x00 (NUL) after the JSON value at byte 5"));
        CHECK(contains(open(std::string("{}\0garbage", 10)), "(NUL) after the JSON value at byte 2"));
        CHECK(contains(open("{\"w\":" + ok + std::string("}\0", 2), Bytes(24, 0)),
                       "(NUL) after the JSON value at byte " + std::to_string(6 + ok.size())));
        // ... and before the end of the value, where nlohmann would see an early end.
        CHECK(contains(open(std::string("{\"w\"\0:1}", 8)),
                       not_json + "unexpected byte 0x00 (NUL) at byte 4 of the header"));
        CHECK(contains(open(std::string("{\"a\0b\":\"c\"}", 11)), "unexpected byte 0x00 (NUL) at byte 3 of the"));
        CHECK(contains(open(std::string("\0{}", 3)), "unexpected byte 0x00 (NUL) at byte 0 of the header"));
    }
    SECTION("deep nesting is refused, not a stack overflow") {
        const std::string too_deep = std::string(63, '[') + std::string(63, ']');
        CHECK(contains(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"x":)" + too_deep + "}"),
                       not_json + "arrays and objects nested deeper than 64 levels"));
        CHECK(contains(open(std::string(200000, '[')), "nested deeper than 64 levels"));
        CHECK(contains(open(std::string(200000, '[') + std::string(200000, ']')), "nested deeper than 64 levels"));
        CHECK(contains(open("{\"w\":" + std::string(200000, '[')), "nested deeper than 64 levels"));
        std::string objects;
        for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
        CHECK(contains(open(objects), "nested deeper than 64 levels"));
        CHECK(contains(open(std::string(100000, '{')), "at byte 1 of the header"));  // a key was expected
    }
    SECTION("invalid UTF-8 and bad strings") {
        const std::vector<std::pair<std::string, std::size_t>> cases = {
            {"{\"\xC3\x28\":1}", 3},                        // a lead byte without its continuation
            {"{\"\xC0\xAF\":1}", 2},                        // overlong '/'
            {"{\"\xED\xA0\x80\":1}", 3},                    // an encoded surrogate
            {"{\"\xF4\x90\x80\x80\":1}", 3},                // above U+10FFFF
            {"{\"\xE2\x82\":1}", 4},                        // truncated sequence
            {"{\"\xFF\":1}", 2},
            {"{\"__metadata__\":{\"k\":\"v \xFE\"}}", 24},  // in a metadata value
        };
        for (const auto& [header, offset] : cases) {
            CAPTURE(header);
            const std::string m = open(header);
            CHECK(contains(m, not_json + "syntax error"));
            CHECK(contains(m, "ill-formed UTF-8 byte"));
            CHECK(contains(m, "at byte " + std::to_string(offset) + " of the header"));
            // The message quotes the bytes read, printable: no raw byte of the bad input.
            CHECK(std::all_of(m.begin(), m.end(), [](char c) { return c >= 0x20 && c < 0x7F; }));
        }
        CHECK(contains(open("{\"w\":" + ok + ",\"bad \xC3\x28\":" + ok + "}", Bytes(24, 0)), "\\xC3("));
        CHECK(contains(open("\x80"), "invalid literal; last read: '\\x80' at byte 0"));
        CHECK(contains(open(R"({"\uD800":1})"), "surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF"));
        CHECK(contains(open(R"({"\uDC00":1})"), "surrogate"));
        CHECK(contains(open("{\"a\x01\":1}"), "control character U+0001 (SOH) must be escaped"));
        CHECK(contains(open("{\"a\nb\":1}"), "control character U+000A (LF) must be escaped"));
        CHECK(contains(open(R"({"a\x":1})"), "forbidden character after backslash"));
        CHECK(contains(open(R"({"\u12G4":1})"), "'\\u' must be followed by 4 hex digits"));
        CHECK(contains(open("{\"abc"), "missing closing quote"));
        // A long bad string is quoted by its end only.
        const std::string long_key = "{\"" + std::string(100000, 'k') + "\xFF\":1}";
        const std::string m = open(long_key);
        CHECK(contains(m, "last read: '...kkkk"));
        CHECK(contains(m, "at byte 100002 of the header"));
        CHECK(m.size() < 400);
    }
    SECTION("numbers that are not integers in [0, 2^63)") {
        auto shape = [&](const std::string& dims, const std::string& offsets = "[0,24]") {
            return entry(R"({"dtype":"F32","shape":)" + dims + R"(,"data_offsets":)" + offsets + "}");
        };
        const std::string bad = " is not a non-negative integer (below 2^63)";
        CHECK(contains(shape("[2,-3]"), "tensor \"w\" shape[1] = -3" + bad));
        CHECK(contains(shape("[9223372036854775808]"), "shape[0] = 9223372036854775808" + bad));
        CHECK(contains(shape("[18446744073709551615]"), "shape[0] = 18446744073709551615" + bad));
        // Beyond 64 bits nlohmann stores a double; the message quotes the number as written.
        CHECK(contains(shape("[18446744073709551616]"), "shape[0] = 18446744073709551616" + bad));
        CHECK(contains(shape("[2,99999999999999999999999999999]"), "shape[1] = 99999999999999999999999999999" + bad));
        CHECK(contains(shape("[-9223372036854775809]"), "shape[0] = -9223372036854775809" + bad));
        CHECK(contains(shape("[2,3.0]"), "shape[1] = 3.0" + bad));
        CHECK(contains(shape("[2,3e0]"), "shape[1] = 3e0" + bad));
        CHECK(contains(shape("[2.50,3e0]"), "shape[0] = 2.50" + bad));
        CHECK(contains(shape("[2,0.3E1]"), "shape[1] = 0.3E1" + bad));
        CHECK(contains(shape("[2,3]", "[0,24.0]"), "tensor \"w\" data_offsets[1] = 24.0" + bad));
        CHECK(contains(shape("[2,3]", "[0.0,24]"), "data_offsets[0] = 0.0" + bad));
        CHECK(contains(shape("[2,3]", "[0,2.4e1]"), "data_offsets[1] = 2.4e1" + bad));
        CHECK(contains(shape("[2,3]", "[0,18446744073709551616]"), "data_offsets[1] = 18446744073709551616" + bad));
        CHECK(contains(shape("[2,3]", "[-1,24]"), "data_offsets[0] = -1" + bad));
        CHECK(contains(shape("[2,3]", "[null,24]"), "data_offsets[0] is null, not a non-negative integer"));
        // Too large even for a double: nlohmann refuses the number itself, at its first digit.
        const std::string m = shape("[2,3]", "[0,1e400]");
        CHECK(contains(m, not_json + "number overflow parsing '1e400'"));
        const std::string before = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,)";
        CHECK(contains(m, "at byte " + std::to_string(before.size()) + " of the header"));
    }
    SECTION("other deviations nlohmann refuses, with its byte offset") {
        struct Bad {
            std::string text;
            std::size_t offset;
            const char* problem;
        };
        const std::vector<Bad> cases = {
            {"   ", 3, "unexpected end of input"},
            {"{", 1, "unexpected end of input; expected string literal"},
            {"{\"w\":", 5, "unexpected end of input"},
            {"{\"a\" 1}", 5, "expected ':'"},
            {"{\"a\":1,}", 7, "expected string literal"},
            {"{\"a\":1 \"b\":2}", 9, "expected '}'"},  // nlohmann: the end of the token
            {"{1:2}", 1, "expected string literal"},
            {"{\"a\":[1,]}", 8, "unexpected ']'"},
            {"{\"a\":01}", 6, "unexpected number literal"},
            {"{\"a\":-}", 6, "expected digit after '-'"},
            {"{\"a\":1.}", 7, "expected digit after '.'"},
            {"{\"a\":1e}", 7, "digit after exponent"},
            {"{\"a\":.5}", 5, "invalid literal"},
            {"{\"a\":+1}", 5, "invalid literal"},
            {"{\"a\":NaN}", 5, "invalid literal"},
            {"{\"a\":tru}", 8, "invalid literal"},
            {"{'a':1}", 1, "invalid literal"},
            {"// c\n{}", 0, "invalid literal"},  // no comments
            {"{\"a\":1 /* c */}", 7, "invalid literal"},
            {"\xEF{}", 1, "invalid BOM"},
        };
        for (const Bad& bad : cases) {
            CAPTURE(bad.text);
            const std::string m = open(bad.text);
            CHECK(contains(m, not_json));
            CHECK(contains(m, bad.problem));
            CHECK(contains(m, " at byte " + std::to_string(bad.offset) + " of the header"));
            CHECK(!contains(m, "[json.exception"));  // nlohmann's prefix and line/column go
            CHECK(!contains(m, "column"));
        }
        // nlohmann skips a byte-order mark; JSON text must not start with one.
        CHECK(contains(open("\xEF\xBB\xBF{}"), not_json + "unexpected byte-order mark (EF BB BF) at byte 0"));
    }
}

TEST_CASE("safetensors: truncated and corrupted files throw invalid_argument and nothing else") {
    // A valid file with every supported dtype, metadata and a scalar.
    TempPath tmp;
    std::mt19937 rng(5);
    std::normal_distribution<double> g;
    Eigen::MatrixXd m(3, 4);
    for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = g(rng);
    ssmdyn::write_safetensors(tmp.path(),
                              {NamedTensor::from_matrix("layers.0.w", m, DType::F32),
                               NamedTensor::from_matrix("layers.0.h", m, DType::F16),
                               NamedTensor::from_vector("layers.0.b", m.col(0), DType::BF16),
                               NamedTensor::from_matrix("layers.1.w", m.transpose(), DType::F64),
                               NamedTensor{"s", DType::F32, {}, {1.5}}},
                              {{"format", "pt"}});
    const Bytes good = read_bytes(tmp.path());
    REQUIRE(good.size() > 100);

    // Opens and reads every tensor in every way; true on success.
    auto attempt = [](const Bytes& bytes) {
        try {
            const auto file = SafetensorsFile::from_bytes(bytes);
            for (const std::string& name : file.names()) {
                const auto& info = file.info(name);
                (void)file.values(name);
                if (info.shape.size() == 2) (void)file.matrix(name);
                if (info.shape.size() == 1) (void)file.vector(name);
            }
            return true;
        } catch (const std::invalid_argument&) {
            return false;
        }
    };
    REQUIRE(attempt(good));

    // Every truncation: the data section is fully used, so each one must be rejected.
    int rejected = 0;
    for (std::size_t n = 0; n < good.size(); ++n)
        if (!attempt(Bytes(good.begin(), good.begin() + static_cast<long>(n)))) ++rejected;
    CHECK(rejected == static_cast<int>(good.size()));

    // Random corruption, mostly of the header, half of it with JSON-significant bytes.
    std::uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | good[static_cast<std::size_t>(i)];
    const std::string interesting = "{}[]\":,\\-0123456789eE.u tfn\x80\xFF";
    std::uniform_int_distribution<std::size_t> in_header(0, 8 + header_size - 1);
    std::uniform_int_distribution<std::size_t> anywhere(0, good.size() - 1);
    std::uniform_int_distribution<int> flips(1, 4), byte(1, 255), coin(0, 1);
    std::uniform_int_distribution<std::size_t> pick(0, interesting.size() - 1);
    int accepted = 0, failed = 0;
    for (int trial = 0; trial < 2000; ++trial) {
        Bytes bad = good;
        for (int k = flips(rng); k > 0; --k) {
            const std::size_t at = coin(rng) ? in_header(rng) : (coin(rng) ? in_header(rng) : anywhere(rng));
            if (coin(rng)) bad[at] ^= static_cast<unsigned char>(byte(rng));
            else bad[at] = static_cast<unsigned char>(interesting[pick(rng)]);
        }
        if (attempt(bad)) ++accepted;
        else ++failed;
    }
    CAPTURE(accepted, failed);
    CHECK(accepted + failed == 2000);
    CHECK(failed > 500);
    CHECK(accepted > 0);  // e.g. flips inside the data section or padding
}

TEST_CASE("safetensors: parse_dtype inverts to_string for every dtype") {
    using ssmdyn::DType;
    for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                    DType::U64, DType::U32, DType::U16, DType::U8, DType::Bool, DType::F8E5M2, DType::F8E4M3})
        CHECK(ssmdyn::parse_dtype(ssmdyn::to_string(t)) == t);
    CHECK(test::message_of([] { (void)ssmdyn::parse_dtype("f32"); }).find("dtype 'f32' is unknown; use F64") == 0);
}

// Hostile files: what is refused before reading, and what is read only on request.

TEST_CASE("safetensors: FIFOs, devices and directories are refused before they are opened") {
    // A FIFO with no writer: opening it for reading would block forever.
    TempPath fifo;
    REQUIRE(::mkfifo(fifo.path().c_str(), 0600) == 0);
    const std::string m = message_of([&] { SafetensorsFile f(fifo.path()); });
    CHECK(contains(m, "safetensors file '" + fifo.path() + "' is a FIFO (named pipe), not a regular file"));
    // A device: /dev/zero would supply zeros without end.
    CHECK(contains(message_of([] { SafetensorsFile f("/dev/zero"); }),
                   "safetensors file '/dev/zero' is a device, not a regular file"));
    CHECK(contains(message_of([] { SafetensorsFile f("/dev/null"); }), "is a device"));
    CHECK(contains(message_of([] { SafetensorsFile f("/"); }), "is a directory"));
}

TEST_CASE("safetensors: a header length beyond the file is refused without reading the file") {
    // An 8 GB sparse file (no disk blocks) whose header length is larger than the file:
    // refused after reading its first 8 bytes (reading it whole took 40 s and 8.4 GB).
    TempPath tmp;
    const std::uint64_t size = std::uint64_t(8) << 30;
    {
        Bytes head;
        put_le(head, size, 8);  // declares a header as long as the file
        write_bytes(tmp.path(), head);
    }
    std::error_code ec;
    std::filesystem::resize_file(tmp.path(), size, ec);
    if (ec) {
        WARN("cannot make an 8 GB sparse file here: " << ec.message());
        return;
    }
    const auto start = std::chrono::steady_clock::now();
    const std::string m = message_of([&] { SafetensorsFile f(tmp.path()); });
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    CHECK(contains(m, "declares a header of 8589934592 bytes, larger than the limit of 100000000"));
    CHECK(took.count() < 1.0);

    // Within the limit but beyond the file: named with both sizes.
    Bytes small;
    put_le(small, 1000, 8);
    small.resize(100, ' ');
    write_bytes(tmp.path(), small);
    CHECK(contains(message_of([&] { SafetensorsFile f(tmp.path()); }),
                   "declares a header of 1000 bytes, larger than the 92 bytes after the length field"));
}

TEST_CASE("safetensors: tensors are read from their offsets, on request, within the memory limit") {
    TempPath tmp;
    Eigen::MatrixXd a(2, 3), b(4, 1);
    a << 1, 2, 3, 4, 5, 6;
    b << -1, -2, -3, -4;
    ssmdyn::write_safetensors(tmp.path(), {NamedTensor::from_matrix("a", a, DType::F32),
                                           NamedTensor::from_matrix("b", b, DType::BF16)});
    const SafetensorsFile file(tmp.path());
    CHECK(equal(file.matrix("b"), b));  // in any order, any number of times
    CHECK(equal(file.matrix("a"), a));
    CHECK(equal(file.matrix("b"), b));
    const SafetensorsFile copy = file;  // copies share the open file
    CHECK(copy.values("a").size() == 6);

    // A tensor whose values as doubles are above the memory limit is refused, naming it.
    ssmdyn::set_memory_limit(16);
    const std::string m = message_of([&] { (void)file.matrix("a"); });
    ssmdyn::set_memory_limit(0);
    CHECK(contains(m, "tensor \"a\" of shape 2x3 (6 values as doubles) needs 48 bytes"));
    CHECK(contains(m, "more than the memory limit of 16 bytes"));

    // The file cut short after it was opened: the read fails with a message, not garbage.
    std::filesystem::resize_file(tmp.path(), std::filesystem::file_size(tmp.path()) - 4);
    const SafetensorsFile* f = &file;
    CHECK(contains(message_of([&] { (void)f->matrix("b"); }), "tensor \"b\" could not be read: the file ended"));
}
