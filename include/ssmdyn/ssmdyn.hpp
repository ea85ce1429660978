#pragma once
/// \file ssmdyn.hpp
/// Umbrella header: everything ssmdyn offers.

#include "blowup_time.hpp"
#include "classify.hpp"
#include "deep_model.hpp"
#include "mamba.hpp"
#include "odeint.hpp"
#include "parameterization.hpp"
#include "params.hpp"
#include "rates.hpp"
#include "regime.hpp"
#include "reordering.hpp"
#include "safetensors.hpp"
#include "selective_scan.hpp"
#include "simulate.hpp"
#include "state.hpp"
#include "step_size.hpp"
#include "sweep.hpp"
#include "system.hpp"
#include "version.hpp"
