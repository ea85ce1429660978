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
#include <cstring>
#include <stdexcept>
#include <string>
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

/// A cell as it travels between ranks: numbers as doubles, regimes by name (to_string /
/// parse_regime), never by an enum's ordinal.
struct PackedCell {
    double mu, s, t_blowup;  // t_blowup: NaN when the run did not blow up
    char predicted[24], observed[24];
};

inline PackedCell pack(const PhaseCell& c) {
    PackedCell p{c.mu, c.s, c.t_blowup ? *c.t_blowup : std::numeric_limits<double>::quiet_NaN(), {}, {}};
    std::snprintf(p.predicted, sizeof p.predicted, "%s", to_string(c.predicted));
    std::snprintf(p.observed, sizeof p.observed, "%s", to_string(c.observed));
    return p;
}

inline PhaseCell unpack(const PackedCell& p) {
    PhaseCell c;
    c.mu = p.mu;
    c.s = p.s;
    c.predicted = parse_regime(std::string(p.predicted, strnlen(p.predicted, sizeof p.predicted)));
    c.observed = parse_regime(std::string(p.observed, strnlen(p.observed, sizeof p.observed)));
    if (!std::isnan(p.t_blowup)) c.t_blowup = p.t_blowup;
    return c;
}

/// phase_diagram over the ranks of `mpi`; the full grid on rank 0, nothing elsewhere.
inline std::vector<PhaseCell> mpi_phase_diagram(const MpiSession& mpi, const PhaseGrid& grid,
                                                const VectorX<double>& tokens, double t_end,
                                                const SimulateOptions<double>& options, int threads,
                                                const ProgressCallback& progress) {
    if (grid.mu.empty() || grid.s.empty()) throw std::invalid_argument("the mu and s grids must not be empty");
    const std::size_t total = grid.size(), ranks = static_cast<std::size_t>(mpi.size()),
                      rank = static_cast<std::size_t>(mpi.rank());
    std::vector<std::size_t> mine;
    for (std::size_t k = rank; k < total; k += ranks) mine.push_back(k);

    std::vector<PackedCell> packed(mine.size());
    try {
        parallel_for(
            mine.size(), [&](std::size_t i) { packed[i] = pack(phase_cell(grid.cell(mine[i]), tokens, t_end, options)); },
            threads, rank == 0 ? progress : ProgressCallback{});
    } catch (const std::exception& e) {
        mpi.abort(e.what());
    }

    constexpr int bytes = static_cast<int>(sizeof(PackedCell));
    std::vector<int> counts(ranks), displacements(ranks);
    for (std::size_t r = 0; r < ranks; ++r) {
        counts[r] = static_cast<int>((total + ranks - 1 - r) / ranks) * bytes;  // cells k ≡ r (mod ranks)
        displacements[r] = r == 0 ? 0 : displacements[r - 1] + counts[r - 1];
    }
    std::vector<PackedCell> all(rank == 0 ? total : 0);
    MPI_Gatherv(packed.data(), static_cast<int>(packed.size()) * bytes, MPI_BYTE, all.data(), counts.data(),
                displacements.data(), MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank != 0) return {};

    std::vector<PhaseCell> cells(total);
    for (std::size_t r = 0; r < ranks; ++r)
        for (std::size_t i = 0, k = r; k < total; ++i, k += ranks)
            cells[k] = unpack(all[static_cast<std::size_t>(displacements[r] / bytes) + i]);
    return cells;
}

}  // namespace ssmdyn::cli
