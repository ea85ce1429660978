#pragma once
/// \file mpi_sweep.hpp
/// `ssmdyn sweep` across MPI ranks (build option SSMDYN_MPI): the cells are dealt out
/// round-robin (cell k to rank k mod size, which balances cheap and expensive regions of
/// the grid), each rank integrates its own with OpenMP threads, and rank 0 gathers them
/// back into grid order. Every cell is computed exactly as in a single process, so the
/// output is identical. MPI starts only when the program was launched by mpirun/mpiexec
/// (a singleton MPI start costs ~0.4 s and buys nothing).

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <limits>
#include <vector>

#include <mpi.h>

#include <ssmdyn/theory/phase_diagram.hpp>

namespace ssmdyn::cli {

/// True when an MPI launcher started this process (Open MPI, MPICH/Hydra, PMIx, Slurm).
inline bool launched_by_mpi() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
        if (std::getenv(name)) return true;
    return false;
}

/// MPI for the lifetime of a sweep: started if launched by MPI, finished on destruction.
class MpiSession {
public:
    MpiSession() {
        if (!launched_by_mpi()) return;
        int provided = 0;
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);  // OpenMP inside, MPI on the main thread
        m_active = true;
        MPI_Comm_rank(MPI_COMM_WORLD, &m_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &m_size);
    }
    ~MpiSession() {
        if (m_active) MPI_Finalize();
    }
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;

    int rank() const { return m_rank; }
    int size() const { return m_size; }

    /// Ends every rank at once; for a failure on one rank, where the others would wait
    /// forever in the gather.
    [[noreturn]] void abort(const char* what) const {
        std::fprintf(stderr, "ssmdyn: rank %d: %s\n", m_rank, what);
        if (m_active) MPI_Abort(MPI_COMM_WORLD, 1);
        std::exit(1);
    }

private:
    bool m_active = false;
    int m_rank = 0, m_size = 1;
};

/// phase_diagram over the ranks of `mpi`; the full grid on rank 0, nothing elsewhere.
inline std::vector<PhaseCell> mpi_phase_diagram(const MpiSession& mpi, const std::vector<double>& mu,
                                                const std::vector<double>& s, const VectorX<double>& tokens,
                                                double a, double b, double t_end, const SimulateOptions<double>& options,
                                                int threads, const ProgressCallback& progress) {
    const std::size_t total = mu.size() * s.size(), ranks = static_cast<std::size_t>(mpi.size()),
                      rank = static_cast<std::size_t>(mpi.rank());
    std::vector<std::size_t> mine;
    for (std::size_t k = rank; k < total; k += ranks) mine.push_back(k);

    // Each cell travels as 5 doubles: mu, s, predicted, observed, t_blowup (NaN: none).
    constexpr int fields = 5;
    std::vector<double> packed(mine.size() * fields);
    try {
        parallel_for(
            mine.size(),
            [&](std::size_t i) {
                const std::size_t k = mine[i];
                const PhaseCell c = phase_cell(mu[k / s.size()], s[k % s.size()], tokens, a, b, t_end, options);
                double* out = &packed[i * fields];
                out[0] = c.mu;
                out[1] = c.s;
                out[2] = static_cast<double>(c.predicted);
                out[3] = static_cast<double>(c.observed);
                out[4] = c.t_blowup ? *c.t_blowup : std::numeric_limits<double>::quiet_NaN();
            },
            threads, rank == 0 ? progress : ProgressCallback{});
    } catch (const std::exception& e) {
        mpi.abort(e.what());
    }

    std::vector<int> counts(ranks), displacements(ranks);
    for (std::size_t r = 0; r < ranks; ++r) {
        counts[r] = static_cast<int>(((total + ranks - 1 - r) / ranks) * fields);  // cells k ≡ r (mod ranks)
        displacements[r] = r == 0 ? 0 : displacements[r - 1] + counts[r - 1];
    }
    std::vector<double> all(rank == 0 ? total * fields : 0);
    MPI_Gatherv(packed.data(), static_cast<int>(packed.size()), MPI_DOUBLE, all.data(), counts.data(),
                displacements.data(), MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank != 0) return {};

    std::vector<PhaseCell> cells(total);
    for (std::size_t r = 0; r < ranks; ++r)
        for (std::size_t i = 0, k = r; k < total; ++i, k += ranks) {
            const double* in = &all[static_cast<std::size_t>(displacements[r]) + i * fields];
            PhaseCell& c = cells[k];
            c.mu = in[0];
            c.s = in[1];
            c.predicted = static_cast<Regime>(static_cast<int>(in[2]));
            c.observed = static_cast<Regime>(static_cast<int>(in[3]));
            if (!std::isnan(in[4])) c.t_blowup = in[4];
        }
    return cells;
}

}  // namespace ssmdyn::cli
