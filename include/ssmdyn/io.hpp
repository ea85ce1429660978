#pragma once
/// \file io.hpp
/// The optional io component (CMake target ssmdyn::io, which adds nlohmann_json): safetensors files, Mamba checkpoints, CSV and JSON writers, gnuplot figures.

#include "io/mamba.hpp"
#include "io/safetensors.hpp"
