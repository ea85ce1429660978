#include "support.hpp"

#include <sstream>

#include <ssmdyn/io/table.hpp>

TEST_CASE("table: columns padded to their widest cell, two spaces apart, no trailing blanks") {
    std::ostringstream out;
    ssmdyn::print_table(out, {{"a", "bb", "c"}, {"dddd", "e", "f"}, {"g"}});
    CHECK(out.str() == "a     bb  c\ndddd  e   f\ng\n");
    std::ostringstream none;
    ssmdyn::print_table(none, {});
    CHECK(none.str().empty());
}
