#!/usr/bin/env bash
# The GPU checklist in one command, for a CUDA machine (docs/testing.md):
#   1. ctest -L gpu (bit-exactness suite with 14,000 random configurations, launcher errors,
#      device quantize), with the device name;
#   2. compute-sanitizer memcheck over the GPU suite, racecheck and synccheck over a subset;
#   3. the CUDA examples and the demo with its cuda rows (JSON);
#   4. the benchmark against PyTorch's FP16 SDPA backends (and the released QFlash kernel if
#      .baselines/qflash_official holds a copy of it), same process.
# Usage: tests/device/run_on_gpu.sh BUILD_DIR [OUT_DIR] [PARTS], PARTS a comma list of
# tests,sanitizers,examples,bench (default: all). Prints a summary; exit 1 on a failure.
set -uo pipefail
build=${1:?usage: run_on_gpu.sh BUILD_DIR [OUT_DIR]}
out=${2:-${OUT:-/tmp/qflash-gpu}}
parts=",${3:-tests,sanitizers,examples,bench},"
want() { [[ $parts == *",$1,"* ]]; }
mkdir -p "$out"
summary=()
step() {  # step NAME COMMAND...: runs, logs to $out/NAME.log, records PASS/FAIL and the time
  local name=$1; shift
  local start=$SECONDS
  timeout "${QFLASH_STEP_TIMEOUT:-600}" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s %s (%ds, rc %d)' "$name" "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" $((SECONDS - start)) $rc)")
  tail -n 5 "$out/$name.log"
  return 0
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
gpu_tests="$build/tests/device/qflash_gpu_tests"
if want tests; then
  # The random equivalence fuzz at >= 10^4 configurations that reach the kernel (about a
  # quarter are rejected by calibrate's range checks): a few seconds on an H200.
  step ctest_gpu env QFLASH_RANDOM_CASES="${QFLASH_RANDOM_CASES:-14000}" \
    ctest --test-dir "$build" -L gpu --output-on-failure
fi
if want sanitizers; then
step memcheck env QFLASH_RANDOM_CASES=200 compute-sanitizer --tool memcheck --error-exitcode 1 \
  --print-limit 20 "$gpu_tests"
# racecheck tracks one launch at a time: one test thread, each group of cases on its own.
for group in "[paper]" "[edge],[paired]" "[swin],[random]" "[quantize],[errors],[graph]" "[fast_long]"; do
  step "racecheck_${group//[^a-z]/_}" env QFLASH_RANDOM_CASES=12 QFLASH_TEST_THREADS=1 \
    compute-sanitizer --tool racecheck --error-exitcode 1 --print-limit 20 "$gpu_tests" "$group"
done
step synccheck env QFLASH_RANDOM_CASES=40 QFLASH_TEST_THREADS=1 compute-sanitizer --tool synccheck \
  --error-exitcode 1 --print-limit 20 "$gpu_tests" "[swin],[random],[fast_long]"
fi
if want examples; then
step example_02 "$build/examples/qflash_example_02_flash_attention_gpu"
step example_03 "$build/examples/qflash_example_03_custom_variant"
step demo bash -c "'$build/examples/qflash_demo' --threads 16 && '$build/examples/qflash_demo' --json --threads 16 > '$out/demo.json'"
fi
if want bench; then
official=()
[ -d .baselines/qflash_official ] && official=(--official .baselines/qflash_official)
step bench env PYTHONUNBUFFERED=1 python3 bench/benchmark.py --lib "$build/bench/libqflash_capi.so" \
  --suite "${QFLASH_BENCH_SUITE:-paper}" "${official[@]}" --tsv "$out/bench.tsv"
fi
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
! grep -q FAIL "$out/summary.txt"
