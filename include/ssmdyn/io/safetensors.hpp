#pragma once
/// \file safetensors.hpp
/// Reading (and writing) tensors in the safetensors format, the format trained Mamba
/// checkpoints are distributed in.
///
/// Layout of a file: an 8-byte little-endian unsigned header length n, then n bytes of
/// UTF-8 JSON, then the data section. The header maps each tensor name to
/// `{"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}` (byte offsets
/// into the data section; elements little-endian, row-major), plus an optional
/// `"__metadata__"` object of string values.
///
/// The reader treats the file as untrusted: only regular files are opened (a FIFO or a
/// device is refused before opening it), every length and offset is checked against the
/// bytes actually present before anything is read (the header length against the file
/// size and a 100 MB limit before the header is read), tensor data is read from its
/// offset only when asked for and only after check_allocation() (core/memory_limit.hpp)
/// accepted its size as doubles, and every problem is a std::invalid_argument naming the
/// file, the tensor and what is wrong. The header is
/// parsed by nlohmann_json, made stricter than its DOM parser (see detail::HeaderBuilder):
/// a duplicate key, nesting deeper than 64 levels, a byte-order mark, or anything but
/// whitespace after the JSON value (a NUL byte included) is an error. Values convert to
/// double exactly (F64, F32, F16, BF16; subnormals, infinities and NaN included).
///
/// \code
/// ssmdyn::SafetensorsFile file("model.safetensors");
/// Eigen::MatrixXd A_log = file.matrix("backbone.layers.0.mixer.A_log");
/// \endcode

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "../core/detail/enum_names.hpp"
#include "../core/memory_limit.hpp"
#include "../core/state.hpp"

namespace ssmdyn {

/// Element types of the safetensors format. Every one can be described by TensorInfo;
/// the floating-point types F64, F32, F16 and BF16 can also be read as (and written
/// from) double — see is_supported().
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, Bool, F8E5M2, F8E4M3 };

/// The dtype's name as written in a safetensors header, e.g. "BF16", "F8_E4M3".
inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::F64: return "F64";
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I64: return "I64";
        case DType::I32: return "I32";
        case DType::I16: return "I16";
        case DType::I8: return "I8";
        case DType::U64: return "U64";
        case DType::U32: return "U32";
        case DType::U16: return "U16";
        case DType::U8: return "U8";
        case DType::Bool: return "BOOL";
        case DType::F8E5M2: return "F8_E5M2";
        case DType::F8E4M3: return "F8_E4M3";
    }
    return "?";
}

/// Bytes per element of the dtype.
inline std::size_t dtype_size(DType t) {
    switch (t) {
        case DType::F64: case DType::I64: case DType::U64: return 8;
        case DType::F32: case DType::I32: case DType::U32: return 4;
        case DType::F16: case DType::BF16: case DType::I16: case DType::U16: return 2;
        case DType::I8: case DType::U8: case DType::Bool: case DType::F8E5M2: case DType::F8E4M3: return 1;
    }
    return 1;
}

/// Whether values of this dtype convert to and from double here (F64, F32, F16, BF16).
inline bool is_supported(DType t) {
    return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

/// The dtype's name (to_string for every enum of the library; the same as dtype_name).
inline const char* to_string(DType t) { return dtype_name(t); }

/// The DType called `name` (as written in a header, e.g. "BF16"); throws std::invalid_argument.
inline DType parse_dtype(const std::string& name) {
    static constexpr DType all[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                    DType::I32, DType::I16, DType::I8,  DType::U64,  DType::U32,
                                    DType::U16, DType::U8,  DType::Bool, DType::F8E5M2, DType::F8E4M3};
    return detail::parse_enum(name, all, "dtype");
}

namespace detail {

inline const char* supported_dtypes() { return "F64, F32, F16, BF16"; }

/// The dtype named `name` in a header, if it is one of the safetensors dtypes.
inline bool parse_dtype(const std::string& name, DType& out) {
    for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                    DType::I16, DType::I8, DType::U64, DType::U32, DType::U16, DType::U8, DType::Bool,
                    DType::F8E5M2, DType::F8E4M3})
        if (name == dtype_name(t)) {
            out = t;
            return true;
        }
    return false;
}

/// The value of an IEEE-754-style binary format with `exp_bits` exponent bits and
/// `man_bits` stored mantissa bits (F16: 5, 10; BF16: 8, 7; F32: 8, 23), given its bit
/// pattern. Exact: every such value is a double. NaN keeps its sign, not its payload.
inline double decode_binary(std::uint64_t bits, int exp_bits, int man_bits) {
    const bool negative = (bits >> (exp_bits + man_bits)) & 1u;
    const std::uint64_t exp_max = (std::uint64_t(1) << exp_bits) - 1;
    const std::uint64_t e = (bits >> man_bits) & exp_max;
    const std::uint64_t f = bits & ((std::uint64_t(1) << man_bits) - 1);
    const int bias = (1 << (exp_bits - 1)) - 1;
    double magnitude;
    if (e == exp_max)
        magnitude = f != 0 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    else if (e == 0)  // zero and subnormals: f · 2^(1 − bias − man_bits)
        magnitude = std::ldexp(static_cast<double>(f), 1 - bias - man_bits);
    else
        magnitude = std::ldexp(static_cast<double>(f | (std::uint64_t(1) << man_bits)),
                               static_cast<int>(e) - bias - man_bits);
    return negative ? -magnitude : magnitude;
}

/// The bit pattern of the binary format (see decode_binary) nearest to v, ties to even,
/// rounding directly from the double (no double rounding through float). Values beyond
/// the largest finite number by half an ulp or more become ±infinity, as in IEEE-754;
/// NaN becomes a quiet NaN of the same sign.
inline std::uint64_t encode_binary(double v, int exp_bits, int man_bits) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    const std::uint64_t sign = (b >> 63) << (exp_bits + man_bits);
    const std::uint64_t exp_field_max = ((std::uint64_t(1) << exp_bits) - 1) << man_bits;
    const int double_exp = static_cast<int>((b >> 52) & 0x7FF);
    const std::uint64_t double_man = b & ((std::uint64_t(1) << 52) - 1);
    if (double_exp == 0x7FF)
        return sign | exp_field_max | (double_man != 0 ? std::uint64_t(1) << (man_bits - 1) : 0);
    // |v| = m · 2^q with m an integer below 2^53.
    std::uint64_t m;
    int q;
    if (double_exp == 0) {
        if (double_man == 0) return sign;
        m = double_man;
        q = -1074;
    } else {
        m = double_man | (std::uint64_t(1) << 52);
        q = double_exp - 1075;
    }
    int bit_length = 0;
    for (std::uint64_t t = m; t != 0; t >>= 1) ++bit_length;
    const int e = bit_length - 1 + q;  // floor(log2 |v|)
    const int bias = (1 << (exp_bits - 1)) - 1;
    const int e_min = 1 - bias;
    // The target's unit in the last place is 2^k; below e_min the format is subnormal.
    const int k = (e < e_min ? e_min : e) - man_bits;
    const int shift = k - q;
    std::uint64_t mantissa;  // |v| / 2^k rounded to an integer, ties to even
    if (shift <= 0) {
        mantissa = m << -shift;
    } else if (shift >= 64) {
        mantissa = 0;  // |v| < 2^(53+q) <= 2^(k−11): below half an ulp
    } else {
        mantissa = m >> shift;
        const std::uint64_t rest = m & ((std::uint64_t(1) << shift) - 1);
        const std::uint64_t half = std::uint64_t(1) << (shift - 1);
        if (rest > half || (rest == half && (mantissa & 1u))) ++mantissa;
    }
    // Subnormal: the mantissa is the pattern (a carry to 2^man_bits is the smallest
    // normal, correctly). Normal: the implicit bit of the mantissa adds one to the biased
    // exponent e + bias − 1, and a rounding carry moves on into the exponent.
    const std::uint64_t magnitude =
        e < e_min ? mantissa : (static_cast<std::uint64_t>(e + bias - 1) << man_bits) + mantissa;
    if (magnitude >= exp_field_max) return sign | exp_field_max;  // overflow: infinity
    return sign | magnitude;
}

inline std::uint64_t load_le(const unsigned char* p, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    return v;
}

inline void store_le(std::vector<unsigned char>& out, std::uint64_t v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<unsigned char>((v >> (8 * i)) & 0xFF));
}

/// The element at p (dtype_size(t) readable bytes, any alignment) as a double.
inline double decode_element(const unsigned char* p, DType t) {
    switch (t) {
        case DType::F64: {
            const std::uint64_t bits = load_le(p, 8);
            double v;
            std::memcpy(&v, &bits, sizeof v);
            return v;
        }
        case DType::F32: {
            const auto bits = static_cast<std::uint32_t>(load_le(p, 4));
            float v;
            std::memcpy(&v, &bits, sizeof v);
            return static_cast<double>(v);
        }
        case DType::F16: return decode_binary(load_le(p, 2), 5, 10);
        case DType::BF16: return decode_binary(load_le(p, 2), 8, 7);
        default: throw std::logic_error("decode_element: unsupported dtype");
    }
}

/// The bit pattern of v in dtype t (a supported dtype), rounded to nearest, ties to even.
inline std::uint64_t encode_element(double v, DType t) {
    switch (t) {
        case DType::F64: {
            std::uint64_t bits;
            std::memcpy(&bits, &v, sizeof bits);
            return bits;
        }
        case DType::F32: return encode_binary(v, 8, 23);
        case DType::F16: return encode_binary(v, 5, 10);
        case DType::BF16: return encode_binary(v, 8, 7);
        default: throw std::logic_error("encode_element: unsupported dtype");
    }
}

/// count = product of the non-negative shape; false when count · element_size would
/// overflow 64 bits (a zero dimension makes the product 0 whatever the others are).
inline bool element_count(const std::vector<std::int64_t>& shape, std::uint64_t element_size,
                          std::uint64_t& count) {
    count = 1;
    for (std::int64_t d : shape)
        if (d == 0) {
            count = 0;
            return true;
        }
    for (std::int64_t d : shape) {
        const auto u = static_cast<std::uint64_t>(d);
        if (count > std::numeric_limits<std::uint64_t>::max() / u) return false;
        count *= u;
    }
    return count <= std::numeric_limits<std::uint64_t>::max() / element_size;
}

/// "40x64" for a shape, "scalar" for the empty shape.
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
    if (shape.empty()) return "scalar";
    std::string s;
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
    return s;
}

/// s as a JSON string literal (quotes included) for messages; bytes that are not valid
/// UTF-8 show as U+FFFD instead of making nlohmann throw.
inline std::string json_quoted(const std::string& s) {
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// Whether s is well-formed UTF-8: the check nlohmann's serialiser makes before it
/// writes a string (it throws type_error 316 otherwise).
inline bool is_valid_utf8(const std::string& s) {
    try {
        (void)nlohmann::json(s).dump();
        return true;
    } catch (const nlohmann::json::type_error&) {
        return false;
    }
}

/// text for a message: bytes outside printable ASCII as \xNN, and of a text longer than
/// `keep` bytes only its last `keep` (where a parser stopped), after "...".
inline std::string printable(const std::string& text, std::size_t keep = std::string::npos) {
    static const char* const hex = "0123456789ABCDEF";
    const std::size_t from = text.size() > keep ? text.size() - keep : 0;
    std::string out = from > 0 ? "..." : "";
    for (std::size_t i = from; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7F) {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xF];
        }
    }
    return out;
}

/// "a number", "an array", "null", ...: a JSON value's kind, for messages.
inline std::string described(const nlohmann::json& v) {
    switch (v.type()) {
        case nlohmann::json::value_t::null: return "null";
        case nlohmann::json::value_t::array: return "an array";
        case nlohmann::json::value_t::object: return "an object";
        default: return std::string("a ") + v.type_name();
    }
}

/// Builds the header document from nlohmann_json's SAX events (nlohmann::json::sax_parse),
/// refusing what nlohmann's own DOM parser lets through:
/// - a duplicate key (nlohmann::json::parse keeps the last value silently);
/// - nesting deeper than max_depth, so that the size of the document's tree, and any later
///   walk over it, does not depend on how deep untrusted input nests.
/// It also keeps two things the document loses: the order of the top-level keys (the
/// order of the tensors) and, for messages, the literal of a number in a shape or
/// data_offsets that nlohmann stores as a double ("3e0", or "99999999999999999999", too
/// large for 64 bits).
///
/// After sax_parse returns false, problem() says why; has_offset() tells whether
/// nlohmann found the problem (then offset() is the byte it reports, 0-based) or the
/// builder did (a duplicate key or too deep nesting: no offset, the message says where).
class HeaderBuilder final : public nlohmann::json_sax<nlohmann::json> {
public:
    using json = nlohmann::json;

    /// Deepest nesting of arrays and objects accepted (a safetensors header needs 3).
    static constexpr std::size_t max_depth = 64;

    bool null() override { return add(json(nullptr)); }
    bool boolean(bool v) override { return add(json(v)); }
    bool number_integer(number_integer_t v) override { return add(json(v)); }
    bool number_unsigned(number_unsigned_t v) override { return add(json(v)); }
    bool number_float(number_float_t v, const string_t& literal) override {
        add(json(v));
        // The reader stops at the first bad number of a shape or data_offsets, so only that
        // literal can be needed: memory stays bounded by the number of tensors.
        if (m_stack.size() == 3 && m_stack[0].container->is_object() && m_stack[1].container->is_object() &&
            (m_stack[1].key == "shape" || m_stack[1].key == "data_offsets") && !m_stack[2].literal_kept) {
            m_stack[2].literal_kept = true;
            m_literals.emplace(pointer(3), literal);
        }
        return true;
    }
    bool string(string_t& v) override { return add(json(std::move(v))); }
    bool binary(binary_t&) override {
        m_problem = "binary value (impossible in JSON text)";
        return false;
    }

    bool start_object(std::size_t) override { return open(json::object()); }
    bool key(string_t& k) override {
        Level& top = m_stack.back();
        const auto [member, inserted] = top.container->get_ref<json::object_t&>().emplace(k, nullptr);
        if (!inserted) {
            m_problem = "duplicate object key " + json_quoted(k) + " " + location();
            return false;
        }
        if (m_stack.size() == 1) m_top_level_keys.push_back(k);
        top.slot = &member->second;
        top.key = std::move(k);
        return true;
    }
    bool end_object() override { return close(); }
    bool start_array(std::size_t) override { return open(json::array()); }
    bool end_array() override { return close(); }

    bool parse_error(std::size_t position, const std::string& last_token, const json::exception& e) override {
        // position counts the bytes read, the offending one included (the end of the
        // input counts as one byte); a number too large for a double (406) is reported
        // after it was read, so go back to its first digit.
        m_offset = position > 0 ? position - 1 : 0;
        if (e.id == 406 && position >= last_token.size()) m_offset = position - last_token.size();
        m_has_offset = true;
        m_problem = message(e.what(), last_token);
        return false;
    }

    /// The document (valid after sax_parse returned true).
    const json& root() const { return m_root; }
    /// The keys of the top-level object, in document order.
    const std::vector<std::string>& top_level_keys() const { return m_top_level_keys; }
    /// The literal of the first number held as a double in each shape and data_offsets,
    /// by its JSON pointer (e.g. "/w/shape/1").
    const std::map<std::string, std::string>& literals() const { return m_literals; }
    /// Whether a complete JSON value was read (so a later problem is trailing content).
    bool complete() const { return m_complete; }
    /// Why parsing stopped.
    const std::string& problem() const { return m_problem; }
    /// Whether offset() locates problem().
    bool has_offset() const { return m_has_offset; }
    /// 0-based byte offset of problem() in the text, as nlohmann reports it.
    std::size_t offset() const { return m_offset; }

    /// The JSON pointer of a number in shape or data_offsets, as literals() keys it.
    static std::string pointer_to(const std::string& tensor, const char* field, std::size_t index) {
        return (json::json_pointer() / tensor / field / index).to_string();
    }

private:
    struct Level {
        json* container;            // an object or array being filled
        json* slot = nullptr;       // in an object: the value of the member being read
        std::string key;            // in an object: that member's key
        bool literal_kept = false;  // an array: the literal of one of its numbers is kept
    };

    // Puts a complete value where the document expects the next one.
    json* place(json v) {
        if (m_stack.empty()) {
            m_root = std::move(v);
            return &m_root;
        }
        Level& top = m_stack.back();
        if (top.container->is_array()) {
            top.container->push_back(std::move(v));
            return &top.container->back();
        }
        *top.slot = std::move(v);
        return top.slot;
    }

    bool add(json v) {
        place(std::move(v));
        if (m_stack.empty()) m_complete = true;
        return true;
    }

    bool open(json empty) {
        if (m_stack.size() >= max_depth) {
            m_problem = "arrays and objects nested deeper than " + std::to_string(max_depth) + " levels";
            return false;
        }
        m_stack.push_back(Level{place(std::move(empty)), nullptr, {}, false});
        return true;
    }

    bool close() {
        m_stack.pop_back();
        if (m_stack.empty()) m_complete = true;
        return true;
    }

    // The JSON pointer of the value being read at the given depth of the stack.
    std::string pointer(std::size_t depth) const {
        json::json_pointer p;
        for (std::size_t i = 0; i < depth; ++i) {
            const Level& level = m_stack[i];
            if (level.container->is_array()) p /= level.container->size() - 1;
            else p /= level.key;
        }
        return p.to_string();
    }

    // Where the object at the top of the stack is, in the words of a safetensors header.
    std::string location() const {
        if (m_stack.size() == 1) return "in the top-level object";
        if (m_stack.size() == 2 && m_stack[0].container->is_object())
            return m_stack[0].key == "__metadata__" ? "in \"__metadata__\""
                                                    : "in the entry of tensor " + json_quoted(m_stack[0].key);
        return "in the object at " + json_quoted(pointer(m_stack.size() - 1));
    }

    // nlohmann's message without its "[json.exception.parse_error.101] parse error at line
    // 1, column 6: " prefix (the caller names the byte), its quote of the input shortened
    // (a token can be a 100 MB string) and printable.
    static std::string message(std::string what, const std::string& last_token) {
        const std::size_t tag = what.find("] ");
        if (what.rfind("[json.exception.", 0) == 0 && tag != std::string::npos) what.erase(0, tag + 2);
        if (what.rfind("parse error", 0) == 0) {
            const std::size_t colon = what.find(": ");
            if (colon != std::string::npos) what.erase(0, colon + 2);
        }
        const std::string quote = "'" + last_token + "'";
        const std::size_t at = last_token.empty() ? std::string::npos : what.find(quote);
        if (at != std::string::npos) what.replace(at, quote.size(), "'" + printable(last_token, 40) + "'");
        return printable(what);
    }

    json m_root;
    std::vector<Level> m_stack;
    std::vector<std::string> m_top_level_keys;
    std::map<std::string, std::string> m_literals;
    bool m_complete = false;
    std::string m_problem;
    bool m_has_offset = false;
    std::size_t m_offset = 0;
};

}  // namespace detail

/// The value of an IEEE half-precision (F16) bit pattern, exactly.
inline double half_to_double(std::uint16_t bits) { return detail::decode_binary(bits, 5, 10); }
/// The F16 bit pattern nearest to v (ties to even; ±infinity beyond 65520 in magnitude).
inline std::uint16_t double_to_half(double v) {
    return static_cast<std::uint16_t>(detail::encode_binary(v, 5, 10));
}
/// The value of a bfloat16 (BF16) bit pattern, exactly.
inline double bfloat16_to_double(std::uint16_t bits) { return detail::decode_binary(bits, 8, 7); }
/// The BF16 bit pattern nearest to v (ties to even), rounded directly from the double.
inline std::uint16_t double_to_bfloat16(double v) {
    return static_cast<std::uint16_t>(detail::encode_binary(v, 8, 7));
}

/// What the header says about one tensor.
struct TensorInfo {
    /// Element type.
    DType dtype = DType::F64;
    /// Dimensions, outermost first (row-major); empty for a scalar.
    std::vector<std::int64_t> shape;
    /// data_offsets[0]: first byte of the tensor, relative to the start of the data section.
    std::size_t begin = 0;
    /// data_offsets[1]: one past its last byte, relative to the start of the data section.
    std::size_t end = 0;

    /// Number of elements, the product of the shape (1 for a scalar).
    std::size_t element_count() const { return (end - begin) / dtype_size(dtype); }
};

/// A safetensors file: its header read, parsed and checked when it is opened, its tensors
/// read from the file on request.
///
/// The constructor refuses anything but a regular file (a FIFO would block, a device can
/// be endless) before opening it, reads the 8-byte header length and checks it against the
/// file size and the 100 MB limit before reading the header, and checks every tensor's
/// byte range against the data section; tensor data is read only when asked for, by its
/// offset, and converted to double (after check_allocation()). Construction throws
/// std::invalid_argument when the file is unreadable or its header is malformed in any way
/// (see the file comment). A tensor of a dtype that is not supported (e.g. I64) does not
/// prevent reading the others: only asking for its values throws.
///
/// The file stays open while the object (or a copy of it, which shares the open file)
/// lives; reads from several threads are serialised.
class SafetensorsFile {
public:
    /// Largest header accepted, as in the reference implementation: 100 MB.
    static constexpr std::uint64_t max_header_size = 100000000;

    /// Opens the file at `path` and reads and checks its header.
    explicit SafetensorsFile(const std::string& path) : m_path(path), m_file(std::make_shared<OpenFile>()) {
        refuse_unless_regular_file();
        std::ifstream& in = m_file->in;
        errno = 0;
        in.open(path, std::ios::binary);
        if (!in) fail("cannot be opened for reading" + reason(errno));
        in.seekg(0, std::ios::end);
        const std::streamoff size = in.tellg();
        in.seekg(0, std::ios::beg);
        if (size < 0 || !in) fail("cannot be read (size unknown)");
        const auto file_size = static_cast<std::uint64_t>(size);
        unsigned char length[8] = {};
        const std::size_t have = static_cast<std::size_t>(std::min<std::uint64_t>(file_size, 8));
        if (have > 0) in.read(reinterpret_cast<char*>(length), static_cast<std::streamsize>(have));
        if (in.gcount() != static_cast<std::streamsize>(have))
            fail("could not read its first " + std::to_string(have) + " bytes");
        const std::size_t header_size = checked_header_size(file_size, length);
        check_allocation(header_size, "safetensors file '" + m_path + "': its header");
        std::string header(header_size, '\0');
        if (header_size > 0) in.read(&header[0], static_cast<std::streamsize>(header_size));
        if (in.gcount() != static_cast<std::streamsize>(header_size))
            fail("could not read its " + std::to_string(header_size) + "-byte header");
        parse(header.data(), header_size, file_size);
    }

    /// Checks bytes already in memory, laid out as a safetensors file.
    /// \param bytes the file contents
    /// \param name how messages refer to the data
    static SafetensorsFile from_bytes(std::vector<unsigned char> bytes, std::string name = "<memory>") {
        return SafetensorsFile(std::move(bytes), std::move(name));
    }

    /// The path (or name) given at construction.
    const std::string& path() const { return m_path; }

    /// Names of the tensors, in header order (without "__metadata__").
    const std::vector<std::string>& names() const { return m_names; }

    /// Whether a tensor of that name exists.
    bool contains(const std::string& name) const { return m_tensors.count(name) != 0; }

    /// Dtype, shape and byte range of a tensor; std::invalid_argument if there is none.
    const TensorInfo& info(const std::string& name) const {
        const auto it = m_tensors.find(name);
        if (it == m_tensors.end()) fail("has no tensor named " + detail::json_quoted(name));
        return it->second;
    }

    /// The "__metadata__" entries of the header (empty when it has none).
    const std::map<std::string, std::string>& metadata() const { return m_metadata; }

    /// All elements of a tensor of any rank, in file (row-major) order, as doubles.
    /// \throws std::invalid_argument for an unknown name, an unsupported dtype, values
    ///   above memory_limit() as doubles, or a file that became shorter since it was opened
    std::vector<double> values(const std::string& name) const {
        const TensorInfo& t = readable(name);
        std::vector<double> out(t.element_count());
        decode(name, t, [&](std::size_t i, double v) { out[i] = v; });
        return out;
    }

    /// A 2-D tensor as a matrix with the same rows and columns (the file is row-major).
    MatrixX<double> matrix(const std::string& name) const {
        const TensorInfo& t = info(name);
        if (t.shape.size() != 2)
            fail_tensor(name, "has shape " + detail::shape_string(t.shape) + " (" + std::to_string(t.shape.size()) +
                                  "-D); matrix() needs a 2-D tensor");
        readable(name);
        const auto rows = static_cast<Eigen::Index>(t.shape[0]), cols = static_cast<Eigen::Index>(t.shape[1]);
        MatrixX<double> m(rows, cols);
        decode(name, t, [&](std::size_t i, double v) {
            const auto k = static_cast<Eigen::Index>(i);
            m(k / cols, k % cols) = v;
        });
        return m;
    }

    /// A 1-D tensor as a vector.
    VectorX<double> vector(const std::string& name) const {
        const TensorInfo& t = info(name);
        if (t.shape.size() != 1)
            fail_tensor(name, "has shape " + detail::shape_string(t.shape) + " (" + std::to_string(t.shape.size()) +
                                  "-D); vector() needs a 1-D tensor");
        readable(name);
        VectorX<double> v(static_cast<Eigen::Index>(t.element_count()));
        decode(name, t, [&](std::size_t i, double x) { v(static_cast<Eigen::Index>(i)) = x; });
        return v;
    }

private:
    /// The open file, shared by copies of the object; reads hold the mutex.
    struct OpenFile {
        std::mutex mutex;
        std::ifstream in;
    };

    SafetensorsFile(std::vector<unsigned char> bytes, std::string name)
        : m_path(std::move(name)), m_bytes(std::move(bytes)) {
        const std::uint64_t size = m_bytes.size();
        const std::size_t header_size = checked_header_size(size, m_bytes.data());
        parse(reinterpret_cast<const char*>(m_bytes.data() + 8), header_size, size);
    }

    static std::string reason(int error) {
        return error != 0 ? ": " + std::generic_category().message(error) : std::string();
    }

    /// Refuses, by the file's type and before opening it, anything but a regular file
    /// (symbolic links followed): opening a FIFO blocks until a writer comes, a device can
    /// be endless, a directory has no bytes.
    void refuse_unless_regular_file() const {
        namespace fs = std::filesystem;
        std::error_code ec;
        const fs::file_status status = fs::status(m_path, ec);
        switch (status.type()) {
            case fs::file_type::regular: return;
            case fs::file_type::directory: fail("is a directory, not a file");
            case fs::file_type::fifo: fail("is a FIFO (named pipe), not a regular file");
            case fs::file_type::character:
            case fs::file_type::block: fail("is a device, not a regular file");
            case fs::file_type::socket: fail("is a socket, not a regular file");
            case fs::file_type::not_found:
                fail("cannot be opened for reading" + (ec ? ": " + ec.message() : std::string(": not found")));
            default:
                if (ec) fail("cannot be opened for reading: " + ec.message());
                fail("is not a regular file");
        }
    }

    /// The header size the first 8 bytes declare (`length`: min(file_size, 8) bytes), checked
    /// against the file size and the limit before anything else is read.
    std::size_t checked_header_size(std::uint64_t file_size, const unsigned char* length) const {
        if (file_size < 8)
            fail("is " + std::to_string(file_size) + " bytes long, shorter than the 8-byte header length");
        const std::uint64_t n = detail::load_le(length, 8);
        if (n > max_header_size)
            fail("declares a header of " + std::to_string(n) + " bytes, larger than the limit of " +
                 std::to_string(max_header_size) + " (not a safetensors file?)");
        if (n > file_size - 8)
            fail("declares a header of " + std::to_string(n) + " bytes, larger than the " +
                 std::to_string(file_size - 8) + " bytes after the length field");
        return static_cast<std::size_t>(n);
    }

    /// The tensor `name`, checked to be of a supported dtype and to fit in memory as doubles.
    const TensorInfo& readable(const std::string& name) const {
        const TensorInfo& t = info(name);
        if (!is_supported(t.dtype))
            fail_tensor(name, std::string("has unsupported dtype ") + dtype_name(t.dtype) + "; supported: " +
                                  detail::supported_dtypes());
        check_allocation(checked_bytes(t.element_count(), sizeof(double)),
                         "safetensors file '" + m_path + "': tensor " + detail::json_quoted(name) + " of shape " +
                             detail::shape_string(t.shape) + " (" + std::to_string(t.element_count()) +
                             " values as doubles)");
        return t;
    }

    /// Reads the tensor's bytes (from memory, or from the file in chunks of at most 1 MiB)
    /// and calls put(i, value) for every element i in file order.
    template <typename Put>
    void decode(const std::string& name, const TensorInfo& t, Put&& put) const {
        const std::size_t size = dtype_size(t.dtype), count = t.element_count();
        if (count == 0) return;
        if (!m_file) {
            const unsigned char* p = m_bytes.data() + m_data_begin + t.begin;
            for (std::size_t i = 0; i < count; ++i) put(i, detail::decode_element(p + i * size, t.dtype));
            return;
        }
        const std::size_t chunk_elements = std::max<std::size_t>(1, (std::size_t(1) << 20) / size);
        std::vector<unsigned char> buffer(std::min(count, chunk_elements) * size);
        const std::lock_guard<std::mutex> lock(m_file->mutex);
        std::ifstream& in = m_file->in;
        in.clear();
        in.seekg(static_cast<std::streamoff>(m_data_begin + t.begin), std::ios::beg);
        for (std::size_t first = 0; first < count; first += chunk_elements) {
            const std::size_t n = std::min(chunk_elements, count - first);
            if (in) in.read(reinterpret_cast<char*>(buffer.data()), static_cast<std::streamsize>(n * size));
            if (!in || in.gcount() != static_cast<std::streamsize>(n * size))
                fail_tensor(name, "could not be read: the file ended before byte " +
                                      std::to_string(m_data_begin + t.end) + " (did it change since it was opened?)");
            for (std::size_t i = 0; i < n; ++i) put(first + i, detail::decode_element(buffer.data() + i * size, t.dtype));
        }
    }

    [[noreturn]] void fail(const std::string& what) const {
        throw std::invalid_argument("safetensors file '" + m_path + "' " + what);
    }
    [[noreturn]] void fail_tensor(const std::string& name, const std::string& what) const {
        fail("tensor " + detail::json_quoted(name) + " " + what);
    }

    [[noreturn]] void fail_json(const std::string& problem, std::size_t offset) const {
        fail("has a header that is not valid JSON: " + problem + " at byte " + std::to_string(offset) +
             " of the header");
    }

    /// Parses and checks the header (`header_size` bytes at `text`) of a file of `file_size`
    /// bytes, whose length field checked_header_size() accepted.
    void parse(const char* text, std::size_t header_size, std::uint64_t file_size) {
        m_data_begin = 8 + header_size;
        const auto data_size = static_cast<std::size_t>(file_size - m_data_begin);

        if (header_size == 0) fail("has an empty header (0 bytes), where a JSON object should be");
        // nlohmann skips a byte-order mark; strict JSON (and the reference reader) does not.
        if (header_size >= 3 && std::memcmp(text, "\xEF\xBB\xBF", 3) == 0)
            fail_json("unexpected byte-order mark (EF BB BF)", 0);
        // nlohmann's lexer takes a NUL byte for the end of the input, so that "{}\0junk"
        // would pass: parse up to the first NUL, which is never valid in JSON text.
        const void* nul = std::memchr(text, 0, header_size);
        const std::size_t end = nul ? static_cast<std::size_t>(static_cast<const char*>(nul) - text) : header_size;

        detail::HeaderBuilder builder;
        bool parsed = false;
        try {
            parsed = nlohmann::json::sax_parse(text, text + end, &builder, nlohmann::json::input_format_t::json,
                                               /*strict=*/true, /*ignore_comments=*/false);
        } catch (const nlohmann::json::exception& e) {  // not expected: errors come as parse_error events
            fail(std::string("has a header that could not be parsed: ") + detail::printable(e.what(), 200));
        }
        if (!parsed) {
            if (!builder.has_offset()) fail("has a header that is not valid JSON: " + builder.problem());
            if (builder.offset() >= end && end < header_size)
                fail_json("unexpected byte 0x00 (NUL)", end);  // the input ended early, at the NUL
            if (builder.complete())
                fail_json("unexpected content after the JSON value (" + builder.problem() + ")", builder.offset());
            fail_json(builder.problem(), builder.offset());
        }
        if (end < header_size) fail_json("unexpected byte 0x00 (NUL) after the JSON value", end);

        const nlohmann::json& header = builder.root();
        if (!header.is_object())
            fail(std::string("has a header that is a JSON ") + header.type_name() + ", not an object");
        for (const std::string& name : builder.top_level_keys()) {
            const nlohmann::json& entry = header.at(name);
            if (name == "__metadata__") {
                read_metadata(entry);
                continue;
            }
            m_tensors.emplace(name, read_entry(name, entry, data_size, builder.literals()));
            m_names.push_back(name);
        }
    }

    void read_metadata(const nlohmann::json& entry) {
        if (!entry.is_object())
            fail("has a \"__metadata__\" that is " + detail::described(entry) + ", not an object of strings");
        for (const auto& [key, value] : entry.items()) {
            if (!value.is_string())
                fail("has a \"__metadata__\" entry " + detail::json_quoted(key) + " that is " +
                     detail::described(value) + ", not a string");
            m_metadata.emplace(key, value.get<std::string>());
        }
    }

    // A JSON integer in [0, 2^63), else a message naming `what` and quoting the number as
    // written (`literals`: see detail::HeaderBuilder::literals).
    std::uint64_t non_negative(const std::string& name, const std::string& what, const nlohmann::json& v,
                               const std::string& pointer,
                               const std::map<std::string, std::string>& literals) const {
        if (!v.is_number()) fail_tensor(name, what + " is " + detail::described(v) + ", not a non-negative integer");
        constexpr std::uint64_t limit = std::uint64_t(1) << 63;
        if (v.is_number_unsigned() && v.get<std::uint64_t>() < limit) return v.get<std::uint64_t>();
        if (v.is_number_integer() && !v.is_number_unsigned() && v.get<std::int64_t>() >= 0)  // "-0"
            return static_cast<std::uint64_t>(v.get<std::int64_t>());
        std::string literal = v.dump();
        if (v.is_number_float()) {
            const auto it = literals.find(pointer);
            if (it != literals.end()) literal = detail::printable(it->second, 40);
        }
        fail_tensor(name, what + " = " + literal + " is not a non-negative integer (below 2^63)");
    }

    TensorInfo read_entry(const std::string& name, const nlohmann::json& entry, std::size_t data_size,
                          const std::map<std::string, std::string>& literals) const {
        using Kind = nlohmann::json::value_t;
        if (!entry.is_object())
            fail_tensor(name, "entry is " + detail::described(entry) +
                                  ", not an object with dtype, shape and data_offsets");
        auto field = [&](const char* key, Kind kind, const char* expected) -> const nlohmann::json& {
            const auto it = entry.find(key);
            if (it == entry.end()) fail_tensor(name, std::string("has no \"") + key + "\"");
            if (it->type() != kind)
                fail_tensor(name, std::string("\"") + key + "\" is " + detail::described(*it) + ", expected " +
                                      expected);
            return *it;
        };
        const nlohmann::json& dtype = field("dtype", Kind::string, "a string such as \"F32\"");
        const nlohmann::json& shape = field("shape", Kind::array, "an array of integers");
        const nlohmann::json& offsets = field("data_offsets", Kind::array, "an array [begin, end]");

        TensorInfo t;
        const auto& dtype_text = dtype.get_ref<const std::string&>();
        if (!detail::parse_dtype(dtype_text, t.dtype))
            fail_tensor(name, "has unknown dtype " + detail::json_quoted(dtype_text) + "; supported: " +
                                  detail::supported_dtypes());

        using detail::HeaderBuilder;
        for (std::size_t i = 0; i < shape.size(); ++i)
            t.shape.push_back(static_cast<std::int64_t>(non_negative(
                name, "shape[" + std::to_string(i) + "]", shape[i], HeaderBuilder::pointer_to(name, "shape", i),
                literals)));
        const std::uint64_t element_size = dtype_size(t.dtype);
        std::uint64_t count = 0;
        if (!detail::element_count(t.shape, element_size, count))
            fail_tensor(name, "has shape " + detail::shape_string(t.shape) +
                                  " whose size in bytes overflows a 64-bit integer");

        if (offsets.size() != 2)
            fail_tensor(name, "\"data_offsets\" has " + std::to_string(offsets.size()) +
                                  " entries, expected two: [begin, end]");
        const std::size_t first = 0, second = 1;
        const std::uint64_t begin = non_negative(name, "data_offsets[0]", offsets[first],
                                                 HeaderBuilder::pointer_to(name, "data_offsets", first), literals);
        const std::uint64_t end = non_negative(name, "data_offsets[1]", offsets[second],
                                               HeaderBuilder::pointer_to(name, "data_offsets", second), literals);
        if (begin > end)
            fail_tensor(name, "has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                                  "] with begin > end");
        if (end > data_size)
            fail_tensor(name, "has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                                  "] ending beyond the " + std::to_string(data_size) + "-byte data section");
        if (end - begin != count * element_size)
            fail_tensor(name, "has data_offsets spanning " + std::to_string(end - begin) + " bytes, but shape " +
                                  detail::shape_string(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                                  std::to_string(count * element_size) + " bytes");
        t.begin = static_cast<std::size_t>(begin);
        t.end = static_cast<std::size_t>(end);
        return t;
    }

    std::string m_path;
    std::shared_ptr<OpenFile> m_file;   // the open file (null for from_bytes)
    std::vector<unsigned char> m_bytes;  // from_bytes: the whole file
    std::size_t m_data_begin = 0;
    std::vector<std::string> m_names;
    std::map<std::string, TensorInfo> m_tensors;
    std::map<std::string, std::string> m_metadata;
};

/// One tensor to write: its values as doubles in row-major order, converted on writing
/// to `dtype` (rounded to nearest, ties to even).
struct NamedTensor {
    /// Tensor name, e.g. "backbone.layers.0.mixer.A_log".
    std::string name;
    /// Element type in the file: F64, F32, F16 or BF16.
    DType dtype = DType::F64;
    /// Dimensions, outermost first; empty for a scalar.
    std::vector<std::int64_t> shape;
    /// product(shape) values, row-major (the last index varies fastest).
    std::vector<double> values;

    /// A 2-D tensor with the rows and columns of m.
    template <typename Derived>
    static NamedTensor from_matrix(std::string name, const Eigen::MatrixBase<Derived>& m,
                                   DType dtype = DType::F64) {
        NamedTensor t{std::move(name), dtype, {m.rows(), m.cols()}, {}};
        t.values.reserve(static_cast<std::size_t>(m.size()));
        for (Eigen::Index i = 0; i < m.rows(); ++i)
            for (Eigen::Index j = 0; j < m.cols(); ++j) t.values.push_back(static_cast<double>(m(i, j)));
        return t;
    }

    /// A 1-D tensor from a row or column vector.
    template <typename Derived>
    static NamedTensor from_vector(std::string name, const Eigen::MatrixBase<Derived>& v,
                                   DType dtype = DType::F64) {
        if (v.rows() != 1 && v.cols() != 1)
            throw std::invalid_argument("NamedTensor::from_vector: " + name + " is " + std::to_string(v.rows()) +
                                        "x" + std::to_string(v.cols()) + ", not a vector");
        NamedTensor t{std::move(name), dtype, {v.size()}, {}};
        t.values.reserve(static_cast<std::size_t>(v.size()));
        for (Eigen::Index i = 0; i < v.size(); ++i) t.values.push_back(static_cast<double>(v(i)));
        return t;
    }
};

/// Writes tensors (in the order given) and optional metadata as a safetensors file.
/// The header is padded with spaces to a multiple of 8 bytes, so that the data section
/// is aligned, as the reference implementation does.
/// \throws std::invalid_argument for an unsupported dtype, a shape that does not match
///   the number of values, a duplicate, reserved or non-UTF-8 name, or a failed write.
inline void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    auto fail = [&](const std::string& what) {
        throw std::invalid_argument("write_safetensors('" + path + "'): " + what);
    };
    using Json = nlohmann::ordered_json;
    Json document = Json::object();
    // Members are appended to the ordered map's vector directly: its operator[] searches
    // linearly, and the names are known to be unique (`seen` below).
    auto& members = document.get_ref<Json::object_t&>();
    if (!metadata.empty()) {
        Json meta = Json::object();
        for (const auto& [key, value] : metadata) {
            if (!detail::is_valid_utf8(key) || !detail::is_valid_utf8(value))
                fail("metadata entry " + detail::json_quoted(key) + " is not valid UTF-8");
            meta.get_ref<Json::object_t&>().emplace_back(key, value);
        }
        members.emplace_back("__metadata__", std::move(meta));
    }
    std::vector<unsigned char> data;
    std::set<std::string> seen;
    for (const NamedTensor& t : tensors) {
        const std::string quoted = detail::json_quoted(t.name);
        if (!detail::is_valid_utf8(t.name)) fail("tensor name " + quoted + " is not valid UTF-8");
        if (t.name == "__metadata__") fail("\"__metadata__\" is reserved and cannot name a tensor");
        if (!seen.insert(t.name).second) fail("tensor " + quoted + " appears twice");
        if (!is_supported(t.dtype))
            fail("tensor " + quoted + " has unsupported dtype " + dtype_name(t.dtype) + "; supported: " +
                 detail::supported_dtypes());
        for (std::int64_t d : t.shape)
            if (d < 0) fail("tensor " + quoted + " has a negative dimension in shape " + detail::shape_string(t.shape));
        std::uint64_t count = 0;
        if (!detail::element_count(t.shape, dtype_size(t.dtype), count))
            fail("tensor " + quoted + " has shape " + detail::shape_string(t.shape) +
                 " whose size in bytes overflows a 64-bit integer");
        if (count != t.values.size())
            fail("tensor " + quoted + " has " + std::to_string(t.values.size()) + " values but shape " +
                 detail::shape_string(t.shape) + " needs " + std::to_string(count));
        const std::uint64_t begin = data.size();
        const std::size_t size = dtype_size(t.dtype);
        for (double v : t.values) detail::store_le(data, detail::encode_element(v, t.dtype), size);
        Json entry = Json::object();
        entry["dtype"] = dtype_name(t.dtype);
        entry["shape"] = t.shape;
        entry["data_offsets"] = Json::array({begin, std::uint64_t(data.size())});
        members.emplace_back(t.name, std::move(entry));
    }
    std::string header;
    try {
        header = document.dump();
    } catch (const nlohmann::json::exception& e) {  // not expected: every string was checked above
        fail(std::string("cannot write the header: ") + detail::printable(e.what(), 200));
    }
    header.append((8 - header.size() % 8) % 8, ' ');

    std::vector<unsigned char> bytes;
    bytes.reserve(8 + header.size() + data.size());
    detail::store_le(bytes, header.size(), 8);
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.insert(bytes.end(), data.begin(), data.end());

    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot open the file for writing");
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) fail("writing the file failed");
}

}  // namespace ssmdyn
