#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang (in build-fuzz, nothing else in
# it) and runs each for SECONDS (default 60) under AddressSanitizer and
# UndefinedBehaviorSanitizer, one after the other (all at once with
# SSMDYN_FUZZ_PARALLEL=1, as CI does), on a copy of its seed corpus
# (tests/fuzz/corpus/<harness>/, never modified here).
#
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]
#
# Exits 1 on any finding (a crash, a sanitizer report, a failed assertion, an undocumented
# exception, a timeout of 10 s on one input, more than 2 GB of memory) and prints the
# input that caused it (kept in build-fuzz/findings/) with the end of the harness's log.
# Reproduce one with: build-fuzz/fuzz/<harness> <input>. Exits 0 with a message, without
# fuzzing, when clang or libFuzzer is missing (Debian: clang libclang-rt-dev), or 1 with
# SSMDYN_PROBES_REQUIRED=1 (CI).
#
# Environment: SSMDYN_FUZZ_CXX (default clang++), SSMDYN_FUZZ_BUILD (default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(fuzz_safetensors fuzz_json fuzz_cli_config)
case "$seconds" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [HARNESS...]" >&2; exit 2 ;; esac
cxx=${SSMDYN_FUZZ_CXX:-clang++}
build=${SSMDYN_FUZZ_BUILD:-build-fuzz}

skip() {
  echo "fuzz: SKIPPED, $1 (Debian: apt-get install clang libclang-rt-dev)"
  [ "${SSMDYN_PROBES_REQUIRED:-0}" != 1 ] || exit 1  # CI: a skip is a failure
  exit 0
}
command -v "$cxx" >/dev/null 2>&1 || skip "$cxx not found"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/probe.cpp"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" >/dev/null 2>&1 ||
  skip "$cxx cannot build with -fsanitize=fuzzer,address,undefined (libFuzzer missing)"

start=$SECONDS
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE= -DSSMDYN_BUILD_FUZZERS=ON \
  -DSSMDYN_BUILD_TESTS=OFF -DSSMDYN_BUILD_EXAMPLES=OFF -DSSMDYN_BUILD_BENCHMARKS=OFF \
  -DSSMDYN_INSTALL=OFF -DSSMDYN_NATIVE=OFF -DSSMDYN_MPI=OFF > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
rm -f "$build.configure.log"
cmake --build "$build" -j2 --target "${harnesses[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

# Longest input libFuzzer makes, per harness: room for a small Mamba layer, and configs
# small enough that one capped integration stays well under the 10 s timeout.
max_len() {
  case "$1" in
    fuzz_safetensors) echo 16384 ;;
    fuzz_json) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# One harness on a fresh copy of its seeds; its exit code goes to $build/<harness>.rc.
fuzz_one() {
  local h=$1 corpus="$build/corpus/$1" findings="$build/findings/$1" rc=0
  rm -rf "$corpus" "$findings"
  mkdir -p "$corpus" "$findings"
  cp tests/fuzz/corpus/"$h"/* "$corpus/"
  "$build/fuzz/$h" "$corpus" -dict="tests/fuzz/$h.dict" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len="$(max_len "$h")" -artifact_prefix="$findings/" -print_final_stats=1 \
    > "$build/$h.log" 2>&1 || rc=$?
  echo "$rc" > "$build/$h.rc"
}

for h in "${harnesses[@]}"; do
  [ -d "tests/fuzz/corpus/$h" ] || { echo "fuzz: no corpus tests/fuzz/corpus/$h" >&2; exit 2; }
done
if [ "${SSMDYN_FUZZ_PARALLEL:-0}" = 1 ]; then
  # All at once: the same ${seconds} s of wall time each, sharing the cores.
  echo "== ${harnesses[*]}: ${seconds} s each, at the same time"
  pids=()
  for h in "${harnesses[@]}"; do
    fuzz_one "$h" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
else
  for h in "${harnesses[@]}"; do
    echo "== $h: ${seconds} s"
    fuzz_one "$h"
  done
fi

failed=()
for h in "${harnesses[@]}"; do
  log="$build/$h.log"
  findings="$build/findings/$h"
  rc=$(cat "$build/$h.rc" 2>/dev/null || echo 1)
  echo "$h: $(grep -E "^stat::number_of_executed_units" "$log" | sed 's/.*: //') inputs run, exit $rc"
  if [ "$rc" -ne 0 ] || ls "$findings"/* >/dev/null 2>&1; then
    failed+=("$h")
    echo "fuzz: FINDING in $h (exit $rc), from $log:" >&2
    # The report and its stack: from the first error line to the sanitizer's SUMMARY.
    awk '/==ERROR|ERROR: libFuzzer|ssmdyn fuzz finding|runtime error:|terminate called|ALARM|out-of-memory|deadly signal/ {p = 1}
         p && n < 80 {print; n++}
         p && /^SUMMARY:/ {exit}' "$log" >&2
    grep -E "^(MS:|artifact_prefix|Base64:)" "$log" | head -3 >&2 || true
    for input in "$findings"/*; do
      [ -e "$input" ] || continue
      echo "fuzz: input: $input ($(stat -c %s "$input") bytes); reproduce: $build/fuzz/$h $input" >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no findings (${harnesses[*]}, ${seconds} s each), $((SECONDS - start)) s in all"
