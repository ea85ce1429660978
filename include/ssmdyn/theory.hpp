#pragma once
/// \file theory.hpp
/// The theory component: the paper's theorems as code (classify, blow-up time), observed
/// rates, the 1-D phase diagram and the paper's scenarios. Needs core, integrate and Boost.Math.

#include "theory/blowup_time.hpp"
#include "theory/classify.hpp"
#include "theory/influence.hpp"
#include "theory/layer_report.hpp"
#include "theory/phase_diagram.hpp"
#include "theory/rates.hpp"
#include "theory/regime.hpp"
#include "theory/scenarios.hpp"
