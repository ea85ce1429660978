#!/usr/bin/env bash
# The threaded tests under ThreadSanitizer: the `tsan` preset builds (in build-tsan, with
# clang) test_parallel_for, test_system, test_sensitivity, test_phase_diagram and
# tests/tsan/test_shared_system, and runs them; any data race fails the run.
#
# OpenMP stays on: clang's runtime (libomp) with its Archer tool, which libomp loads by
# itself when the program runs under TSan and which tells TSan about OpenMP's barriers,
# locks and critical sections. (GCC's libgomp is not instrumented: TSan would report
# races inside every parallel region.) Without OpenMP parallel_for is serial, so this
# is the only way its threads are checked. The preset's TSAN_OPTIONS has
# ignore_noninstrumented_modules=1, as Archer asks: libomp's own (uninstrumented) memory
# reuse between parallel regions is otherwise reported; races in our code still are.
#
# Exits 0 with a message, without testing, when clang, TSan or libomp is missing
# (Debian: clang libclang-rt-dev libomp-dev), or 1 with SSMDYN_PROBES_REQUIRED=1 (CI).
# Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "tsan: SKIPPED, $1 (Debian: apt-get install clang libclang-rt-dev libomp-dev)"
  [ "${SSMDYN_PROBES_REQUIRED:-0}" != 1 ] || exit 1  # CI: a skip is a failure
  exit 0
}
command -v clang++ >/dev/null 2>&1 || skip "clang++ not found"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <omp.h>\nint main() { int n = 0;\n#pragma omp parallel num_threads(2)\n{\n#pragma omp atomic\n++n; }\nreturn n == 2 ? 0 : 1; }\n' > "$probe/probe.cpp"
clang++ -fsanitize=thread -fopenmp "$probe/probe.cpp" -o "$probe/probe" >/dev/null 2>&1 ||
  skip "clang++ cannot build with -fsanitize=thread -fopenmp"
# Archer must be found, or TSan sees OpenMP's synchronisation as races.
archer=$(ARCHER_OPTIONS=verbose=1 "$probe/probe" 2>&1 || true)
[[ "$archer" == *"Archer detected"* ]] ||
  skip "libomp runs without its Archer tool (libarcher.so)"

cmake --preset tsan
cmake --build --preset tsan
ctest --preset tsan "$@"
