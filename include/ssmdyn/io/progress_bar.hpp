#pragma once
/// \file progress_bar.hpp
/// A progress bar for long sweeps, drawn on stderr only when stderr is a terminal (so
/// pipes, files and CI logs get nothing). Use it as the sweeps' ProgressCallback:
///
///     ssmdyn::ProgressBar bar("sweep");
///     auto cells = ssmdyn::phase_diagram(grid, tokens, t_end, {}, 0, std::ref(bar));

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>

#include <unistd.h>

namespace ssmdyn {

/// A ProgressCallback (core/parallel_for.hpp) that draws `label [####....]  42% 420/1000 3.1s`.
class ProgressBar {
public:
    /// Draws to `out` if `enabled`; by default to stderr when it is a terminal.
    explicit ProgressBar(std::string label, std::FILE* out = stderr)
        : ProgressBar(std::move(label), out, out == stderr && isatty(fileno(stderr))) {}
    ProgressBar(std::string label, std::FILE* out, bool enabled)
        : m_label(std::move(label)), m_out(out), m_enabled(enabled), m_start(clock::now()) {}
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    /// Redraws at most ten times a second, and always for the last item, after which the
    /// line is ended.
    void operator()(std::size_t done, std::size_t total) {
        if (!m_enabled || total == 0) return;
        const auto now = clock::now();
        if (done < total && now - m_last_draw < std::chrono::milliseconds(100)) return;
        m_last_draw = now;
        constexpr int width = 30;
        const double fraction = double(done) / double(total);
        const int filled = static_cast<int>(fraction * width);
        const double elapsed = std::chrono::duration<double>(now - m_start).count();
        std::fprintf(m_out, "\r%s [%s%s] %3d%% %zu/%zu %.1fs", m_label.c_str(), std::string(filled, '#').c_str(),
                     std::string(width - filled, '.').c_str(), static_cast<int>(100 * fraction), done, total,
                     elapsed);
        if (done >= total) std::fputc('\n', m_out);
        std::fflush(m_out);
    }

    bool enabled() const { return m_enabled; }

private:
    using clock = std::chrono::steady_clock;
    std::string m_label;
    std::FILE* m_out;
    bool m_enabled;
    clock::time_point m_start, m_last_draw{};
};

}  // namespace ssmdyn
