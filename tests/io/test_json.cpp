#include "support.hpp"

#include <ssmdyn/io/json.hpp>
#include <ssmdyn/theory/classify.hpp>

TEST_CASE("json: a simulation result, token by token, null t_blowup without a blow-up") {
    ssmdyn::SimulateResult<double> r;
    r.dim = 2;
    r.x_final.resize(4);
    r.x_final << 1, 2, 3, 4;
    r.x_initial = r.x_final;
    r.t_final = 1.5;
    r.steps = 7;
    r.rhs_evaluations = 43;
    auto j = ssmdyn::to_json(r);
    CHECK(j["status"] == "completed");
    CHECK(j["t_final"] == 1.5);
    CHECK(j["t_blowup"].is_null());
    CHECK(j["tokens"] == nlohmann::ordered_json::parse("[[1.0, 2.0], [3.0, 4.0]]"));  // token l = row l
    CHECK(j["steps"] == 7);
    CHECK(j["rhs_evaluations"] == 43);
    r.status = ssmdyn::Status::BlowUp;
    r.t_blowup = 0.25;
    j = ssmdyn::to_json(r);
    CHECK(j["status"] == "blow_up");
    CHECK(j["t_blowup"] == 0.25);
    // The stiff method's share: its accepted steps and the switch times, in order.
    CHECK(j["stiff_steps"] == 0);
    CHECK(j["stiff_switches"] == nlohmann::ordered_json::array());
    r.stiff_steps = 12;
    r.stiff_switches = {0.5, 0.75, 1.25};
    j = ssmdyn::to_json(r);
    CHECK(j["stiff_steps"] == 12);
    CHECK(j["stiff_switches"] == nlohmann::ordered_json::parse("[0.5, 0.75, 1.25]"));
    std::vector<std::string> keys;
    for (const auto& item : j.items()) keys.push_back(item.key());
    CHECK(keys == std::vector<std::string>{"status", "t_final", "t_blowup", "tokens", "steps", "rhs_evaluations",
                                           "stiff_steps", "stiff_switches"});
}

TEST_CASE("json: a classification with 1-based token indices in print") {
    const auto params = ssmdyn::S6Params<double>::one_dimensional({1.0, 0.5, 1.0, 0.0});
    const auto c = ssmdyn::classify(params, test::tokens({1.0, -0.5}));
    const auto j = ssmdyn::to_json(c);
    CHECK(j["regime"] == "fast_divergence");
    CHECK(j["mu"] == nlohmann::ordered_json::parse("[[1.0]]"));
    CHECK(j["theorem_applies"] == true);
    REQUIRE(j["tokens"].size() == 2);
    CHECK(c.tokens[0].index == 0);  // 0-based in C++
    CHECK(j["tokens"][0]["index"] == 1);
    CHECK(j["tokens"][1]["index"] == 2);
    CHECK(j["tokens"][0]["prediction"] == ssmdyn::to_string(c.tokens[0].fate));
    CHECK(j["first_token_blowup_time"] == *c.first_token_blowup_time);
}
