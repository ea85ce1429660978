#pragma once
/// \file refinements.hpp
/// The paper's two refinements: the sign-constrained parameterisation of mu and importance
/// reordering with SoftSort. Needs core.

#include "refinements/parameterization.hpp"
#include "refinements/reordering.hpp"
