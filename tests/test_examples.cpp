// The example programs, run as a user runs them (paths from CMake: SSMDYN_*_EXE).
#include "support.hpp"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>
#include <nlohmann/json.hpp>

#include <ssmdyn/io/safetensors.hpp>

namespace {

struct Run {
    int exit_code;
    std::string out;
};

Run run(const std::string& command) {
    Run r{-1, {}};
    FILE* pipe = popen((command + " 2>/dev/null").c_str(), "r");
    REQUIRE(pipe != nullptr);
    char buf[4096];
    for (std::size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) r.out.append(buf, n);
    const int status = pclose(pipe);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

}  // namespace

TEST_CASE("examples: inspect_checkpoint reports shapes and the spectrum of sym(mu)") {
    // A checkpoint with d_inner = 5, N = 3, dt_rank = 2 whose μ is known to the test.
    const Eigen::Index d = 5, n = 3, r = 2;
    std::mt19937 rng(61);
    const Eigen::MatrixXd x_proj = test::random_tokens(rng, r + 2 * n, d);
    const test::TempPath file(".safetensors");
    const std::string& path = file.path();
    const std::string p = "backbone.layers.0.mixer.";
    ssmdyn::write_safetensors(path, {ssmdyn::NamedTensor::from_matrix(p + "x_proj.weight", x_proj),
                                     ssmdyn::NamedTensor::from_matrix(p + "dt_proj.weight", test::random_tokens(rng, d, r)),
                                     ssmdyn::NamedTensor::from_vector(p + "dt_proj.bias", Eigen::VectorXd::Constant(d, -3.0)),
                                     ssmdyn::NamedTensor::from_matrix(p + "A_log", Eigen::MatrixXd::Zero(d, n)),
                                     ssmdyn::NamedTensor::from_vector(p + "D", Eigen::VectorXd::Ones(d))});
    const Eigen::MatrixXd S_B = x_proj.middleRows(r, n), S_C = x_proj.bottomRows(n);
    const Eigen::MatrixXd mu = S_C.transpose() * S_B;
    const Eigen::VectorXd eig = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>((mu + mu.transpose()) / 2).eigenvalues();

    const Run out = run(std::string(SSMDYN_INSPECT_EXE) + " " + path + " 0 --json --tokens 4 --sets 1");
    std::filesystem::remove(path);  // for the unreadable-file check below
    CAPTURE(out.out);
    REQUIRE(out.exit_code == 0);
    const auto j = nlohmann::json::parse(out.out);
    CHECK(j["d_inner"] == d);
    CHECK(j["n_state"] == n);
    CHECK(j["dt_rank"] == r);
    const double tol = 1e-9 * eig.cwiseAbs().maxCoeff();
    CHECK(j["mu_sym_positive"] == (eig.array() > tol).count());
    CHECK(j["mu_sym_negative"] == (eig.array() < -tol).count());
    CHECK(test::rel_err(j["mu_sym_max"].get<double>(), eig.maxCoeff()) < 1e-12);
    CHECK(test::rel_err(j["mu_sym_min"].get<double>(), eig.minCoeff()) < 1e-12);
    REQUIRE(j["runs"].size() == 1);
    CHECK(j["runs"][0]["ode_status"].is_string());

    CHECK(run(std::string(SSMDYN_INSPECT_EXE) + " " + path + " 0").exit_code == 2);  // removed: unreadable
}

TEST_CASE("examples: depth_limit shows first-order convergence") {
    const Run out = run(SSMDYN_DEPTH_LIMIT_EXE);
    REQUIRE(out.exit_code == 0);
    std::istringstream in(out.out);
    std::string line, last;
    while (std::getline(in, line))
        if (!line.empty()) last = line;
    long K = 0;
    double h = 0, error = 0, order = 0;
    REQUIRE(std::sscanf(last.c_str(), "%ld %lf %lf %lf", &K, &h, &error, &order) == 4);
    CHECK(K == 4096);
    CHECK(order > 0.9);
    CHECK(order < 1.1);
}

TEST_CASE("examples: regimes sees the predicted regime in every scenario") {
    const test::TempPath folder;
    const std::string& dir = folder.path();
    const Run out = run(std::string(SSMDYN_REGIMES_EXE) + " " + dir);
    CAPTURE(out.out);
    REQUIRE(out.exit_code == 0);
    CHECK(out.out.find("MISMATCH") == std::string::npos);
    for (const char* name : {"convergence", "slow_divergence", "fast_divergence"})
        CHECK(std::filesystem::exists(std::filesystem::path(dir) / (std::string(name) + ".csv")));
}

TEST_CASE("examples: the 40-line research program prints fitted rates for a run that blows up, and a CSV") {
    const test::TempPath csv(".csv");
    const Run out = run(std::string(SSMDYN_RESEARCH_EXE) + " " + csv.path());
    CAPTURE(out.out);
    REQUIRE(out.exit_code == 0);
    CHECK(out.out.find("predicted: ") == 0);
    CHECK(out.out.find("blow_up at t = ") != std::string::npos);
    int rates = 0;
    std::istringstream lines(out.out);
    for (std::string line; std::getline(lines, line);)
        if (line.rfind("token ", 0) == 0) {
            ++rates;
            CAPTURE(line);
            CHECK(line.find("nan") == std::string::npos);
            double p = 0;
            CHECK(std::sscanf(line.c_str(), "token %*d: |x| ~ t^%lf", &p) == 1);
            CHECK(std::isfinite(p));
        }
    CHECK(rates == 6);  // one fitted exponent per token
    CHECK(out.out.find("reordered: ") != std::string::npos);
    std::ifstream file(csv.path());
    std::string header;
    REQUIRE(std::getline(file, header));
    CHECK(header.rfind("t,x1_1,x1_2,x1_3,x1_4,x2_1", 0) == 0);
    CHECK(header.find("x6_4") != std::string::npos);
}

TEST_CASE("examples: token_influence writes a causal influence matrix per scenario and horizon") {
    const test::TempPath dir;
    const Run out = run(std::string(SSMDYN_INFLUENCE_EXE) + " " + dir.path());
    CAPTURE(out.out);
    REQUIRE(out.exit_code == 0);
    int files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
        if (entry.path().extension() != ".csv") continue;
        ++files;
        std::ifstream csv(entry.path());
        std::string line;
        REQUIRE(std::getline(csv, line));
        CHECK(line == "l,j,influence");
        int rows = 0;
        while (std::getline(csv, line)) {
            int l = 0, j = 0;
            double value = -1;
            REQUIRE(std::sscanf(line.c_str(), "%d,%d,%lf", &l, &j, &value) == 3);
            CHECK(std::isfinite(value));
            if (j > l) CHECK(value == 0.0);  // causal: a token never moves the ones before it
            ++rows;
        }
        CHECK(rows > 0);
    }
    CHECK(files >= 4);  // three 1-D regimes and a D > 1 system
}

TEST_CASE("examples: train_toy --smoke trains every variant, lowers the loss and writes the table") {
    const test::TempPath dir;
    const Run out = run(std::string(SSMDYN_TRAIN_TOY_EXE) + " --smoke --threads 2 --out " + dir.path());
    CAPTURE(out.out);
    REQUIRE(out.exit_code == 0);
    std::ifstream csv(dir.path() + "/results.csv");
    std::string line;
    REQUIRE(std::getline(csv, line));
    CHECK(line == "task,variant,reorder,seed,test_accuracy,initial_loss,final_loss,observed_regime");
    std::set<std::string> configurations;
    int rows = 0;
    while (std::getline(csv, line)) {
        CAPTURE(line);
        std::vector<std::string> f;
        std::stringstream fields(line);
        for (std::string x; std::getline(fields, x, ',');) f.push_back(x);
        REQUIRE(f.size() == 8);
        configurations.insert(f[1] + "/" + f[2]);
        const double accuracy = std::stod(f[4]), initial = std::stod(f[5]), final_loss = std::stod(f[6]);
        CHECK(accuracy >= 0);
        CHECK(accuracy <= 1);
        CHECK(final_loss < initial);  // training lowers the loss, in every configuration
        CHECK(f[7].find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos);
        ++rows;
    }
    CHECK(rows == 8);
    CHECK(configurations.size() == 8);  // free, psd, nsd, mixed, each with and without reordering
    for (const char* file : {"summary.csv", "curves.csv", "shares.csv"})
        CHECK(std::filesystem::file_size(dir.path() + "/" + file) > 100);
    // Bad input exits 2.
    CHECK(run(std::string(SSMDYN_TRAIN_TOY_EXE) + " --seeds 0").exit_code == 2);
    CHECK(run(std::string(SSMDYN_TRAIN_TOY_EXE) + " --colour").exit_code == 2);
}
