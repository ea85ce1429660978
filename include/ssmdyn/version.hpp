#pragma once
/// \file version.hpp
/// The library version (kept equal to the CMake project version).

#define SSMDYN_VERSION_MAJOR 0
#define SSMDYN_VERSION_MINOR 1
#define SSMDYN_VERSION_PATCH 0
#define SSMDYN_VERSION_STRING "0.1.0"
