#pragma once
// The data side of the train_toy example: small sequence-classification tasks for tiny
// selective-SSM classifiers. Every sample is a d_in x L matrix (column l = token l) with
// a label in [0, classes).
//
//   long_range_task  the label is in the first token(s), the rest is noise: a model must
//                    carry the first token to the end (tokens collapsing to zero hurt).
//   needles_task     the label is in a few marked tokens at random positions among noise:
//                    a model must pick them out (reordering by importance could help).
//   digits_task      scikit-learn's 8x8 digits as 64 pixel tokens, a real data set; read
//                    from the CSV that scripts/convert_digits.py writes.
//
// Deterministic for a seed, and portable: the random numbers are drawn from the bits of
// std::mt19937_64 (whose output the standard fixes) by hand, never through the
// std:: distributions (whose algorithms differ between libstdc++ and libc++); only the
// last bits of std::log / std::cos / std::sin in the normal draws may differ between C
// libraries. The training and test sets come from separate streams of the seed, so the
// test set does not depend on n_train (and the training set not on n_test).

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace ssmdyn::toy {

struct Dataset {
    std::vector<Eigen::MatrixXd> inputs;  // each d_in x L (column l = token l)
    std::vector<int> labels;              // in [0, classes)
};

struct Task {
    std::string name;  // "long_range", "needles", "digits"
    int d_in = 0, length = 0, classes = 0;
    Dataset train, test;
};

namespace detail {

inline constexpr double pi = 3.14159265358979323846;

inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/// Random numbers drawn by hand from std::mt19937_64's bits (portable, see the top).
class Rng {
public:
    /// Stream `stream` of `seed`: distinct streams of one seed are unrelated.
    Rng(std::uint64_t seed, std::uint64_t stream) : bits_(splitmix64(splitmix64(seed) + stream)) {}

    /// Uniform in [0, 1), 53 random bits.
    double uniform() { return double(bits_() >> 11) * 0x1.0p-53; }
    double uniform(double a, double b) { return a + (b - a) * uniform(); }

    /// Uniform integer in [0, n), n >= 1, without modulo bias (rejection).
    std::uint64_t below(std::uint64_t n) {
        const std::uint64_t limit = std::uint64_t(-1) - std::uint64_t(-1) % n;  // a multiple of n
        std::uint64_t x;
        do x = bits_();
        while (x >= limit);
        return x % n;
    }

    /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        spare_ = r * std::sin(2 * pi * u2);
        has_spare_ = true;
        return r * std::cos(2 * pi * u2);
    }

    /// Fisher-Yates, with below() (std::shuffle's algorithm is the library's own).
    template <typename T>
    void shuffle(std::vector<T>& v) {
        for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[std::size_t(below(i))]);
    }

private:
    std::mt19937_64 bits_;
    bool has_spare_ = false;
    double spare_ = 0;
};

/// n labels, each class n / classes times (one more for the first n % classes), in random order.
inline std::vector<int> balanced_labels(Rng& rng, int n, int classes) {
    std::vector<int> labels(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) labels[std::size_t(i)] = i % classes;
    rng.shuffle(labels);
    return labels;
}

/// Unit vector at angle 2 pi c / classes: the class directions in a plane, equally spaced.
inline Eigen::Vector2d class_direction(int c, int classes) {
    const double angle = 2 * pi * c / classes;
    return {std::cos(angle), std::sin(angle)};
}

inline void require(bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(what);
}

template <typename Sample>
Dataset make_dataset(Rng rng, int n, int classes, Sample sample) {
    Dataset data;
    data.labels = balanced_labels(rng, n, classes);
    data.inputs.reserve(std::size_t(n));
    for (const int label : data.labels) data.inputs.push_back(sample(rng, label));
    return data;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// The two synthetic tasks share one token layout:
//   channel 0             the marker: 1 on the tokens that carry the label, 0 elsewhere;
//   channels 1, 2         the value: on a labelled token, a vector whose direction says the
//                         class; on any other token, N(0, 1) noise of the same size;
//   channels 3 .. d_in-2  (long_range with d_in > 4 only) more noise, jitter on the cue;
//   channel d_in - 1      1 on every token.
// Class c has the direction u_c = (cos 2 pi c/C, sin 2 pi c/C) in the value plane. Labels
// are balanced: each class n / C times (the first n % C classes once more), in random order.
//
// Why the marker: a selective SSM decides what to write into its state by content (the
// step size Delta comes from the token), so the labelled tokens must be recognisable by
// content. Without it nothing tells them from the noise, and a mean-pooled read-out of
// long_range is right ~30% of the time with 4 classes (the noise drowns the cue).
// Why the constant channel: the S6 layer's B_l = S_B x_l and C_l = S_C x_l have no bias,
// so a model fed the tokens directly (no input embedding) would otherwise have no fixed
// direction to write and read through on a noise token; after an embedding with a bias it
// is simply redundant.

// long_range: the label is the class of the FIRST `cue_tokens` tokens; the rest are
// distractors.
//
// Each of the first cue_tokens tokens (the cue) has marker 1 and the value
// sqrt(d_in - 2) u_label, plus a jitter uniform in [-0.2, 0.2] on channels 1 .. d_in-2; every
// later token has marker 0 and N(0, 1) on channels 1 .. d_in-2: the same expected norm as
// the cue's value, and independent of the label.
//
// What the label depends on: the cue's value only. The class direction nearest to token 0's
// value is always the label (the jitter is below half the angular margin), and nothing after
// the cue says anything about it.
// Why: the model has to carry the cue through L - cue_tokens tokens of noise to the end of
// the sequence, the longest distance a causal model can be asked to. Selecting the cue is
// easy (the marker); keeping it is the task. Dynamics under which the tokens collapse to
// zero (or to one consensus value) over depth forget it, and so fail here: it measures
// memory. A marker-gated state that does not decay, read by a linear layer, solves it.
// Defaults: d_in 4, L 32, 4 classes, 1 cue token. Throws std::invalid_argument on n < 0,
// cue_tokens < 1 or >= length, classes outside [2, 8], d_in < 4.
inline Task long_range_task(std::uint64_t seed, int n_train, int n_test, int length = 32, int classes = 4,
                            int d_in = 4, int cue_tokens = 1) {
    detail::require(n_train >= 0 && n_test >= 0, "long_range_task: n_train and n_test must be >= 0");
    detail::require(cue_tokens >= 1 && length > cue_tokens, "long_range_task: need 1 <= cue_tokens < length");
    detail::require(classes >= 2 && classes <= 8, "long_range_task: classes must be in [2, 8]");
    detail::require(d_in >= 4, "long_range_task: d_in must be >= 4 (marker, a 2-D value, constant)");
    const int noise_channels = d_in - 2;  // channels 1 .. d_in-2
    const double radius = std::sqrt(double(noise_channels));
    const double jitter = 0.2;
    auto sample = [&](detail::Rng& rng, int label) {
        Eigen::MatrixXd X(d_in, length);
        const Eigen::Vector2d cue = radius * detail::class_direction(label, classes);
        for (int l = 0; l < length; ++l) {
            const bool is_cue = l < cue_tokens;
            X(0, l) = is_cue ? 1.0 : 0.0;
            for (int d = 1; d <= noise_channels; ++d)
                X(d, l) = is_cue ? (d <= 2 ? cue(d - 1) : 0.0) + rng.uniform(-jitter, jitter) : rng.normal();
            X(d_in - 1, l) = 1.0;
        }
        return X;
    };
    Task task;
    task.name = "long_range";
    task.d_in = d_in;
    task.length = length;
    task.classes = classes;
    task.train = detail::make_dataset(detail::Rng(seed, 1), n_train, classes, sample);
    task.test = detail::make_dataset(detail::Rng(seed, 2), n_test, classes, sample);
    return task;
}

// ---------------------------------------------------------------------------------------
// needles: the label depends on `needles` marked tokens at positions that vary per sample.
//
// d_in = 4 (marker, 2-D value, constant; see above). A background token has marker 0 and
// N(0, 1) on both value channels; a needle has marker 1 and a value of norm uniform in
// [1, 2] at an angle uniform in [0, 2 pi) (the same size as the background's). The needles
// sit at distinct positions drawn uniformly from [0, L) for each sample. The label is the
// class c whose direction u_c is nearest in angle to the SUM s of the needles' values
// (argmax_c u_c . s). The needle values are redrawn until s has norm >= 0.5 and an angle
// at most 80% of a half sector away from u_label, so no label sits near a boundary.
//
// What the label depends on: the needles' values only, all of them when needles > 1 (the
// first needle alone gives the label ~55-60% of the time with 2 or 3 needles, 4 classes),
// found through the marker; the background is independent of the label.
// Why: the relevant tokens are few, anywhere, and look like the background but for the
// marker, so a model has to select them by content (the selective Delta) rather than by
// position, and add them up; summing every token indiscriminately drowns them (~35%). This
// is the task where reordering the tokens by importance could help. A marker-gated sum
// read by a linear layer solves it exactly.
// Defaults: L 32, 4 classes, 2 needles. Throws std::invalid_argument on n < 0, needles
// outside [1, min(length, 8)], classes outside [2, 8].
inline Task needles_task(std::uint64_t seed, int n_train, int n_test, int length = 32, int classes = 4,
                         int needles = 2) {
    detail::require(n_train >= 0 && n_test >= 0, "needles_task: n_train and n_test must be >= 0");
    detail::require(classes >= 2 && classes <= 8, "needles_task: classes must be in [2, 8]");
    detail::require(needles >= 1 && needles <= 8 && needles <= length,
                    "needles_task: need 1 <= needles <= min(length, 8)");
    const int d_in = 4;
    const double half_sector = detail::pi / classes;
    auto sample = [&](detail::Rng& rng, int label) {
        Eigen::MatrixXd X(d_in, length);
        for (int l = 0; l < length; ++l) {
            X(0, l) = 0.0;
            X(1, l) = rng.normal();
            X(2, l) = rng.normal();
            X(3, l) = 1.0;
        }
        // Distinct positions: the first `needles` entries of a partial Fisher-Yates shuffle.
        std::vector<int> positions(static_cast<std::size_t>(length));
        for (int l = 0; l < length; ++l) positions[std::size_t(l)] = l;
        for (int j = 0; j < needles; ++j) {
            const auto pick = std::size_t(j) + std::size_t(rng.below(std::uint64_t(length - j)));
            std::swap(positions[std::size_t(j)], positions[pick]);
        }
        std::vector<Eigen::Vector2d> values(static_cast<std::size_t>(needles));
        const Eigen::Vector2d u = detail::class_direction(label, classes);
        for (;;) {
            Eigen::Vector2d sum = Eigen::Vector2d::Zero();
            for (auto& v : values) {
                const double norm = rng.uniform(1.0, 2.0), angle = rng.uniform(0.0, 2 * detail::pi);
                v = norm * Eigen::Vector2d(std::cos(angle), std::sin(angle));
                sum += v;
            }
            // The angle from u to the sum, in [-pi, pi].
            const double off = std::atan2(u.x() * sum.y() - u.y() * sum.x(), u.dot(sum));
            if (sum.norm() >= 0.5 && std::abs(off) <= 0.8 * half_sector) break;
        }
        for (int j = 0; j < needles; ++j) {
            const int l = positions[std::size_t(j)];
            X(0, l) = 1.0;
            X(1, l) = values[std::size_t(j)].x();
            X(2, l) = values[std::size_t(j)].y();
        }
        return X;
    };
    Task task;
    task.name = "needles";
    task.d_in = d_in;
    task.length = length;
    task.classes = classes;
    task.train = detail::make_dataset(detail::Rng(seed, 3), n_train, classes, sample);
    task.test = detail::make_dataset(detail::Rng(seed, 4), n_test, classes, sample);
    return task;
}

// ---------------------------------------------------------------------------------------
// digits: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), each image one
// sequence of 64 pixel tokens (d_in = 1, L = 64, row by row: token l is pixel (l / 8, l % 8)),
// each pixel 0..16 scaled to [0, 1]. A real data set beside the two synthetic ones: no
// single token decides the label, the evidence is spread over the whole sequence.
//
// The file is the CSV that scripts/convert_digits.py writes: one row per image, no header,
// 65 comma-separated integers, the 64 pixels (0..16) and the label (0..9). Blank lines are
// skipped. classes is always 10.
//
// The split is stratified and decided by the seed: for each digit, round(test_fraction *
// count) of its images (taken in a seeded random order) go to the test set, the others to
// the training set; both sets are then shuffled (seeded).
//
// Returns std::nullopt when `path` does not exist (the data set is optional: run
// scripts/convert_digits.py to make it). Throws std::runtime_error naming the file and the
// line when it exists but is malformed (wrong number of columns, not an integer, a pixel
// outside 0..16, a label outside 0..9, no rows at all) or cannot be read; throws
// std::invalid_argument when test_fraction is outside [0, 1).

/// Where digits_task's callers look by default: $SSMDYN_DIGITS when set and not empty;
/// else SSMDYN_TOY_DIGITS_PATH when the program is compiled with that macro defined (a
/// string literal, e.g. "<repo>/data/digits.csv" from CMake, so that a program run from its
/// build folder finds the file); else "data/digits.csv", relative to the working
/// directory (the repository root: where scripts/convert_digits.py writes it by default).
inline std::string default_digits_path() {
    if (const char* env = std::getenv("SSMDYN_DIGITS"); env && *env) return env;
#ifdef SSMDYN_TOY_DIGITS_PATH
    return SSMDYN_TOY_DIGITS_PATH;
#else
    return "data/digits.csv";
#endif
}

namespace detail {

/// One row of the digits CSV: 64 pixels and the label, else throws naming file and line.
inline std::vector<int> parse_digits_row(const std::string& text, const std::string& where) {
    std::vector<int> row;
    std::size_t begin = 0;
    for (;;) {
        const std::size_t comma = text.find(',', begin);
        const std::size_t end = comma == std::string::npos ? text.size() : comma;
        std::size_t a = begin, b = end;
        while (a < b && (text[a] == ' ' || text[a] == '\t')) ++a;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t')) --b;
        const std::string field = text.substr(a, b - a);
        const std::size_t column = row.size() + 1;
        if (field.empty() || field.size() > 9 ||
            !std::all_of(field.begin() + (field[0] == '-' || field[0] == '+' ? 1 : 0), field.end(),
                         [](char ch) { return ch >= '0' && ch <= '9'; }) ||
            field == "-" || field == "+")
            throw std::runtime_error(where + ": column " + std::to_string(column) + ": not an integer: '" + field +
                                     "'");
        row.push_back(std::stoi(field));
        if (comma == std::string::npos) break;
        begin = comma + 1;
    }
    if (row.size() != 65)
        throw std::runtime_error(where + ": expected 65 comma-separated integers (64 pixels and the label), got " +
                                 std::to_string(row.size()));
    for (std::size_t c = 0; c < 64; ++c)
        if (row[c] < 0 || row[c] > 16)
            throw std::runtime_error(where + ": column " + std::to_string(c + 1) + ": pixel " + std::to_string(row[c]) +
                                     " outside 0..16");
    if (row[64] < 0 || row[64] > 9)
        throw std::runtime_error(where + ": column 65: label " + std::to_string(row[64]) + " outside 0..9");
    return row;
}

}  // namespace detail

inline std::optional<Task> digits_task(const std::string& path, std::uint64_t seed, double test_fraction = 0.25) {
    if (!(test_fraction >= 0.0 && test_fraction < 1.0))
        throw std::invalid_argument("digits_task: test_fraction must be in [0, 1)");
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return std::nullopt;
    if (!std::filesystem::is_regular_file(path, ec))
        throw std::runtime_error("digits_task: " + path + " is not a regular file");
    std::ifstream in(path);
    if (!in) throw std::runtime_error("digits_task: cannot open " + path);

    constexpr int classes = 10, length = 64;
    std::vector<Eigen::MatrixXd> images;
    std::vector<int> labels;
    std::string text;
    for (long line = 1; std::getline(in, text); ++line) {
        if (!text.empty() && text.back() == '\r') text.pop_back();
        if (text.find_first_not_of(" \t") == std::string::npos) continue;  // blank
        const std::vector<int> row = detail::parse_digits_row(text, path + ":" + std::to_string(line));
        Eigen::MatrixXd X(1, length);
        for (int l = 0; l < length; ++l) X(0, l) = row[std::size_t(l)] / 16.0;
        images.push_back(std::move(X));
        labels.push_back(row[64]);
    }
    if (in.bad()) throw std::runtime_error("digits_task: error reading " + path);
    if (images.empty()) throw std::runtime_error("digits_task: " + path + ": no rows (expected 65 integers per row)");

    detail::Rng rng(seed, 5);
    std::vector<std::size_t> train_rows, test_rows;
    for (int c = 0; c < classes; ++c) {
        std::vector<std::size_t> rows;
        for (std::size_t i = 0; i < labels.size(); ++i)
            if (labels[i] == c) rows.push_back(i);
        rng.shuffle(rows);
        const auto n_test = std::size_t(std::llround(test_fraction * double(rows.size())));
        test_rows.insert(test_rows.end(), rows.begin(), rows.begin() + std::ptrdiff_t(n_test));
        train_rows.insert(train_rows.end(), rows.begin() + std::ptrdiff_t(n_test), rows.end());
    }
    rng.shuffle(train_rows);
    rng.shuffle(test_rows);
    auto gather = [&](const std::vector<std::size_t>& rows) {
        Dataset data;
        for (const std::size_t i : rows) {
            data.inputs.push_back(images[i]);
            data.labels.push_back(labels[i]);
        }
        return data;
    };
    Task task;
    task.name = "digits";
    task.d_in = 1;
    task.length = length;
    task.classes = classes;
    task.train = gather(train_rows);
    task.test = gather(test_rows);
    // A fraction strictly between 0 and 1 that leaves a side empty (too few images) is an error.
    if ((test_fraction > 0 && task.test.inputs.empty()) || (test_fraction < 1 && task.train.inputs.empty()))
        throw std::runtime_error(path + ": " + std::to_string(labels.size()) + " images give an empty " +
                                 (task.test.inputs.empty() ? "test" : "training") + " set at test_fraction " +
                                 std::to_string(test_fraction));
    return task;
}

}  // namespace ssmdyn::toy
