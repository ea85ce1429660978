#pragma once
/// \file ssmdyn.hpp
/// Umbrella header: the whole library that needs only Eigen and Boost (CMake target
/// ssmdyn::ssmdyn). The optional io component, which also needs nlohmann_json, has its
/// own umbrella, <ssmdyn/io.hpp> (target ssmdyn::io).
///
/// The components, each a folder and an umbrella header of its own, from the bottom up
/// (a component includes only those before it):
///   core         state, parameters, step sizes, the selective scan, the system, the deep model
///   integrate    statuses and options, the odeint wiring, the guarded driver, simulate()
///   theory       classify, blow-up time, observed rates, the 1-D phase diagram
///   refinements  sign-constrained mu, importance reordering
///   io           (optional) safetensors, Mamba checkpoints, CSV, JSON, gnuplot

#include "core.hpp"
#include "integrate.hpp"
#include "refinements.hpp"
#include "theory.hpp"
#include "version.hpp"
