// train_toy: the paper's two empirical claims at toy scale. Trains small selective-SSM
// classifiers (examples/train_toy/network.hpp) on three tasks, for every
// parameterisation of S_B, S_C (free; μ ⪰ 0, the first refinement; its controls μ ⪯ 0
// and mixed) with and without the importance reordering (the second refinement), over
// several seeds, and writes what happened:
//
//   DIR/results.csv  task,variant,reorder,seed,test_accuracy,initial_loss,final_loss,observed_regime
//   DIR/summary.csv  task,variant,reorder,runs,accuracy_mean,accuracy_std,observed_regimes,
//                    predicted_regimes (classify's verdict on the trained layer)
//   DIR/curves.csv   task,variant,reorder,seed,epoch,train_loss,test_accuracy,skipped
//   DIR/shares.csv   task,variant,reorder,epoch,position,share (mean over seeds)
//   DIR/*.png        learning curves and gradient shares per task (with gnuplot)
//
// usage: train_toy [--smoke] [--out DIR] [--seeds S] [--epochs E] [--threads P] [--digits FILE]
//
// The digits task needs the CSV that scripts/convert_digits.py writes from Debian's
// python3-sklearn (see the README); without it that task is skipped with a message.
// Deterministic for the seeds: the same command writes the same results.csv.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ssmdyn/core/parallel_for.hpp>
#include <ssmdyn/io/csv.hpp>
#include <ssmdyn/io/gnuplot.hpp>
#include <ssmdyn/theory/regime.hpp>

#include "network.hpp"
#include "tasks.hpp"
#include "train.hpp"

namespace {

using namespace ssmdyn::toy;
namespace fs = std::filesystem;

struct Options {
    bool smoke = false;
    fs::path out = "train_toy-out";
    int seeds = 5;
    int epochs = 0;  // 0: the configuration's own
    int threads = 0;
    std::string digits = default_digits_path();
};

int whole(const std::string& flag, const std::string& text, int lo, int hi) {
    std::size_t used = 0;
    int v = 0;
    try {
        v = std::stoi(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != text.size() || text.empty() || v < lo || v > hi)
        throw std::invalid_argument(flag + ": expected a whole number from " + std::to_string(lo) + " to " +
                                    std::to_string(hi) + ", got '" + text + "'");
    return v;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(a + ": needs a value");
            return argv[++i];
        };
        if (a == "--smoke")
            o.smoke = true;
        else if (a == "--out")
            o.out = value();
        else if (a == "--seeds")
            o.seeds = whole(a, value(), 1, 1000);
        else if (a == "--epochs")
            o.epochs = whole(a, value(), 1, 100000);
        else if (a == "--threads")
            o.threads = whole(a, value(), 0, 4096);
        else if (a == "--digits")
            o.digits = value();
        else if (a == "--help" || a == "-h")
            throw std::runtime_error("help");
        else
            throw std::invalid_argument("unknown argument '" + a + "'");
    }
    if (o.smoke) o.seeds = std::min(o.seeds, 1);
    return o;
}

/// One training run of the table.
struct Run {
    const Task* task = nullptr;
    Variant variant = Variant::Free;
    bool reorder = false;
    int seed = 0;
    TrainResult result;
    LayerRegime regime;
    std::string failure;  ///< why the run failed (empty: it did not)
};

std::string csv_number(double v) {
    std::ostringstream s;
    s << std::setprecision(10) << v;
    return s.str();
}

/// Writes the gnuplot figures of one task: test accuracy per epoch and gradient shares per
/// position at the last epoch, mean over the seeds, one line per variant and reordering.
void plot_task(const fs::path& dir, const std::string& task, const std::vector<std::string>& series) {
    const fs::path script = dir / ("plot_" + task + ".gp");
    {
        std::ofstream gp(script);
        gp << "set terminal pngcairo size 1200,450 noenhanced\nset output '" << task << ".png'\n"
           << "set datafile separator ','\nset key outside right\nset grid\n"
           << "set multiplot layout 1,2 title '" << task << "'\n"
           << "set xlabel 'epoch'\nset ylabel 'test accuracy (mean over seeds)'\nplot ";
        for (std::size_t i = 0; i < series.size(); ++i)
            gp << (i ? ", " : "") << "'curve_" << task << "_" << series[i]
               << ".csv' using 1:2 with lines lw 2 title '" << series[i] << "'";
        gp << "\nset xlabel 'token position in scan order'\nset ylabel 'share of |dloss/dx_l| (last epoch)'\nplot ";
        for (std::size_t i = 0; i < series.size(); ++i)
            gp << (i ? ", " : "") << "'share_" << task << "_" << series[i]
               << ".csv' using 1:2 with lines lw 2 title '" << series[i] << "'";
        gp << "\nunset multiplot\n";
    }
    if (!ssmdyn::run_gnuplot(script)) std::cerr << "train_toy: note: no figure for " << task << " (gnuplot missing or failed)\n";
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    try {
        o = parse(argc, argv);
    } catch (const std::runtime_error& e) {
        const bool help = std::string(e.what()) == "help";
        (help ? std::cout : std::cerr)
            << (help ? "" : std::string("train_toy: ") + e.what() + "\n")
            << "usage: train_toy [--smoke] [--out DIR] [--seeds S] [--epochs E] [--threads P] [--digits FILE]\n";
        return help ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "train_toy: " << e.what()
                  << "\nusage: train_toy [--smoke] [--out DIR] [--seeds S] [--epochs E] [--threads P] [--digits FILE]\n";
        return 2;
    }
    const auto start = std::chrono::steady_clock::now();

    // The tasks (a smoke run: one small long-range task) and the networks' sizes.
    std::vector<Task> tasks;
    double regime_horizon = 100;  // t_end of the run that shows the trained layer's regime
    NetworkConfig base;
    TrainOptions train_options;
    if (o.smoke) {
        // Small enough for the sanitizer builds of CI (about 15x slower than release).
        tasks.push_back(long_range_task(1, 48, 16, 8));
        base.D = 4;
        base.N = 2;
        base.layers = 2;
        train_options.epochs = 4;
        train_options.batch = 16;
        regime_horizon = 10;
    } else {
        tasks.push_back(long_range_task(1, 500, 250));
        tasks.push_back(needles_task(1, 500, 250));
        train_options.epochs = 20;
        try {
            if (std::optional<Task> digits = digits_task(o.digits, 1))
                tasks.push_back(std::move(*digits));
            else
                std::cerr << "train_toy: note: no digits file at '" << o.digits
                          << "': the digits task is skipped (make it with: /usr/bin/python3 scripts/convert_digits.py; "
                             "it needs Debian's python3-sklearn)\n";
        } catch (const std::exception& e) {
            std::cerr << "train_toy: " << e.what() << '\n';
            return 2;
        }
    }
    if (o.epochs > 0) train_options.epochs = o.epochs;

    std::vector<Run> runs;
    for (const Task& task : tasks)
        for (Variant v : {Variant::Free, Variant::Psd, Variant::Nsd, Variant::Mixed})
            for (bool reorder : {false, true})
                for (int seed = 0; seed < o.seeds; ++seed) runs.push_back({&task, v, reorder, seed, {}, {}, {}});

    std::error_code ec;
    fs::create_directories(o.out, ec);
    std::ofstream results(o.out / "results.csv");
    if (!results) {
        std::cerr << "train_toy: cannot write " << (o.out / "results.csv") << '\n';
        return 1;
    }

    // All the hardware's threads by default; never more (they would only compete).
    const int hardware = std::max(1, int(std::thread::hardware_concurrency()));
    const int threads = o.threads > 0 ? std::min(o.threads, hardware) : hardware;
    std::cerr << "train_toy: " << runs.size() << " training runs on " << threads << " threads\n";
    ssmdyn::parallel_for(
        runs.size(),
        [&](std::size_t i) {
            Run& r = runs[i];
            NetworkConfig c = base;
            c.d_in = r.task->d_in;
            c.classes = r.task->classes;
            c.variant = r.variant;
            c.reorder = r.reorder;
            // Initialisation and batch order from the seed (the data of a task are fixed). A
            // run whose parameters stop being finite fails alone, reported, not the table.
            try {
                r.result = train(c, *r.task, train_options, std::uint64_t(1000 + r.seed));
                r.regime = trained_regime(c, r.result.tensors, r.task->test.inputs.front(), regime_horizon);
            } catch (const std::exception& e) {
                r.failure = e.what();
            }
        },
        threads, [&](std::size_t done, std::size_t total) {
            if (done % 8 == 0 || done == total) std::cerr << "  " << done << "/" << total << " runs\n";
        });

    int failed = 0;
    for (const Run& r : runs)
        if (!r.failure.empty()) {
            ++failed;
            std::cerr << "train_toy: " << r.task->name << ' ' << to_string(r.variant) << " reorder " << r.reorder
                      << " seed " << r.seed << " failed: " << r.failure << '\n';
        }
    if (failed > 0) {
        std::cerr << "train_toy: " << failed << " of " << runs.size() << " runs failed; no table\n";
        return 1;
    }
    results << "task,variant,reorder,seed,test_accuracy,initial_loss,final_loss,observed_regime\n";
    std::ofstream curves(o.out / "curves.csv"), shares(o.out / "shares.csv"), summary(o.out / "summary.csv");
    curves << "task,variant,reorder,seed,epoch,train_loss,test_accuracy,skipped\n";
    shares << "task,variant,reorder,epoch,position,share\n";
    summary << "task,variant,reorder,runs,accuracy_mean,accuracy_std,observed_regimes,predicted_regimes\n";
    for (const Run& r : runs) {
        results << r.task->name << ',' << to_string(r.variant) << ',' << r.reorder << ',' << r.seed << ','
                << csv_number(r.result.test_accuracy) << ',' << csv_number(r.result.initial_loss) << ','
                << csv_number(r.result.final_loss) << ',' << ssmdyn::to_string(r.regime.observed) << '\n';
        for (const EpochRecord& e : r.result.curve)
            curves << r.task->name << ',' << to_string(r.variant) << ',' << r.reorder << ',' << r.seed << ',' << e.epoch
                   << ',' << csv_number(e.train_loss) << ',' << csv_number(e.test_accuracy) << ',' << e.skipped << '\n';
    }

    // Per task and configuration: mean ± std over the seeds, the regimes seen, the mean
    // curve and the mean gradient shares.
    std::cout << std::left << std::setw(12) << "task" << std::setw(8) << "variant" << std::setw(9) << "reorder"
              << std::setw(20) << "test accuracy" << "regimes of the trained layer, observed (predicted)\n";
    for (const Task& task : tasks) {
        std::vector<std::string> series;
        for (Variant v : {Variant::Free, Variant::Psd, Variant::Nsd, Variant::Mixed})
            for (bool reorder : {false, true}) {
                std::vector<const Run*> group;
                for (const Run& r : runs)
                    if (r.task == &task && r.variant == v && r.reorder == reorder) group.push_back(&r);
                double mean = 0, var = 0;
                for (const Run* r : group) mean += r->result.test_accuracy;
                mean /= double(group.size());
                for (const Run* r : group) var += (r->result.test_accuracy - mean) * (r->result.test_accuracy - mean);
                const double sd = group.size() > 1 ? std::sqrt(var / double(group.size() - 1)) : 0.0;
                const auto counts = [&group](bool predicted) {
                    std::map<std::string, int> regimes;
                    for (const Run* r : group)
                        ++regimes[ssmdyn::to_string(predicted ? r->regime.predicted : r->regime.observed)];
                    std::string text;
                    for (const auto& [name, n] : regimes) text += (text.empty() ? "" : " ") + name + ":" + std::to_string(n);
                    return text;
                };
                const std::string seen = counts(false), predicted = counts(true);
                summary << task.name << ',' << to_string(v) << ',' << reorder << ',' << group.size() << ','
                        << csv_number(mean) << ',' << csv_number(sd) << ',' << seen << ',' << predicted << '\n';
                std::ostringstream acc;
                acc << std::fixed << std::setprecision(3) << mean << " ± " << sd;
                std::cout << std::setw(12) << task.name << std::setw(8) << to_string(v) << std::setw(9) << reorder
                          << std::setw(21) << acc.str() << seen << " (predicted: " << predicted << ")\n";

                const std::string name = std::string(to_string(v)) + (reorder ? "_reorder" : "");
                series.push_back(name);
                std::ofstream curve(o.out / ("curve_" + task.name + "_" + name + ".csv"));
                const std::size_t epochs = group.front()->result.curve.size();
                for (std::size_t e = 0; e < epochs; ++e) {
                    double a = 0;
                    Eigen::VectorXd s = Eigen::VectorXd::Zero(task.length);
                    for (const Run* r : group) {
                        a += r->result.curve[e].test_accuracy;
                        s += r->result.curve[e].shares;
                    }
                    a /= double(group.size());
                    s /= double(group.size());
                    curve << (e + 1) << ',' << csv_number(a) << '\n';
                    for (Eigen::Index l = 0; l < s.size(); ++l)
                        shares << task.name << ',' << to_string(v) << ',' << reorder << ',' << (e + 1) << ','
                               << (l + 1) << ',' << csv_number(s(l)) << '\n';
                    if (e + 1 == epochs) {
                        std::ofstream share(o.out / ("share_" + task.name + "_" + name + ".csv"));
                        for (Eigen::Index l = 0; l < s.size(); ++l) share << (l + 1) << ',' << csv_number(s(l)) << '\n';
                    }
                }
            }
        plot_task(o.out, task.name, series);
    }
    results.close();
    if (!results || !curves || !shares || !summary) {
        std::cerr << "train_toy: a write to " << o.out << " failed\n";
        return 1;
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::cout << "\n" << runs.size() << " runs in " << std::fixed << std::setprecision(1) << took.count() << " s on "
              << threads << " threads; tables and figures in " << o.out.string() << "/\n";
    return 0;
}
