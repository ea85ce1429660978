#!/usr/bin/env bash
# `ssmdyn sweep` on 1 process and on 2 MPI ranks (one thread each): the 100 x 100 (mu, s)
# grid, 10,000 systems, as in bench_sweep. Prints both times (the solve alone, from the
# JSON, and the whole run, mpirun's start included), the speed-ups, and whether the two
# CSV files are byte for byte the same (exit status 1 if not).
#
#   bash benchmarks/sweep_mpi.sh [build/bin/ssmdyn]
#
# Needs a build with MPI (Debian: libopenmpi-dev openmpi-bin; CMake option SSMDYN_MPI).
set -euo pipefail
ssmdyn=${1:-build/bin/ssmdyn}
launcher=$(command -v mpiexec || command -v mpirun) || { echo "no mpiexec/mpirun found" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # Open MPI refuses root otherwise
extra=()
"$launcher" --version 2>&1 | grep -q "Open MPI\|OpenRTE" && extra=(--oversubscribe)

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
args=(sweep --mu -2:2:100 --s -2:2:100 --tokens -0.5,-1.0,-0.2,-1.5 --t-end 50 --threads 1)

now() { date +%s.%N; }
t0=$(now); "$ssmdyn" "${args[@]}" --out "$dir/one.csv" > "$dir/one.json"; t1=$(now)
"$launcher" -n 2 "${extra[@]}" "$ssmdyn" "${args[@]}" --out "$dir/two.csv" > "$dir/two.json"; t2=$(now)

solve() { sed 's/.*"solve_seconds":\([0-9.e+-]*\).*/\1/' "$1"; }
s1=$(solve "$dir/one.json"); s2=$(solve "$dir/two.json")
awk -v s1="$s1" -v s2="$s2" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
  w1 = t1 - t0; w2 = t2 - t1
  printf "%-22s %10s %10s\n", "10,000 systems", "solve", "whole run"
  printf "%-22s %9.3fs %9.3fs\n", "1 process", s1, w1
  printf "%-22s %9.3fs %9.3fs\n", "2 MPI ranks", s2, w2
  printf "%-22s %9.2fx %9.2fx\n", "speed-up", s1 / s2, w1 / w2 }'
if cmp -s "$dir/one.csv" "$dir/two.csv"; then
  echo "CSV identical: yes"
else
  echo "CSV identical: NO" >&2
  exit 1
fi
