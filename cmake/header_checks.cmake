# One translation unit per public header, each including that header alone, built as the
# EXCLUDE_FROM_ALL target ssmdyn_header_checks (the ctest headers_compile_alone builds it):
# a header that leans on an include it does not make itself fails to compile.
file(GLOB_RECURSE _ssmdyn_headers RELATIVE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/include/ssmdyn/*.hpp)
set(_ssmdyn_header_sources "")
foreach(_header IN LISTS _ssmdyn_headers)
  string(MAKE_C_IDENTIFIER ${_header} _id)
  set(_source ${CMAKE_CURRENT_BINARY_DIR}/header_checks/${_id}.cpp)
  file(CONFIGURE OUTPUT ${_source} CONTENT "#include <${_header}>\n#include <${_header}>  // and twice: #pragma once\n")
  list(APPEND _ssmdyn_header_sources ${_source})
endforeach()
add_library(ssmdyn_header_checks OBJECT EXCLUDE_FROM_ALL ${_ssmdyn_header_sources})
target_link_libraries(ssmdyn_header_checks PRIVATE ssmdyn::io)
target_compile_options(ssmdyn_header_checks PRIVATE -Wall -Wextra -Wpedantic)
