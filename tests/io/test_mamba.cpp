#include "support.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <ssmdyn/io/mamba.hpp>
#include <ssmdyn/io/safetensors.hpp>

namespace {

using test::message_of;
using test::TempPath;

using ssmdyn::DType;
using ssmdyn::NamedTensor;


bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Same shape and the same entries.
bool equal(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}


constexpr Eigen::Index d_inner = 6, n_state = 4, dt_rank = 2, d_model = 3;

// The mixer tensors of one layer, as a checkpoint stores them.
struct RawLayer {
    Eigen::MatrixXd x_proj;     // (dt_rank + 2N) x d_inner
    Eigen::MatrixXd dt_weight;  // d_inner x dt_rank
    Eigen::VectorXd dt_bias;    // d_inner
    Eigen::MatrixXd A_log;      // d_inner x N
    Eigen::VectorXd D;          // d_inner
    Eigen::MatrixXd in_proj;    // 2 d_inner x d_model: not part of S6, present in real files
};

RawLayer random_layer(std::mt19937& rng) {
    std::normal_distribution<double> g(0.0, 0.5);
    std::uniform_real_distribution<double> u(-1.0, 1.5);
    auto gauss = [&](Eigen::Index r, Eigen::Index c) {
        Eigen::MatrixXd m(r, c);
        for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = g(rng);
        return m;
    };
    RawLayer raw;
    raw.x_proj = gauss(dt_rank + 2 * n_state, d_inner);
    raw.dt_weight = gauss(d_inner, dt_rank);
    raw.dt_bias = gauss(d_inner, 1);
    raw.A_log.resize(d_inner, n_state);
    for (Eigen::Index i = 0; i < raw.A_log.size(); ++i) raw.A_log(i) = u(rng);
    raw.D = gauss(d_inner, 1);
    raw.in_proj = gauss(2 * d_inner, d_model);
    return raw;
}

// x rounded to float by the hardware. Through a volatile: GCC 12.2 at -O3 was seen to
// vectorise `m.cast<float>().cast<double>()` into copies that drop the rounding.
double to_float(double x) {
    volatile float f = static_cast<float>(x);
    return static_cast<double>(f);
}

// The same tensors rounded to float, as an F32 checkpoint holds them.
RawLayer rounded_to_float(const RawLayer& raw) {
    auto f = [](const Eigen::MatrixXd& m) -> Eigen::MatrixXd { return m.unaryExpr([](double x) { return to_float(x); }); };
    return {f(raw.x_proj), f(raw.dt_weight), f(raw.dt_bias), f(raw.A_log), f(raw.D), f(raw.in_proj)};
}

void add_layer(std::vector<NamedTensor>& out, const RawLayer& raw, const std::string& prefix, DType dtype) {
    out.push_back(NamedTensor::from_matrix(prefix + "in_proj.weight", raw.in_proj, dtype));
    out.push_back(NamedTensor::from_matrix(prefix + "x_proj.weight", raw.x_proj, dtype));
    out.push_back(NamedTensor::from_matrix(prefix + "dt_proj.weight", raw.dt_weight, dtype));
    out.push_back(NamedTensor::from_vector(prefix + "dt_proj.bias", raw.dt_bias, dtype));
    out.push_back(NamedTensor::from_matrix(prefix + "A_log", raw.A_log, dtype));
    out.push_back(NamedTensor::from_vector(prefix + "D", raw.D, dtype));
}

std::string layer_prefix(int i) { return "backbone.layers." + std::to_string(i) + ".mixer."; }

// A two-layer checkpoint with the embedding and final norm a real file also has.
std::vector<NamedTensor> checkpoint(const RawLayer& l0, const RawLayer& l1, DType dtype) {
    std::vector<NamedTensor> t;
    t.push_back(NamedTensor::from_matrix("backbone.embeddings.weight", Eigen::MatrixXd::Ones(5, d_model), dtype));
    add_layer(t, l0, layer_prefix(0), dtype);
    add_layer(t, l1, layer_prefix(1), dtype);
    t.push_back(NamedTensor::from_vector("backbone.norm_f.weight", Eigen::VectorXd::Ones(d_model), dtype));
    return t;
}

// Every assembled field against the formulas, computed here from the stored tensors.
void check_layer(const ssmdyn::MambaLayer& got, const RawLayer& raw) {
    CHECK(got.d_inner == d_inner);
    CHECK(got.n_state == n_state);
    CHECK(got.dt_rank == dt_rank);
    CHECK(got.params.dim() == d_inner);
    CHECK(got.params.state_dim() == n_state);
    const Eigen::MatrixXd S_B = raw.x_proj.block(dt_rank, 0, n_state, d_inner);
    const Eigen::MatrixXd S_C = raw.x_proj.block(dt_rank + n_state, 0, n_state, d_inner);
    const Eigen::MatrixXd x_delta = raw.x_proj.topRows(dt_rank);
    const Eigen::MatrixXd S_Delta = raw.dt_weight * x_delta;
    const Eigen::MatrixXd A = raw.A_log.unaryExpr([](double v) { return -std::exp(v); });
    CHECK(equal(got.params.S_B, S_B));
    CHECK(equal(got.params.S_C, S_C));
    // S_Δ stays factored, exactly the two tensors.
    CHECK(got.params.S_Delta.size() == 0);
    CHECK(equal(got.params.S_Delta_up, raw.dt_weight));
    CHECK(equal(got.params.S_Delta_down, x_delta));
    // A product, so exact only up to rounding: with FMA (-march=native) Eigen's kernels
    // may contract differently here and in the library.
    const Eigen::MatrixXd product = got.params.step_matrix();
    CHECK(test::max_rel_err(product, S_Delta) < 1e-15);
    CHECK(equal(got.params.delta_bias, raw.dt_bias));
    CHECK(equal(got.params.A, A));
    CHECK(equal(got.D_skip, raw.D));
    // S_Δ once more by explicit sums (rank-2 product: each entry is two products added).
    for (Eigen::Index i = 0; i < d_inner; ++i)
        for (Eigen::Index j = 0; j < d_inner; ++j) {
            double sum = 0;
            for (Eigen::Index k = 0; k < dt_rank; ++k) sum += raw.dt_weight(i, k) * raw.x_proj(k, j);
            CHECK(std::abs(product(i, j) - sum) <= 1e-15 * (1 + std::abs(sum)));
        }
    // μ = S_Cᵀ S_B, as the rest of the library will use it.
    CHECK(test::max_rel_err(got.params.mu(), Eigen::MatrixXd(S_C.transpose() * S_B)) < 1e-15);
}

// Writes a checkpoint whose layer 0 is `raw` (layer 1: `other`) to `path`, loads layer 0
// and returns the message ("<no exception>" if it loads).
std::string load_layer0(const std::string& path, const RawLayer& raw, const RawLayer& other, DType dtype) {
    ssmdyn::write_safetensors(path, checkpoint(raw, other, dtype));
    return message_of([&] { (void)ssmdyn::load_mamba_layer(path, 0); });
}

}  // namespace

TEST_CASE("mamba: S6 parameters from an F64 checkpoint equal the formulas exactly") {
    std::mt19937 rng(2024);
    const RawLayer l0 = random_layer(rng), l1 = random_layer(rng);
    TempPath tmp;
    ssmdyn::write_safetensors(tmp.path(), checkpoint(l0, l1, DType::F64), {{"format", "pt"}});

    const ssmdyn::SafetensorsFile file(tmp.path());
    const ssmdyn::MambaLayer layer0 = ssmdyn::load_mamba_layer(file, 0);
    const ssmdyn::MambaLayer layer1 = ssmdyn::load_mamba_layer(file, 1);
    check_layer(layer0, l0);
    check_layer(layer1, l1);
    CHECK(!equal(layer0.params.S_B, layer1.params.S_B));  // layer 1 read its own tensors

    // The path overload reads the same thing.
    check_layer(ssmdyn::load_mamba_layer(tmp.path(), 1), l1);
}

TEST_CASE("mamba: an F32 checkpoint gives the formulas of the float-rounded tensors exactly") {
    std::mt19937 rng(7);
    const RawLayer l0 = random_layer(rng), l1 = random_layer(rng);
    TempPath tmp;
    ssmdyn::write_safetensors(tmp.path(), checkpoint(l0, l1, DType::F32));
    const ssmdyn::SafetensorsFile file(tmp.path());
    CHECK(file.info(layer_prefix(1) + "x_proj.weight").dtype == DType::F32);
    const auto layer0 = ssmdyn::load_mamba_layer(file, 0);
    check_layer(layer0, rounded_to_float(l0));
    check_layer(ssmdyn::load_mamba_layer(file, 1), rounded_to_float(l1));
    // The rounding is real: the F64 values differ from what an F32 file holds.
    CHECK(!equal(layer0.params.S_B, l0.x_proj.block(dt_rank, 0, n_state, d_inner)));
}

TEST_CASE("mamba: the prefix pattern places the layer index") {
    std::mt19937 rng(11);
    const RawLayer l0 = random_layer(rng), l3 = random_layer(rng);
    TempPath tmp;
    std::vector<NamedTensor> t;
    add_layer(t, l0, "model.blocks.0.ssm.", DType::F64);
    add_layer(t, l3, "model.blocks.3.ssm.", DType::F64);
    add_layer(t, l3, "single.", DType::F64);
    ssmdyn::write_safetensors(tmp.path(), t);
    const ssmdyn::SafetensorsFile file(tmp.path());
    check_layer(ssmdyn::load_mamba_layer(file, 3, "model.blocks.{i}.ssm."), l3);
    check_layer(ssmdyn::load_mamba_layer(file, 0, "model.blocks.{i}.ssm."), l0);
    check_layer(ssmdyn::load_mamba_layer(file, 0, "single."), l3);  // no {i}: the prefix as is
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(file, 0); }),
                   "missing tensor backbone.layers.0.mixer.x_proj.weight"));
}

TEST_CASE("mamba: a wrong shape names the tensor and the shape expected") {
    std::mt19937 rng(3);
    const RawLayer good = random_layer(rng), other = random_layer(rng);
    TempPath tmp;
    auto load = [&](const RawLayer& raw) { return load_layer0(tmp.path(), raw, other, DType::F32); };
    REQUIRE(load(good) == "<no exception>");

    RawLayer bad = good;
    bad.x_proj = Eigen::MatrixXd::Ones(dt_rank + 2 * n_state + 1, d_inner);
    std::string m = load(bad);
    CHECK(contains(m, "backbone.layers.0.mixer.x_proj.weight has shape 11x6, expected (dt_rank + 2N) x d_inner = 10x6"));
    CHECK(contains(m, tmp.path()));
    CHECK(contains(m, "Mamba layer 0"));

    bad = good;
    bad.x_proj = Eigen::MatrixXd::Ones(dt_rank + 2 * n_state, d_inner + 1);
    CHECK(contains(load(bad), "x_proj.weight has shape 10x7, expected (dt_rank + 2N) x d_inner = 10x6"));

    bad = good;
    bad.A_log = Eigen::MatrixXd::Zero(d_inner - 1, n_state);
    CHECK(contains(load(bad), "backbone.layers.0.mixer.A_log has shape 5x4, expected d_inner x N = 6x4"));

    bad = good;  // N is A_log's column count: with 5 columns, x_proj needs 12 rows
    bad.A_log = Eigen::MatrixXd::Zero(d_inner, n_state + 1);
    CHECK(contains(load(bad), "x_proj.weight has shape 10x6, expected (dt_rank + 2N) x d_inner = 12x6"));

    bad = good;
    bad.dt_weight = Eigen::MatrixXd::Ones(d_inner + 1, dt_rank);
    CHECK(contains(load(bad), "dt_proj.weight has shape 7x2, expected d_inner x dt_rank = 6x2"));

    bad = good;  // dt_rank is dt_proj.weight's column count
    bad.dt_weight = Eigen::MatrixXd::Ones(d_inner, dt_rank + 1);
    CHECK(contains(load(bad), "x_proj.weight has shape 10x6, expected (dt_rank + 2N) x d_inner = 11x6"));

    bad = good;
    bad.dt_bias = Eigen::VectorXd::Ones(d_inner - 1);
    CHECK(contains(load(bad), "dt_proj.bias has shape 5, expected d_inner = 6"));

    bad = good;
    bad.D = Eigen::VectorXd::Ones(d_inner + 2);
    CHECK(contains(load(bad), "mixer.D has shape 8, expected d_inner = 6"));

    // Rank errors: a Mamba-2 style 1-D A_log, a 2-D D.
    std::vector<NamedTensor> t;
    add_layer(t, good, layer_prefix(0), DType::F64);
    t[4] = NamedTensor::from_vector(layer_prefix(0) + "A_log", Eigen::VectorXd::Zero(d_inner));
    ssmdyn::write_safetensors(tmp.path(), t);
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(tmp.path(), 0); }),
                   "A_log has shape 6, expected a 2-D tensor d_inner x N"));
    t.clear();
    add_layer(t, good, layer_prefix(0), DType::F64);
    t[5] = NamedTensor::from_matrix(layer_prefix(0) + "D", Eigen::MatrixXd::Zero(d_inner, 1));
    ssmdyn::write_safetensors(tmp.path(), t);
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(tmp.path(), 0); }),
                   "mixer.D has shape 6x1, expected a 1-D tensor of length d_inner"));

    // Degenerate sizes.
    bad = good;
    bad.A_log = Eigen::MatrixXd::Zero(d_inner, 0);
    bad.x_proj = Eigen::MatrixXd::Zero(dt_rank, d_inner);
    CHECK(contains(load(bad), "A_log has shape 6x0; need d_inner >= 1 rows and N >= 1 columns"));
}

TEST_CASE("mamba: a missing tensor or layer names the full key") {
    std::mt19937 rng(5);
    const RawLayer l0 = random_layer(rng);
    TempPath tmp;
    for (const char* name : {"x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"}) {
        std::vector<NamedTensor> t;
        add_layer(t, l0, layer_prefix(0), DType::F64);
        t.erase(std::remove_if(t.begin(), t.end(), [&](const NamedTensor& x) { return x.name == layer_prefix(0) + name; }),
                t.end());
        ssmdyn::write_safetensors(tmp.path(), t);
        const std::string m = message_of([&] { (void)ssmdyn::load_mamba_layer(tmp.path(), 0); });
        CAPTURE(name, m);
        CHECK(contains(m, "missing tensor backbone.layers.0.mixer." + std::string(name) + " ("));
    }
    std::vector<NamedTensor> t;
    add_layer(t, l0, layer_prefix(0), DType::F64);
    ssmdyn::write_safetensors(tmp.path(), t);
    const ssmdyn::SafetensorsFile file(tmp.path());
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(file, 2); }),
                   "Mamba layer 2: the checkpoint has 1 layer under backbone.layers.{i}.mixer. (0 to 0)"));
    // A pattern without its trailing dot means the same prefix.
    CHECK(ssmdyn::load_mamba_layer(file, 0, "backbone.layers.{i}.mixer").params.S_B ==
          ssmdyn::load_mamba_layer(file, 0).params.S_B);
    // A fixed prefix (no {i}) that is not there names the missing key.
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(file, 0, "model.mixer."); }),
                   "missing tensor model.mixer.x_proj.weight"));
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(file, -1); }), "layer = -1 must be >= 0"));
    CHECK(contains(message_of([&] { (void)ssmdyn::load_mamba_layer(tmp.path() + ".absent", 0); }),
                   "cannot be opened"));
}

TEST_CASE("mamba: A = -exp(A_log) is negative for finite A_log and non-finite or zero entries are rejected") {
    std::mt19937 rng(17);
    const RawLayer good = random_layer(rng), other = random_layer(rng);
    TempPath tmp;
    auto load = [&](const RawLayer& raw) { return load_layer0(tmp.path(), raw, other, DType::F64); };
    const double inf = std::numeric_limits<double>::infinity();
    const double nan = std::numeric_limits<double>::quiet_NaN();

    // Large and very negative A_log still give a valid, strictly negative A.
    RawLayer raw = good;
    raw.A_log(0, 0) = 6.0;
    raw.A_log(1, 1) = -30.0;
    CHECK(load(raw) == "<no exception>");
    const auto layer = ssmdyn::load_mamba_layer(tmp.path(), 0);
    CHECK(layer.params.A(0, 0) == -std::exp(6.0));
    CHECK(layer.params.A(1, 1) == -std::exp(-30.0));
    CHECK((layer.params.A.array() < 0).all());

    // exp underflows to 0: A = -0 is not a decay.
    raw = good;
    raw.A_log(2, 3) = -800.0;
    std::string m = load(raw);
    CHECK(contains(m, "A(2,3) = -0 must be < 0"));
    CHECK(contains(m, "A = -exp(backbone.layers.0.mixer.A_log)"));
    raw = good;
    raw.A_log(0, 2) = -inf;
    CHECK(contains(load(raw), "A(0,2) = -0 must be < 0"));
    raw = good;
    raw.A_log(1, 2) = 800.0;  // exp overflows
    CHECK(contains(load(raw), "A(1,2) is not finite"));
    raw = good;
    raw.A_log(0, 1) = nan;
    CHECK(contains(load(raw), "A(0,1) is not finite"));

    raw = good;
    raw.x_proj(dt_rank + 1, 3) = nan;  // row 1 of S_B
    m = load(raw);
    CHECK(contains(m, "S_B(1,3) is not finite"));
    CHECK(contains(m, "S_B = rows [2, 6) of backbone.layers.0.mixer.x_proj.weight"));

    raw = good;
    raw.x_proj(dt_rank + n_state + 3, 0) = -inf;  // row 3 of S_C
    m = load(raw);
    CHECK(contains(m, "S_C(3,0) is not finite"));
    CHECK(contains(m, "rows [6, 10)"));

    raw = good;
    raw.x_proj(1, 4) = inf;  // the low-rank step-size rows: entry (1, 4) of S_Delta_down
    m = load(raw);
    CHECK(contains(m, "S_Delta_down(1,4) is not finite"));
    CHECK(contains(m, "S_Delta_down = rows [0, 2)"));

    raw = good;
    raw.dt_weight(3, 1) = nan;
    m = load(raw);
    CHECK(contains(m, "S_Delta_up(3,1) is not finite"));
    CHECK(contains(m, "S_Delta_up = backbone.layers.0.mixer.dt_proj.weight"));

    raw = good;
    raw.dt_bias(5) = nan;
    m = load(raw);
    CHECK(contains(m, "delta_bias(5,0) is not finite"));
    CHECK(contains(m, "delta_bias = backbone.layers.0.mixer.dt_proj.bias"));

    raw = good;
    raw.D(2) = inf;
    CHECK(contains(load(raw), "backbone.layers.0.mixer.D(2) is not finite"));

    // Layer 1 is untouched by layer 0's problems.
    CHECK(message_of([&] { (void)ssmdyn::load_mamba_layer(tmp.path(), 1); }) == "<no exception>");
}

TEST_CASE("mamba: a layer larger than the memory limit is refused before anything is allocated") {
    // 560 KB of BF16 (dt_rank = N = 1) declaring d_inner = 40,000: S_Delta stays factored,
    // so the layer is 40,000 x 9 doubles (2.7 MiB; a dense S_Delta would be 11.9 GiB).
    const Eigen::Index d = 40000;
    std::vector<NamedTensor> t;
    const std::string p = layer_prefix(0);
    t.push_back(NamedTensor::from_matrix(p + "x_proj.weight", Eigen::MatrixXd::Constant(3, d, 0.01), DType::BF16));
    t.push_back(NamedTensor::from_matrix(p + "dt_proj.weight", Eigen::MatrixXd::Constant(d, 1, 0.5), DType::BF16));
    t.push_back(NamedTensor::from_vector(p + "dt_proj.bias", Eigen::VectorXd::Zero(d), DType::BF16));
    t.push_back(NamedTensor::from_matrix(p + "A_log", Eigen::MatrixXd::Zero(d, 1), DType::BF16));
    t.push_back(NamedTensor::from_vector(p + "D", Eigen::VectorXd::Ones(d), DType::BF16));
    TempPath tmp;
    ssmdyn::write_safetensors(tmp.path(), t);
    CHECK(std::filesystem::file_size(tmp.path()) < 600000);

    ssmdyn::set_memory_limit(std::size_t(1) << 20);  // 1 MiB
    const std::string m = message_of([&] { (void)ssmdyn::load_mamba_layer(tmp.path(), 0); });
    CAPTURE(m);
    CHECK(contains(m, "Mamba layer 0: its S6 parameters with d_inner = 40000, N = 1, dt_rank = 1"));
    CHECK(contains(m, "(1048576 bytes"));
    ssmdyn::set_memory_limit(std::size_t(1) << 30);  // 1 GiB: factored, it fits
    const ssmdyn::MambaLayer big = ssmdyn::load_mamba_layer(tmp.path(), 0);
    CHECK(big.params.dim() == d);
    CHECK(big.params.S_Delta_up.rows() == d);
    ssmdyn::set_memory_limit(0);

    // A real layer's size passes the same limit, and loads as before.
    std::mt19937 rng(3);
    const RawLayer raw = random_layer(rng);
    TempPath ok;
    ssmdyn::write_safetensors(ok.path(), checkpoint(raw, raw, DType::F64));
    ssmdyn::set_memory_limit(std::size_t(1) << 20);
    CHECK(message_of([&] { (void)ssmdyn::load_mamba_layer(ok.path(), 1); }) == "<no exception>");
    ssmdyn::set_memory_limit(0);
}
