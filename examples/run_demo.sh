#!/usr/bin/env bash
# Sets up this machine and runs the qflash demo: the README's first command.
#
#   bash examples/run_demo.sh [demo arguments...]
#
# Installs missing dependencies (.ci/install-deps: cmake, g++, Catch2, Eigen), configures the
# build directory (CUDA is enabled when nvcc is found), builds the target qflash_demo and runs it
# from the build directory, passing the arguments on. Environment (all optional):
#   QFLASH_BUILD_DIR            build directory (default: <repo>/build, shared with run_tests.sh)
#   QFLASH_CUDA_ARCHITECTURES   e.g. 90 (H100, the default) or "80;86;89;90"
#   QFLASH_ENABLE_CUDA          ON/OFF, to force CUDA on or off
#   QFLASH_JOBS                 parallel build jobs (default: number of cores)
# Configure and build output goes to <build>/run_demo.log and is shown only on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${QFLASH_BUILD_DIR:-$root/build}
jobs=${QFLASH_JOBS:-$(nproc 2>/dev/null || echo 2)}

bash "$root/.ci/install-deps"
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

args=(-S "$root" -B "$build")
[[ -f "$build/CMakeCache.txt" ]] || args+=(-DCMAKE_BUILD_TYPE=Release)
[[ -z "${QFLASH_CUDA_ARCHITECTURES+x}" ]] ||
  args+=("-DQFLASH_CUDA_ARCHITECTURES=$QFLASH_CUDA_ARCHITECTURES")
[[ -z "${QFLASH_ENABLE_CUDA+x}" ]] || args+=("-DQFLASH_ENABLE_CUDA=$QFLASH_ENABLE_CUDA")

mkdir -p "$build"
log="$build/run_demo.log"
echo "run_demo: building qflash_demo in $build (log: $log)"
if ! { cmake "${args[@]}" && cmake --build "$build" --target qflash_demo --parallel "$jobs"; } \
  >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "run_demo: configure or build failed; the full log is $log" >&2
  exit 1
fi

demo=$(find "$build" -type f -name qflash_demo -perm -u+x -print -quit)
if [[ -z "$demo" ]]; then
  echo "run_demo: target qflash_demo built, but no executable named qflash_demo under $build" >&2
  exit 1
fi
cd "$build"
exec "$demo" "$@"
