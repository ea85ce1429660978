# ctest: the components of include/ssmdyn/ include only downward.
#   core         -> core
#   integrate    -> core, integrate
#   refinements  -> core, refinements
#   theory       -> core, integrate, theory
#   io           -> every component (and nlohmann_json, which nothing else may use)
# Run as: cmake -DSOURCE_DIR=<repo> -P check_layers.cmake
cmake_policy(SET CMP0057 NEW)  # if(IN_LIST)
set(allowed_core core)
set(allowed_integrate core integrate)
set(allowed_refinements core refinements)
set(allowed_theory core integrate theory)
set(allowed_io core integrate refinements theory io)

set(root ${SOURCE_DIR}/include/ssmdyn)
set(problems "")
foreach(component core integrate refinements theory io)
  file(GLOB_RECURSE headers RELATIVE ${root}/${component} ${root}/${component}/*.hpp)
  foreach(header IN LISTS headers)
    file(STRINGS ${root}/${component}/${header} lines REGEX "^#include")
    foreach(line IN LISTS lines)
      set(target "")
      if(line MATCHES "^#include \"(\\.\\./)+([a-z_]+)/")
        set(target ${CMAKE_MATCH_2})
        if(target STREQUAL "detail" OR NOT target MATCHES "^(core|integrate|refinements|theory|io)$")
          set(target ${component})  # a detail/ folder inside the component itself
        endif()
      elseif(line MATCHES "^#include <ssmdyn/")
        list(APPEND problems "${component}/${header}: '${line}': use a relative include inside the library")
      elseif(line MATCHES "^#include <nlohmann/" AND NOT component STREQUAL "io")
        list(APPEND problems "${component}/${header}: '${line}': only io may use nlohmann_json")
      endif()
      if(target AND NOT target IN_LIST allowed_${component})
        list(APPEND problems "${component}/${header}: '${line}': ${component} may include only ${allowed_${component}}")
      endif()
    endforeach()
  endforeach()
endforeach()
if(problems)
  list(JOIN problems "\n  " text)
  message(FATAL_ERROR "includes that point upward or sideways:\n  ${text}")
endif()
message(STATUS "every include points downward")
