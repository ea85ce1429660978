#pragma once
/// \file core.hpp
/// The core component: the token state, the S6 parameters and step-size maps, the
/// selective scan, the ODE system, the deep model and parallel_for. Needs Eigen only.

#include "core/causal_jacobian.hpp"
#include "core/deep_model.hpp"
#include "core/mamba_block.hpp"
#include "core/memory_limit.hpp"
#include "core/parallel_for.hpp"
#include "core/params.hpp"
#include "core/scan_derivatives.hpp"
#include "core/selective_scan.hpp"
#include "core/stack_system.hpp"
#include "core/state.hpp"
#include "core/step_size.hpp"
#include "core/system.hpp"
