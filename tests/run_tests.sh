#!/usr/bin/env bash
# Builds qflash and runs its test suites: the README's test command, and the one CI runs.
#
#   bash tests/run_tests.sh [ctest arguments...]     e.g.  -L host   -L gpu   -R exp2   -LE package
#
# Installs missing dependencies (.ci/install-deps), configures, builds everything, then runs
# `ctest --output-on-failure` and prints a one-line summary. Environment (all optional):
#   QFLASH_BUILD_DIR            build directory (default: <repo>/build)
#   QFLASH_WERROR               ON/OFF: warnings in qflash's own targets are errors
#   QFLASH_SANITIZE             e.g. address,undefined: host test targets only
#   QFLASH_CUDA_ARCHITECTURES   e.g. 90 or "80;86;89;90" (CUDA is enabled when nvcc is found)
#   QFLASH_ENABLE_CUDA          ON/OFF, to force CUDA on or off
#   QFLASH_BUILD_TYPE           CMake build type of a new build directory (default: Release)
#   QFLASH_CMAKE_ARGS           further configure arguments, split on spaces
#   QFLASH_JOBS                 parallel build and test jobs (default: number of cores)
# Without a GPU the gpu-labelled tests report "Skipped"; on a GPU machine `-L gpu` runs them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${QFLASH_BUILD_DIR:-$root/build}
jobs=${QFLASH_JOBS:-$(nproc 2>/dev/null || echo 2)}

bash "$root/.ci/install-deps"
# The CUDA toolkit's usual home, when it is not on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

args=(-S "$root" -B "$build")
[[ -f "$build/CMakeCache.txt" && -z "${QFLASH_BUILD_TYPE:-}" ]] ||
  args+=("-DCMAKE_BUILD_TYPE=${QFLASH_BUILD_TYPE:-Release}")
[[ -z "${QFLASH_WERROR+x}" ]] || args+=("-DQFLASH_WERROR=$QFLASH_WERROR")
[[ -z "${QFLASH_SANITIZE+x}" ]] || args+=("-DQFLASH_SANITIZE=$QFLASH_SANITIZE")
[[ -z "${QFLASH_CUDA_ARCHITECTURES+x}" ]] ||
  args+=("-DQFLASH_CUDA_ARCHITECTURES=$QFLASH_CUDA_ARCHITECTURES")
[[ -z "${QFLASH_ENABLE_CUDA+x}" ]] || args+=("-DQFLASH_ENABLE_CUDA=$QFLASH_ENABLE_CUDA")
# shellcheck disable=SC2206  # split on purpose
[[ -z "${QFLASH_CMAKE_ARGS:-}" ]] || args+=($QFLASH_CMAKE_ARGS)

phase() { printf '\n== %s\n' "$*"; }
seconds() { echo $((SECONDS - $1)); }

phase "configure ($build)"
t=$SECONDS
cmake "${args[@]}" || { echo "qflash tests: configure failed"; exit 1; }
configure_s=$(seconds $t)

phase "build (-j$jobs)"
t=$SECONDS
cmake --build "$build" --parallel "$jobs" || { echo "qflash tests: build failed"; exit 1; }
build_s=$(seconds $t)

phase "test: ctest --output-on-failure $*"
t=$SECONDS
log="$build/run_tests.log"
set +e
(cd "$build" && ctest --output-on-failure --no-tests=error -j "$jobs" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
test_s=$(seconds $t)

# ctest: "NN% tests passed, F tests failed out of T" (CMake 4: "100% tests passed out of T"
# when none failed); skipped tests are listed as "(Skipped)".
total=$(sed -n 's/.*tests \(failed\|passed\) out of \([0-9][0-9]*\).*/\2/p' "$log" | tail -1)
failed=$(sed -n 's/.* \([0-9][0-9]*\) tests failed out of .*/\1/p' "$log" | tail -1)
skipped=$(grep -c '^[[:space:]]*[0-9][0-9]* - .*(Skipped)$' "$log" || true)
total=${total:-0}
failed=${failed:-0}
if ((rc != 0 && failed == 0)); then failed=1; fi  # ctest itself failed (no tests, bad args)
passed=$((total - failed - skipped))
((passed >= 0)) || passed=0

echo
echo "qflash tests in $build: configure ${configure_s}s, build ${build_s}s, test ${test_s}s"
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
