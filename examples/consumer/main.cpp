#include <iostream>
#include <ssmdyn/ssmdyn.hpp>

int main() {
    // The paper's 1-D system (mu = 1, s = 0.5, a = 1, b = 0) with three tokens.
    auto params = ssmdyn::S6Params<double>::one_dimensional({1.0, 0.5, 1.0});  // mu, s, a (b = 0)
    ssmdyn::SelectiveSystem<double> system(params);
    ssmdyn::StateVector<double> x0(3);
    x0 << 1.0, -0.5, 0.25;
    auto result = ssmdyn::simulate(system, x0, 10.0);
    std::cout << ssmdyn::to_string(result.status);
    if (result.t_blowup) std::cout << " at t = " << *result.t_blowup;
    std::cout << " after " << result.steps << " steps\n";
}
