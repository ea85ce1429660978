#pragma once
/// \file detail/json.hpp
/// A small strict JSON parser (RFC 8259), enough for the header of a safetensors file.
///
/// Why our own: the core library depends only on Eigen, Boost headers and the standard
/// library, and a safetensors header is untrusted input, so the parser must be strict,
/// bounded and explicit about where it failed. Every error is a JsonError (a
/// std::invalid_argument) carrying the byte offset of the problem; every read is
/// bounds-checked; nesting deeper than a limit is an error, not a stack overflow.
///
/// Strict means: exactly one value with optional surrounding whitespace (space, tab, CR,
/// LF); no comments, trailing commas, leading zeros, NaN/Infinity or byte-order mark;
/// strings must be valid UTF-8 without raw control characters, and a \\u escape of a
/// surrogate must form a pair; duplicate object keys are rejected.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <locale>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ssmdyn::detail {

/// A JSON syntax or type error at a byte offset of the parsed text.
class JsonError : public std::invalid_argument {
public:
    /// \param problem what is wrong, e.g. "expected ':' after an object key"
    /// \param offset byte offset of the problem in the parsed text
    JsonError(const std::string& problem, std::size_t offset)
        : std::invalid_argument(problem + " at byte " + std::to_string(offset)), m_offset(offset) {}

    /// Byte offset of the problem in the parsed text.
    std::size_t offset() const noexcept { return m_offset; }

private:
    std::size_t m_offset;
};

/// Length of the well-formed UTF-8 sequence starting at p (at most `avail` bytes
/// readable), or 0 when it is ill-formed (RFC 3629: no overlong forms, no surrogates,
/// nothing above U+10FFFF).
inline std::size_t utf8_sequence_length(const unsigned char* p, std::size_t avail) {
    if (avail == 0) return 0;
    const unsigned char c = p[0];
    if (c < 0x80) return 1;
    auto cont = [&](std::size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
        return i < avail && p[i] >= lo && p[i] <= hi;
    };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    return 0;
}

/// Whether s is well-formed UTF-8.
inline bool is_valid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    std::size_t i = 0;
    while (i < s.size()) {
        const std::size_t n = utf8_sequence_length(p + i, s.size() - i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

/// s as a JSON string literal (quotes included); control characters become \\u00XX.
/// s must be valid UTF-8 (checked by the caller with is_valid_utf8).
inline std::string json_quote(std::string_view s) {
    static const char* const hex = "0123456789abcdef";
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20) {
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 0xF];
        } else {
            out += ch;
        }
    }
    return out + '"';
}

/// One parsed JSON value. Objects keep their members in document order; every value
/// remembers the byte offset where it starts, so that a caller checking the *meaning* of
/// a document can report positions too.
class JsonValue {
public:
    enum class Kind { Null, Boolean, Number, String, Array, Object };
    using Array = std::vector<JsonValue>;
    using Member = std::pair<std::string, JsonValue>;
    using Object = std::vector<Member>;

    /// A null value at offset 0.
    JsonValue() = default;

    Kind kind() const { return m_kind; }
    /// Byte offset of the first character of this value in the parsed text.
    std::size_t offset() const { return m_offset; }

    bool is_null() const { return m_kind == Kind::Null; }
    bool is_bool() const { return m_kind == Kind::Boolean; }
    bool is_number() const { return m_kind == Kind::Number; }
    bool is_string() const { return m_kind == Kind::String; }
    bool is_array() const { return m_kind == Kind::Array; }
    bool is_object() const { return m_kind == Kind::Object; }

    /// "null", "boolean", "number", "string", "array" or "object", for messages.
    static const char* kind_name(Kind k) {
        switch (k) {
            case Kind::Null: return "null";
            case Kind::Boolean: return "boolean";
            case Kind::Number: return "number";
            case Kind::String: return "string";
            case Kind::Array: return "array";
            case Kind::Object: return "object";
        }
        return "value";
    }
    const char* kind_name() const { return kind_name(m_kind); }

    /// The kind with its article, for messages: "null", "a number", "an array", ...
    static const char* described(Kind k) {
        switch (k) {
            case Kind::Null: return "null";
            case Kind::Boolean: return "a boolean";
            case Kind::Number: return "a number";
            case Kind::String: return "a string";
            case Kind::Array: return "an array";
            case Kind::Object: return "an object";
        }
        return "a value";
    }
    const char* described() const { return described(m_kind); }

    /// The value of a boolean; JsonError for any other kind.
    bool as_bool() const {
        expect(Kind::Boolean);
        return m_bool;
    }
    /// The decoded (UTF-8) text of a string; JsonError for any other kind.
    const std::string& as_string() const {
        expect(Kind::String);
        return m_text;
    }
    /// The elements of an array; JsonError for any other kind.
    const Array& as_array() const {
        expect(Kind::Array);
        return m_array;
    }
    /// The members of an object in document order; JsonError for any other kind.
    const Object& as_object() const {
        expect(Kind::Object);
        return m_object;
    }

    /// The literal of a number exactly as written, e.g. "-12", "2.5e3".
    const std::string& number_text() const {
        expect(Kind::Number);
        return m_text;
    }
    /// Whether this is a number written without fraction or exponent whose value fits
    /// in std::int64_t (so "3" is, "3.0" and "1e2" are not).
    bool is_integer() const { return m_kind == Kind::Number && m_is_integer; }
    /// The value of an integer (see is_integer); JsonError otherwise.
    std::int64_t as_integer() const {
        expect(Kind::Number);
        if (!m_is_integer) throw JsonError("number " + m_text + " is not a 64-bit integer", m_offset);
        return m_integer;
    }
    /// The value of a number as the nearest double (±infinity beyond the double range).
    double as_double() const {
        expect(Kind::Number);
        std::istringstream in(m_text);
        in.imbue(std::locale::classic());
        double v = 0;
        in >> v;
        // The literal was validated by the parser, so a failed conversion is an overflow.
        if (in.fail())
            return m_text[0] == '-' ? -std::numeric_limits<double>::infinity()
                                    : std::numeric_limits<double>::infinity();
        return v;
    }

    /// The member named key of an object, or nullptr (JsonError if not an object).
    const JsonValue* find(std::string_view key) const {
        for (const Member& m : as_object())
            if (m.first == key) return &m.second;
        return nullptr;
    }

private:
    friend class JsonParser;

    void expect(Kind k) const {
        if (m_kind != k)
            throw JsonError(std::string("expected ") + described(k) + ", found " + described(), m_offset);
    }

    Kind m_kind = Kind::Null;
    std::size_t m_offset = 0;
    bool m_bool = false;
    bool m_is_integer = false;
    std::int64_t m_integer = 0;
    std::string m_text;  // string contents or number literal
    Array m_array;
    Object m_object;
};

/// Parses one JSON document from a byte range. Use parse_json() for the common case.
class JsonParser {
public:
    /// Default nesting limit of arrays and objects.
    static constexpr std::size_t default_max_depth = 64;

    /// \param data the text (need not be NUL-terminated; never read beyond size)
    /// \param size number of bytes of text
    /// \param max_depth deepest nesting of arrays and objects accepted
    JsonParser(const char* data, std::size_t size, std::size_t max_depth = default_max_depth)
        : m_data(reinterpret_cast<const unsigned char*>(data)), m_size(size), m_max_depth(max_depth) {}

    /// The document's single value; JsonError on any deviation from strict JSON.
    JsonValue parse() {
        m_pos = 0;
        m_depth = 0;
        skip_whitespace();
        if (at_end()) fail(m_size == 0 ? "empty text, expected a JSON value" : "expected a JSON value");
        JsonValue v = parse_value();
        skip_whitespace();
        if (!at_end()) fail("unexpected " + describe_current() + " after the JSON value");
        return v;
    }

private:
    bool at_end() const { return m_pos >= m_size; }
    bool next_is(char c) const { return !at_end() && m_data[m_pos] == static_cast<unsigned char>(c); }

    [[noreturn]] void fail(const std::string& problem) const { throw JsonError(problem, m_pos); }
    [[noreturn]] void fail_at(const std::string& problem, std::size_t offset) const {
        throw JsonError(problem, offset);
    }

    std::string describe_current() const {
        if (at_end()) return "end of text";
        const unsigned char c = m_data[m_pos];
        if (c >= 0x20 && c < 0x7F) return std::string("character '") + static_cast<char>(c) + "'";
        static const char* const hex = "0123456789ABCDEF";
        return std::string("byte 0x") + hex[c >> 4] + hex[c & 0xF];
    }

    void skip_whitespace() {
        while (!at_end()) {
            const unsigned char c = m_data[m_pos];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
            ++m_pos;
        }
    }

    void expect_char(char c, const char* context) {
        if (!next_is(c)) fail(std::string("expected '") + c + "' " + context + ", found " + describe_current());
        ++m_pos;
    }

    JsonValue parse_value() {
        if (at_end()) fail("expected a JSON value, found end of text");
        switch (m_data[m_pos]) {
            case '{': return parse_object();
            case '[': return parse_array();
            case '"': {
                JsonValue v = make(JsonValue::Kind::String);
                v.m_text = parse_string();
                return v;
            }
            case 't': return parse_literal("true", JsonValue::Kind::Boolean, true);
            case 'f': return parse_literal("false", JsonValue::Kind::Boolean, false);
            case 'n': return parse_literal("null", JsonValue::Kind::Null, false);
            default:
                if (next_is('-') || (m_data[m_pos] >= '0' && m_data[m_pos] <= '9')) return parse_number();
                fail("expected a JSON value, found " + describe_current());
        }
    }

    JsonValue make(JsonValue::Kind k) const {
        JsonValue v;
        v.m_kind = k;
        v.m_offset = m_pos;
        return v;
    }

    void enter() {
        if (++m_depth > m_max_depth)
            fail("arrays and objects nested deeper than " + std::to_string(m_max_depth) + " levels");
    }

    JsonValue parse_object() {
        JsonValue v = make(JsonValue::Kind::Object);
        enter();
        ++m_pos;  // '{'
        skip_whitespace();
        if (next_is('}')) {
            ++m_pos;
            --m_depth;
            return v;
        }
        std::set<std::string> keys;
        for (;;) {
            skip_whitespace();
            if (!next_is('"')) fail("expected a string key in an object, found " + describe_current());
            const std::size_t key_offset = m_pos;
            std::string key = parse_string();
            if (!keys.insert(key).second) fail_at("duplicate object key " + json_quote(key), key_offset);
            skip_whitespace();
            expect_char(':', "after an object key");
            skip_whitespace();
            JsonValue member = parse_value();
            v.m_object.emplace_back(std::move(key), std::move(member));
            skip_whitespace();
            if (next_is(',')) {
                ++m_pos;
                continue;
            }
            expect_char('}', "or ',' in an object");
            break;
        }
        --m_depth;
        return v;
    }

    JsonValue parse_array() {
        JsonValue v = make(JsonValue::Kind::Array);
        enter();
        ++m_pos;  // '['
        skip_whitespace();
        if (next_is(']')) {
            ++m_pos;
            --m_depth;
            return v;
        }
        for (;;) {
            skip_whitespace();
            v.m_array.push_back(parse_value());
            skip_whitespace();
            if (next_is(',')) {
                ++m_pos;
                continue;
            }
            expect_char(']', "or ',' in an array");
            break;
        }
        --m_depth;
        return v;
    }

    JsonValue parse_literal(const char* word, JsonValue::Kind kind, bool value) {
        JsonValue v = make(kind);
        v.m_bool = value;
        for (const char* w = word; *w; ++w) {
            if (!next_is(*w)) fail(std::string("invalid literal, expected '") + word + "'");
            ++m_pos;
        }
        return v;
    }

    JsonValue parse_number() {
        JsonValue v = make(JsonValue::Kind::Number);
        const std::size_t begin = m_pos;
        const bool negative = next_is('-');
        if (negative) ++m_pos;
        auto digit = [&] { return !at_end() && m_data[m_pos] >= '0' && m_data[m_pos] <= '9'; };
        if (!digit()) fail("expected a digit in a number, found " + describe_current());
        // Integer part: magnitude accumulated with overflow detection.
        std::uint64_t magnitude = 0;
        bool fits = true;
        const std::uint64_t limit = negative ? std::uint64_t(1) << 63 : (std::uint64_t(1) << 63) - 1;
        auto accumulate = [&] {
            const auto d = static_cast<std::uint64_t>(m_data[m_pos] - '0');
            if (magnitude > (limit - d) / 10) fits = false;
            else magnitude = magnitude * 10 + d;
            ++m_pos;
        };
        if (next_is('0')) {
            ++m_pos;
            if (digit()) fail("leading zero in a number");
        } else {
            while (digit()) accumulate();
        }
        bool integral = true;
        if (next_is('.')) {
            ++m_pos;
            if (!digit()) fail("expected a digit after the decimal point, found " + describe_current());
            while (digit()) ++m_pos;
            integral = false;
        }
        if (next_is('e') || next_is('E')) {
            ++m_pos;
            if (next_is('+') || next_is('-')) ++m_pos;
            if (!digit()) fail("expected a digit in the exponent, found " + describe_current());
            while (digit()) ++m_pos;
            integral = false;
        }
        v.m_text.assign(reinterpret_cast<const char*>(m_data + begin), m_pos - begin);
        v.m_is_integer = integral && fits;
        if (v.m_is_integer)
            v.m_integer = negative ? (magnitude == (std::uint64_t(1) << 63)
                                          ? std::numeric_limits<std::int64_t>::min()
                                          : -static_cast<std::int64_t>(magnitude))
                                   : static_cast<std::int64_t>(magnitude);
        return v;
    }

    unsigned hex4() {
        unsigned value = 0;
        for (int i = 0; i < 4; ++i) {
            if (at_end()) fail("unterminated \\u escape");
            const unsigned char c = m_data[m_pos];
            unsigned d;
            if (c >= '0' && c <= '9') d = c - '0';
            else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
            else fail("expected a hexadecimal digit in a \\u escape, found " + describe_current());
            value = value * 16 + d;
            ++m_pos;
        }
        return value;
    }

    static void append_utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    // Called with m_pos on the opening quote; returns the decoded text.
    std::string parse_string() {
        const std::size_t begin = m_pos;
        ++m_pos;
        std::string out;
        for (;;) {
            if (at_end()) fail_at("unterminated string", begin);
            const unsigned char c = m_data[m_pos];
            if (c == '"') {
                ++m_pos;
                return out;
            }
            if (c == '\\') {
                const std::size_t escape = m_pos;
                ++m_pos;
                if (at_end()) fail_at("unterminated string", begin);
                const unsigned char e = m_data[m_pos++];
                switch (e) {
                    case '"': out += '"'; break;
                    case '\\': out += '\\'; break;
                    case '/': out += '/'; break;
                    case 'b': out += '\b'; break;
                    case 'f': out += '\f'; break;
                    case 'n': out += '\n'; break;
                    case 'r': out += '\r'; break;
                    case 't': out += '\t'; break;
                    case 'u': {
                        unsigned cp = hex4();
                        if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at("lone low surrogate in a \\u escape", escape);
                        if (cp >= 0xD800 && cp <= 0xDBFF) {
                            if (!next_is('\\') || m_pos + 1 >= m_size || m_data[m_pos + 1] != 'u')
                                fail_at("high surrogate not followed by a low surrogate escape", escape);
                            m_pos += 2;
                            const unsigned low = hex4();
                            if (low < 0xDC00 || low > 0xDFFF)
                                fail_at("high surrogate not followed by a low surrogate escape", escape);
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        }
                        append_utf8(out, cp);
                        break;
                    }
                    default: fail_at("invalid escape sequence in a string", escape);
                }
                continue;
            }
            if (c < 0x20) fail("unescaped control character in a string");
            const std::size_t n = utf8_sequence_length(m_data + m_pos, m_size - m_pos);
            if (n == 0) fail("invalid UTF-8 in a string");
            out.append(reinterpret_cast<const char*>(m_data + m_pos), n);
            m_pos += n;
        }
    }

    const unsigned char* m_data;
    std::size_t m_size;
    std::size_t m_max_depth;
    std::size_t m_pos = 0;
    std::size_t m_depth = 0;
};

/// Parses a complete JSON text (see JsonParser); JsonError with the byte offset otherwise.
inline JsonValue parse_json(std::string_view text,
                            std::size_t max_depth = JsonParser::default_max_depth) {
    return JsonParser(text.data(), text.size(), max_depth).parse();
}

}  // namespace ssmdyn::detail
