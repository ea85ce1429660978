#pragma once
/// \file parallel_for.hpp
/// Independent work items on every core: a parallel loop with OpenMP when the build has
/// it (an optional dependency: without it the loop is serial), exceptions carried back to
/// the caller, and a progress callback.

#include <cstddef>
#include <exception>
#include <functional>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ssmdyn {

/// Progress callback of the sweeps: progress(done, total), called once per finished item
/// from whichever thread finished it (one call at a time, `done` strictly increasing).
using ProgressCallback = std::function<void(std::size_t done, std::size_t total)>;

/// Calls f(i) for i = 0 … n−1 on up to `threads` threads (0: OpenMP's default; without
/// OpenMP, serially). f must be safe to call concurrently for different i; results should
/// be written to slot i of a pre-sized container, so the output does not depend on the
/// thread count. An exception thrown by f is rethrown here (the first one). `progress`,
/// if set, hears of every finished item (see ProgressCallback).
template <typename F>
void parallel_for(std::size_t n, F f, int threads = 0, const ProgressCallback& progress = {}) {
    std::exception_ptr error;
    std::size_t done = 0;
    auto run = [&](std::size_t i) {
        std::exception_ptr failure;
        try {
            f(i);
        } catch (...) {
            failure = std::current_exception();
        }
        // One critical section (a no-op without OpenMP) for the shared error and count;
        // nothing may throw out of it.
#ifdef _OPENMP
#pragma omp critical(ssmdyn_parallel_for)
#endif
        {
            if (failure && !error) error = failure;
            try {
                if (progress) progress(++done, n);
            } catch (...) {
                if (!error) error = std::current_exception();
            }
        }
    };
#ifdef _OPENMP
    const int team = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic) num_threads(team)
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) run(static_cast<std::size_t>(i));
#else
    (void)threads;
    for (std::size_t i = 0; i < n; ++i) run(i);
#endif
    if (error) std::rethrow_exception(error);
}

namespace detail {

/// Keeps Eigen from splitting its matrix products over OpenMP threads on its own while
/// this guard lives (it does when the build has OpenMP and a product is large): the
/// library decides where threads go, so that results do not depend on their number.
/// Lowers omp_get_max_threads() of the calling thread only, and restores it. Inside an
/// OpenMP parallel region Eigen runs serially anyway. (Eigen::setNbThreads(n > 1) called
/// by the program overrides this.)
class SerialEigenProducts {
public:
#ifdef _OPENMP
    SerialEigenProducts() : m_saved(omp_get_max_threads()) { omp_set_num_threads(1); }
    ~SerialEigenProducts() { omp_set_num_threads(m_saved); }

private:
    int m_saved;
#else
    SerialEigenProducts() {}
#endif
public:
    SerialEigenProducts(const SerialEigenProducts&) = delete;
    SerialEigenProducts& operator=(const SerialEigenProducts&) = delete;
};

}  // namespace detail
}  // namespace ssmdyn
