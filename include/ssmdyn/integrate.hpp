#pragma once
/// \file integrate.hpp
/// The integrate component: statuses, options and results, the odeint wiring, the guarded
/// driver, simulate(), forward sensitivities and the adjoint. Needs core and Boost.Odeint.

#include "integrate/adjoint.hpp"
#include "integrate/driver.hpp"
#include "integrate/odeint.hpp"
#include "integrate/rosenbrock.hpp"
#include "integrate/sensitivity.hpp"
#include "integrate/simulate.hpp"
#include "integrate/status.hpp"
#include "integrate/stiff_switching.hpp"
