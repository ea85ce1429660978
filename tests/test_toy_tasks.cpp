#include "support.hpp"

#include <train_toy/tasks.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

// The data of examples/train_toy: the synthetic tasks are deterministic, balanced, and
// carry their label exactly where they claim (an oracle reading there gets 100%, a reader
// looking elsewhere gets chance); digits_task reads scripts/convert_digits.py's CSV.

namespace {

using ssmdyn::toy::Dataset;
using ssmdyn::toy::Task;

/// argmax_c of (cos 2 pi c/C, sin 2 pi c/C) . (x, y): written again here, not taken from
/// the header, so that the oracles below check the tasks independently.
int nearest_direction(double x, double y, int classes) {
    int best = -1;
    double best_dot = -1e300;
    for (int c = 0; c < classes; ++c) {
        const double a = 2 * 3.14159265358979323846 * c / classes;
        const double dot = std::cos(a) * x + std::sin(a) * y;
        if (dot > best_dot) {
            best_dot = dot;
            best = c;
        }
    }
    return best;
}

/// The fraction of the samples of `data` on which classify(X) gives the label.
template <typename Classifier>
double accuracy(const Dataset& data, Classifier classify) {
    int right = 0;
    for (std::size_t i = 0; i < data.inputs.size(); ++i) right += classify(data.inputs[i]) == data.labels[i];
    return double(right) / double(data.inputs.size());
}

bool same(const Dataset& a, const Dataset& b) {
    if (a.labels != b.labels || a.inputs.size() != b.inputs.size()) return false;
    for (std::size_t i = 0; i < a.inputs.size(); ++i)
        if (a.inputs[i].rows() != b.inputs[i].rows() || a.inputs[i].cols() != b.inputs[i].cols() ||
            a.inputs[i] != b.inputs[i])
            return false;
    return true;
}

void check_shapes(const Dataset& data, int n, const Task& task) {
    REQUIRE(data.inputs.size() == std::size_t(n));
    REQUIRE(data.labels.size() == std::size_t(n));
    for (const auto& X : data.inputs) {
        CHECK(X.rows() == task.d_in);
        CHECK(X.cols() == task.length);
        CHECK(X.allFinite());
    }
    for (const int y : data.labels) CHECK((y >= 0 && y < task.classes));
}

/// The layout shared by the synthetic tasks: channel 0 the marker (0 or 1), the last
/// channel 1 everywhere. Returns the marked positions of X.
std::vector<int> check_layout(const Eigen::MatrixXd& X) {
    std::vector<int> marked;
    for (Eigen::Index l = 0; l < X.cols(); ++l) {
        CHECK((X(0, l) == 0.0 || X(0, l) == 1.0));
        CHECK(X(X.rows() - 1, l) == 1.0);
        if (X(0, l) == 1.0) marked.push_back(int(l));
    }
    return marked;
}

/// Each class n / classes times, up to one.
void check_balanced(const Dataset& data, int classes) {
    std::vector<int> count(std::size_t(classes), 0);
    for (const int y : data.labels) ++count[std::size_t(y)];
    const int n = int(data.labels.size());
    for (const int k : count) {
        CHECK(k >= n / classes);
        CHECK(k <= n / classes + 1);
    }
}

/// The labels are not sorted: some label differs from the one before it in a way that
/// i % classes would not give (a shuffled order, not a cycle).
bool looks_shuffled(const std::vector<int>& labels, int classes) {
    for (std::size_t i = 0; i < labels.size(); ++i)
        if (labels[i] != int(i) % classes) return true;
    return false;
}

std::string write_file(const test::TempPath& file, const std::string& text) {
    std::ofstream(file.path(), std::ios::binary) << text;
    return file.path();
}

/// A valid CSV row: 64 pixels (pixel 0 = `id`, the others a pattern) and the label.
std::string digits_row(int id, int label) {
    std::string row = std::to_string(id);
    for (int p = 1; p < 64; ++p) row += "," + std::to_string((p * 7 + id) % 17);
    return row + "," + std::to_string(label);
}

/// The message of the std::runtime_error that f throws, or "<no exception>".
template <typename F>
std::string runtime_error_of(F f) {
    try {
        f();
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "<no exception>";
}

}  // namespace

TEST_CASE("toy tasks: long_range has the promised shapes, labels and balance") {
    const Task t = ssmdyn::toy::long_range_task(7, 403, 101);
    CHECK(t.name == "long_range");
    CHECK(t.d_in == 4);
    CHECK(t.length == 32);
    CHECK(t.classes == 4);
    check_shapes(t.train, 403, t);
    check_shapes(t.test, 101, t);
    check_balanced(t.train, 4);
    check_balanced(t.test, 4);
    CHECK(looks_shuffled(t.train.labels, 4));
    for (const auto& X : t.train.inputs) CHECK(check_layout(X) == std::vector<int>{0});  // the cue is marked

    const Task u = ssmdyn::toy::long_range_task(7, 50, 30, 16, 3, 5, 2);
    CHECK(u.d_in == 5);
    CHECK(u.length == 16);
    CHECK(u.classes == 3);
    check_shapes(u.train, 50, u);
    check_shapes(u.test, 30, u);
    check_balanced(u.train, 3);
    for (const auto& X : u.test.inputs) {
        CHECK(check_layout(X) == std::vector<int>{0, 1});
        CHECK(std::abs(X(3, 0)) <= 0.2);  // the extra channel: jitter on the cue, noise after
        CHECK(std::abs(X(3, 1)) <= 0.2);
    }

    CHECK_THROWS_AS(ssmdyn::toy::long_range_task(1, -1, 10), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::long_range_task(1, 10, 10, 1), std::invalid_argument);  // no distractor
    CHECK_THROWS_AS(ssmdyn::toy::long_range_task(1, 10, 10, 32, 1), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::long_range_task(1, 10, 10, 32, 9), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::long_range_task(1, 10, 10, 32, 4, 3), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::long_range_task(1, 10, 10, 32, 4, 4, 0), std::invalid_argument);
    CHECK_NOTHROW(ssmdyn::toy::long_range_task(1, 10, 10, 2, 2, 4, 1));
}

TEST_CASE("toy tasks: the same seed gives the same data, another seed other data") {
    for (const bool needles : {false, true}) {
        auto make = [&](std::uint64_t seed, int n_train, int n_test) {
            return needles ? ssmdyn::toy::needles_task(seed, n_train, n_test)
                           : ssmdyn::toy::long_range_task(seed, n_train, n_test);
        };
        const Task a = make(42, 200, 60), b = make(42, 200, 60), c = make(43, 200, 60);
        CHECK(same(a.train, b.train));
        CHECK(same(a.test, b.test));
        CHECK_FALSE(same(a.train, c.train));
        CHECK_FALSE(same(a.test, c.test));
        CHECK(a.train.inputs[0] != c.train.inputs[0]);
        // Train and test are different samples, and the test set does not depend on
        // n_train (separate streams): growing the training set keeps the test set.
        CHECK(a.train.inputs[0] != a.test.inputs[0]);
        CHECK(same(make(42, 500, 60).test, a.test));
        CHECK(same(make(42, 200, 10).train, a.train));
    }
}

TEST_CASE("toy tasks: long_range's label is in the first token and nowhere else") {
    for (const int cue_tokens : {1, 2}) {
        const Task t = ssmdyn::toy::long_range_task(11, 2000, 400, 32, 4, 5, cue_tokens);
        auto read_token = [&](int l) {  // the value (channels 1, 2) of token l
            return [l](const Eigen::MatrixXd& X) { return nearest_direction(X(1, l), X(2, l), 4); };
        };
        // An oracle reading the first token (or any cue token) is always right...
        CHECK(accuracy(t.train, read_token(0)) == 1.0);
        CHECK(accuracy(t.test, read_token(0)) == 1.0);
        CHECK(accuracy(t.train, read_token(cue_tokens - 1)) == 1.0);
        // ...one reading a later token is at chance (1/4; 2000 samples: sd ~0.01)...
        CHECK(std::abs(accuracy(t.train, read_token(cue_tokens)) - 0.25) < 0.05);
        CHECK(std::abs(accuracy(t.train, read_token(31)) - 0.25) < 0.05);
        // ...and so, nearly, is the mean of all tokens: the distractors drown the cue.
        const double mean_acc = accuracy(t.train, [](const Eigen::MatrixXd& X) {
            const Eigen::VectorXd m = X.rowwise().mean();
            return nearest_direction(m(1), m(2), 4);
        });
        CHECK(mean_acc < 0.6);  // about 0.3 (1 cue token) to 0.45 (2)
        // The distractors' values (channels 1 .. 3) have the cue's norm, sqrt(3), within 10%.
        double cue_sq = 0, distractor_sq = 0;
        for (const auto& X : t.train.inputs) {
            cue_sq += X.block(1, 0, 3, 1).squaredNorm();
            distractor_sq += X.block(1, cue_tokens, 3, 32 - cue_tokens).colwise().squaredNorm().mean();
        }
        CHECK(std::abs(distractor_sq / 2000 / 3.0 - 1.0) < 0.1);
        CHECK(std::abs(std::sqrt(cue_sq / 2000) / std::sqrt(3.0) - 1.0) < 0.1);
    }
}

TEST_CASE("toy tasks: needles has the promised shapes, markers, positions and balance") {
    const Task t = ssmdyn::toy::needles_task(5, 1000, 200);
    CHECK(t.name == "needles");
    CHECK(t.d_in == 4);
    CHECK(t.length == 32);
    CHECK(t.classes == 4);
    check_shapes(t.train, 1000, t);
    check_shapes(t.test, 200, t);
    check_balanced(t.train, 4);
    check_balanced(t.test, 4);
    CHECK(looks_shuffled(t.train.labels, 4));

    std::set<int> first_positions;
    std::set<std::vector<int>> position_sets;
    for (const auto& X : t.train.inputs) {
        const std::vector<int> positions = check_layout(X);
        REQUIRE(positions.size() == 2);
        for (const int l : positions) {
            const double norm = std::hypot(X(1, l), X(2, l));
            CHECK((norm >= 1.0 && norm <= 2.0));
        }
        first_positions.insert(positions[0]);
        position_sets.insert(positions);
    }
    // The positions vary per sample: every position holds a needle somewhere, and there
    // are many different pairs (496 possible).
    CHECK(first_positions.size() >= 25);
    CHECK(position_sets.size() >= 300);

    const Task k3 = ssmdyn::toy::needles_task(5, 60, 0, 20, 2, 3);
    CHECK(k3.classes == 2);
    check_shapes(k3.train, 60, k3);
    for (const auto& X : k3.train.inputs) CHECK(check_layout(X).size() == 3);

    CHECK_THROWS_AS(ssmdyn::toy::needles_task(1, 10, -1), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::needles_task(1, 10, 10, 32, 9), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::needles_task(1, 10, 10, 32, 4, 0), std::invalid_argument);
    CHECK_THROWS_AS(ssmdyn::toy::needles_task(1, 10, 10, 2, 4, 3), std::invalid_argument);
}

TEST_CASE("toy tasks: needles' label is in the sum of the marked tokens and nowhere else") {
    for (const int needles : {1, 2, 3}) {
        const Task t = ssmdyn::toy::needles_task(9, 2000, 400, 32, 4, needles);
        // Sums channels 1, 2 over the tokens whose marker is (or is not) `marked`.
        auto read_sum = [](bool marked, bool all = false) {
            return [=](const Eigen::MatrixXd& X) {
                double x = 0, y = 0;
                for (Eigen::Index l = 0; l < X.cols(); ++l)
                    if (all || (X(0, l) > 0.5) == marked) x += X(1, l), y += X(2, l);
                return nearest_direction(x, y, 4);
            };
        };
        // The oracle: the marked tokens' sum always gives the label.
        CHECK(accuracy(t.train, read_sum(true)) == 1.0);
        CHECK(accuracy(t.test, read_sum(true)) == 1.0);
        // Ignoring the needles: chance (1/4; 2000 samples: sd ~0.01).
        CHECK(std::abs(accuracy(t.train, read_sum(false)) - 0.25) < 0.05);
        // Summing every token regardless of the marker: well below the oracle.
        CHECK(accuracy(t.train, read_sum(false, true)) < 0.6);
        if (needles > 1) {
            // No single needle decides: the first needle alone is informative but not enough.
            const double first_needle = accuracy(t.train, [](const Eigen::MatrixXd& X) {
                for (Eigen::Index l = 0; l < X.cols(); ++l)
                    if (X(0, l) > 0.5) return nearest_direction(X(1, l), X(2, l), 4);
                return -1;
            });
            CHECK(first_needle > 0.3);
            CHECK(first_needle < 0.8);
        }
    }
}

TEST_CASE("toy tasks: digits_task is nullopt without its file and names the bad line of a malformed one") {
    const test::TempPath missing(".csv");
    CHECK_FALSE(ssmdyn::toy::digits_task(missing.path(), 1).has_value());

    struct Case {
        std::string text, expected;  // expected: in the message after "<path>:"
    };
    const std::string good = digits_row(1, 3) + "\n" + digits_row(2, 4) + "\n";
    std::string short_row = digits_row(3, 5);
    short_row = short_row.substr(0, short_row.rfind(','));  // 64 columns
    std::string bad_pixel = digits_row(3, 5);
    bad_pixel.replace(0, bad_pixel.find(','), "17");
    std::string not_int = digits_row(3, 5);
    not_int.replace(0, not_int.find(','), "2.5");
    const std::vector<Case> cases = {
        {good + short_row + "\n", "3: expected 65"},
        {good + digits_row(3, 5) + ",1\n", "3: expected 65"},
        {good + bad_pixel + "\n", "3: column 1: pixel 17"},
        {good + not_int + "\n", "3: column 1: not an integer"},
        {good + digits_row(3, 10) + "\n", "3: column 65: label 10"},
        {good + "\n" + digits_row(3, 5) + ",,\n", "4: column 66: not an integer"},  // the blank line 3 is skipped
        {"abc\n", "1: column 1: not an integer"},
    };
    for (const Case& c : cases) {
        const test::TempPath file(".csv");
        const std::string path = write_file(file, c.text);
        const std::string message = runtime_error_of([&] { ssmdyn::toy::digits_task(path, 1); });
        INFO(message);
        CHECK(message.find(path + ":" + c.expected) != std::string::npos);
    }
    const test::TempPath empty(".csv");
    const std::string message = runtime_error_of([&] { ssmdyn::toy::digits_task(write_file(empty, "\n\n"), 1); });
    CHECK(message.find(empty.path()) != std::string::npos);
    CHECK(message.find("no rows") != std::string::npos);
    CHECK_THROWS_AS(ssmdyn::toy::digits_task(missing.path(), 1, 1.0), std::invalid_argument);
}

TEST_CASE("toy tasks: digits_task reads a small valid file and splits it by the seed, stratified") {
    // 8 images of digit 2 and 4 of digit 7; pixel 0 is the image's id. One line ends in
    // CRLF, and a blank line sits in the middle and at the end.
    std::string text;
    std::vector<int> label_of(12);
    for (int id = 0; id < 12; ++id) {
        label_of[std::size_t(id)] = id < 8 ? 2 : 7;
        text += digits_row(id, label_of[std::size_t(id)]) + (id == 5 ? "\r\n" : "\n");
        if (id == 6) text += "\n";
    }
    text += "\n";
    const test::TempPath file(".csv");
    write_file(file, text);

    const auto task = ssmdyn::toy::digits_task(file.path(), 3);
    REQUIRE(task.has_value());
    CHECK(task->name == "digits");
    CHECK(task->d_in == 1);
    CHECK(task->length == 64);
    CHECK(task->classes == 10);
    check_shapes(task->train, 9, *task);  // 8 - round(2) + 4 - round(1)
    check_shapes(task->test, 3, *task);
    std::set<int> ids;
    int test_twos = 0;
    for (const Dataset* data : {&task->train, &task->test})
        for (std::size_t i = 0; i < data->inputs.size(); ++i) {
            const Eigen::MatrixXd& X = data->inputs[i];
            const int id = int(std::lround(X(0, 0) * 16));
            ids.insert(id);
            REQUIRE((id >= 0 && id < 12));
            CHECK(data->labels[i] == label_of[std::size_t(id)]);
            for (int p = 1; p < 64; ++p) CHECK(X(0, p) == double((p * 7 + id) % 17) / 16.0);
            CHECK(X.minCoeff() >= 0.0);
            CHECK(X.maxCoeff() <= 1.0);
            if (data == &task->test && data->labels[i] == 2) ++test_twos;
        }
    CHECK(ids.size() == 12);  // every image once
    CHECK(test_twos == 2);    // stratified: a quarter of each digit in the test set

    // The same seed gives the same split; the seeds do not all give the same one.
    CHECK(same(ssmdyn::toy::digits_task(file.path(), 3)->test, task->test));
    std::set<std::vector<int>> splits;
    for (std::uint64_t seed = 0; seed < 10; ++seed) {
        std::vector<int> test_ids;
        const auto split = ssmdyn::toy::digits_task(file.path(), seed);  // kept: the loop reads into it
        REQUIRE(split.has_value());
        for (const auto& X : split->test.inputs)
            test_ids.push_back(int(std::lround(X(0, 0) * 16)));
        std::sort(test_ids.begin(), test_ids.end());
        splits.insert(test_ids);
    }
    CHECK(splits.size() >= 3);
    // test_fraction 0: everything in the training set.
    CHECK(ssmdyn::toy::digits_task(file.path(), 3, 0.0)->train.inputs.size() == 12);
    // A fraction that leaves the test set empty (too few images per digit) is refused.
    std::string empty_split = "<no exception>";
    try {
        ssmdyn::toy::digits_task(file.path(), 3, 0.01);
    } catch (const std::runtime_error& e) {
        empty_split = e.what();
    }
    CHECK(empty_split.find("12 images give an empty test set") != std::string::npos);
}

TEST_CASE("toy tasks: the default digits path, and the converted file when it is there") {
    ::setenv("SSMDYN_DIGITS", "/somewhere/digits.csv", 1);
    CHECK(ssmdyn::toy::default_digits_path() == "/somewhere/digits.csv");
    ::setenv("SSMDYN_DIGITS", "", 1);  // empty: as if unset
    CHECK(ssmdyn::toy::default_digits_path() == "data/digits.csv");
    ::unsetenv("SSMDYN_DIGITS");
    CHECK(ssmdyn::toy::default_digits_path() == "data/digits.csv");
#ifdef SSMDYN_TOY_DIGITS_FILE
    // The file scripts/convert_digits.py writes by default (<repo>/data/digits.csv).
    const auto task = ssmdyn::toy::digits_task(SSMDYN_TOY_DIGITS_FILE, 1);
    if (!std::filesystem::exists(SSMDYN_TOY_DIGITS_FILE)) {
        CHECK_FALSE(task.has_value());
        WARN("no " SSMDYN_TOY_DIGITS_FILE ": run scripts/convert_digits.py to check it too");
    } else {
        REQUIRE(task.has_value());
        CHECK(task->train.inputs.size() + task->test.inputs.size() == 1797);
        CHECK(std::abs(double(task->test.inputs.size()) - 0.25 * 1797) <= 10);
        std::vector<int> count(10, 0);
        for (const int y : task->test.labels) ++count[std::size_t(y)];
        for (const int k : count) CHECK((k >= 43 && k <= 46));  // round(0.25 * 174..183)
    }
#endif
}
