#pragma once
/// \file io.hpp
/// The optional io component (CMake target ssmdyn::io, which adds nlohmann_json): safetensors
/// files, Mamba checkpoints, CSV and JSON writers, gnuplot figures, tables, a progress bar.

#include "io/csv.hpp"
#include "io/gnuplot.hpp"
#include "io/checkpoint.hpp"
#include "io/json.hpp"
#include "io/mamba.hpp"
#include "io/mamba_model.hpp"
#include "io/progress_bar.hpp"
#include "io/safetensors.hpp"
#include "io/table.hpp"
