#pragma once
// Shared by the libFuzzer harnesses: an in-memory file with a path, so that the code paths
// that open a file by name (SafetensorsFile(path), cli::load_config(path)) are fuzzed as
// the programs use them, without writing to the disk or leaving files behind.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace ssmdyn_fuzz {

/// A memfd whose contents are replaced by set(); path() names it (/proc/self/fd/N).
class MemoryFile {
public:
    explicit MemoryFile(const char* name) : m_fd(memfd_create(name, 0)) {
        if (m_fd < 0) {
            std::perror("memfd_create");
            std::abort();
        }
        m_path = "/proc/self/fd/" + std::to_string(m_fd);
    }
    MemoryFile(const MemoryFile&) = delete;
    MemoryFile& operator=(const MemoryFile&) = delete;
    ~MemoryFile() { close(m_fd); }

    void set(const std::uint8_t* data, std::size_t size) {
        if (ftruncate(m_fd, 0) != 0) std::abort();
        std::size_t done = 0;
        while (done < size) {
            const ssize_t n = pwrite(m_fd, data + done, size - done, static_cast<off_t>(done));
            if (n <= 0) std::abort();
            done += static_cast<std::size_t>(n);
        }
    }

    const std::string& path() const { return m_path; }

private:
    int m_fd;
    std::string m_path;
};

/// A finding that is not a crash by itself: print it and abort, so libFuzzer keeps the input.
[[noreturn]] inline void finding(const std::string& what) {
    std::fprintf(stderr, "ssmdyn fuzz finding: %s\n", what.c_str());
    std::abort();
}

}  // namespace ssmdyn_fuzz
