#include "support.hpp"

#include <cstdio>
#include <functional>
#include <string>

#include <unistd.h>

#include <ssmdyn/core/parallel_for.hpp>
#include <ssmdyn/io/progress_bar.hpp>

TEST_CASE("progress bar draws only when enabled, and ends at 100%") {
    for (bool enabled : {true, false}) {
        CAPTURE(enabled);
        std::FILE* out = std::tmpfile();
        REQUIRE(out != nullptr);
        {
            ssmdyn::ProgressBar bar("cells", out, enabled);
            ssmdyn::parallel_for(7, [](std::size_t) {}, 2, std::ref(bar));
        }
        std::rewind(out);
        std::string text;
        for (int c; (c = std::fgetc(out)) != EOF;) text += char(c);
        std::fclose(out);
        if (enabled) {
            CHECK(text.find("cells [") != std::string::npos);
            CHECK(text.find("100% 7/7") != std::string::npos);
            CHECK(text.back() == '\n');
        } else {
            CHECK(text.empty());
        }
    }
    // By default: on exactly when stderr is a terminal (under CTest it is not).
    CHECK(ssmdyn::ProgressBar("cells").enabled() == (isatty(fileno(stderr)) != 0));
}
