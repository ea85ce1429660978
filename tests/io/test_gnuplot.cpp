#include "support.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <ssmdyn/io/gnuplot.hpp>

TEST_CASE("gnuplot: shell_quote survives the shell for any text") {
    for (const std::string text : {"plain", "with space", "it's", "$HOME `x` \"q\" \\ ;|&", "'''", ""}) {
        CAPTURE(text);
        const std::string command = "printf '%s' " + ssmdyn::shell_quote(text);
        std::FILE* pipe = popen(command.c_str(), "r");
        REQUIRE(pipe != nullptr);
        std::string echoed;
        for (int c; (c = std::fgetc(pipe)) != EOF;) echoed += char(c);
        CHECK(pclose(pipe) == 0);
        CHECK(echoed == text);
    }
}

TEST_CASE("gnuplot: a script runs in its own folder, even one whose name needs quoting") {
    if (!ssmdyn::gnuplot_available()) return;  // nothing to run: run_gnuplot then returns false
    test::TempPath dir(" it's here");
    std::filesystem::create_directories(dir.path());
    const auto script = std::filesystem::path(dir.path()) / "plot.gp";
    std::ofstream(script) << "set terminal dumb\nset output 'out.txt'\nplot x\n";
    CHECK(ssmdyn::run_gnuplot(script));
    CHECK(std::filesystem::exists(std::filesystem::path(dir.path()) / "out.txt"));
    std::ofstream(script) << "this is not gnuplot\n";
    CHECK_FALSE(ssmdyn::run_gnuplot(script));
}
