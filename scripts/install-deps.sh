#!/usr/bin/env bash
# Installs the Debian packages ssmdyn's build, tests, tools and figures need; skips what
# is already installed, so it is cheap to run again. Used by the README and by .ci/run.
set -euo pipefail

# OpenMPI: `mpirun -np P ssmdyn sweep` (optional, tested when present); SciPy: the
# benchmarks/compare_scipy.py comparison (optional, smoke-tested when present).
packages=(cmake make g++ libeigen3-dev libboost-dev catch2 libbenchmark-dev
          nlohmann-json3-dev gnuplot-nox libopenmpi-dev openmpi-bin python3-scipy)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
