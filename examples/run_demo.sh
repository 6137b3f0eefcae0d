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
# Configure and build output goes to <build>/run_demo.log (shown in full only on failure); a
# progress line says which step runs and how far the build is.
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
fail() {
  tail -n 60 "$log" >&2
  echo "run_demo: $1 failed; the full log is $log" >&2
  exit 1
}
echo "run_demo: configuring $build (log: $log)"
cmake "${args[@]}" >"$log" 2>&1 || fail configure
# The first build compiles the CUDA kernels too (1-4 minutes): show make's percentage as it goes.
echo "run_demo: building qflash_demo with $jobs jobs (a first build takes minutes)"
start=$SECONDS
set +e
cmake --build "$build" --target qflash_demo --parallel "$jobs" 2>&1 | tee -a "$log" |
  while IFS= read -r line; do
    if [[ $line =~ ^\[\ *([0-9]+)%\] ]]; then
      printf '\rrun_demo: build %3s%% (%ds)' "${BASH_REMATCH[1]}" $((SECONDS - start)) >&2
    fi
  done
rc=${PIPESTATUS[0]}
set -e
printf '\n' >&2
((rc == 0)) || fail build
echo "run_demo: built in $((SECONDS - start)) s; running the demo (about 5-20 s on 2 cores)" >&2

demo=$(find "$build" -type f -name qflash_demo -perm -u+x -print -quit)
if [[ -z "$demo" ]]; then
  echo "run_demo: target qflash_demo built, but no executable named qflash_demo under $build" >&2
  exit 1
fi
cd "$build"
exec "$demo" "$@"
