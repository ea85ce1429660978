// libFuzzer harness: bytes -> the JSON parsing of the `ssmdyn` program and of the library.
//
// 1. As `ssmdyn` reads a CONFIG (tools/config.hpp, load_config): the text parsed by
//    nlohmann::json::parse, then cli::parse_config. Expected: nlohmann::json::exception
//    from the parser (load_config turns it into std::invalid_argument) and
//    std::invalid_argument from parse_config.
// 2. The library's strict JSON reader of safetensors headers (detail::HeaderBuilder with
//    nlohmann's SAX parser, up to the first NUL byte as SafetensorsFile does). It refuses
//    more than nlohmann's DOM parser (duplicate keys, deep nesting) but never accepts what
//    that parser refuses, and when both accept they must build the same document.
// 3. A parsed configuration's tokens written back as the program prints them (json_rows).
//
// Anything else (a crash, a sanitizer report, another exception, a disagreement) is a finding.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include <ssmdyn/io/json.hpp>
#include <ssmdyn/io/safetensors.hpp>

#include "config.hpp"
#include "fuzz_support.hpp"

using ssmdyn_fuzz::finding;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);

    // 1. The CLI's configuration, from text.
    nlohmann::json root;
    bool dom_ok = true;
    try {
        root = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
        dom_ok = false;
    }
    if (dom_ok) {
        try {
            const ssmdyn::cli::Config config = ssmdyn::cli::parse_config(root);
            const Eigen::Index dim = config.params.dim();
            if (dim < 1 || config.tokens.size() == 0 || config.tokens.size() % dim != 0)
                finding("parse_config: tokens do not fill whole tokens of D values");
            if (!config.tokens.allFinite()) finding("parse_config accepted non-finite tokens");
            (void)ssmdyn::json_rows(ssmdyn::token_matrix(config.tokens, dim).transpose()).dump();
        } catch (const std::invalid_argument&) {
        }
    }

    // 2. The strict header reader, on the text up to its first NUL byte.
    const void* nul = std::memchr(text.data(), 0, text.size());
    const std::size_t end = nul ? static_cast<std::size_t>(static_cast<const char*>(nul) - text.data()) : text.size();
    ssmdyn::detail::HeaderBuilder builder;
    const bool strict_ok = nlohmann::json::sax_parse(text.data(), text.data() + end, &builder,
                                                     nlohmann::json::input_format_t::json, /*strict=*/true,
                                                     /*ignore_comments=*/false);
    if (strict_ok) {
        nlohmann::json dom;
        try {
            dom = nlohmann::json::parse(text.data(), text.data() + end);
        } catch (const nlohmann::json::exception&) {
            finding("HeaderBuilder accepted text that nlohmann::json::parse refuses");
        }
        if (dom != builder.root()) finding("HeaderBuilder built a document different from nlohmann::json::parse");
        if (builder.root().is_object() && builder.top_level_keys().size() != builder.root().size())
            finding("HeaderBuilder: top_level_keys() does not list every top-level key once");
    } else if (builder.problem().empty()) {
        finding("HeaderBuilder refused the text without saying why");
    }
    return 0;
}
