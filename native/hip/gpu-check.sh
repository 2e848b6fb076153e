#!/usr/bin/env bash
# One script for a GPU machine that has hipcc or nvcc but no .NET SDK and no network: builds libarwkv_hip.so, runs
# every HIP test of Arwkv.Core.Tests on the GPU and times the kernels, through a self-contained publish of
# bench/Arwkv.GpuCheck that travels with the tree, and writes one JSON file.
#
#   native/hip/gpu-check.sh --publish     on a machine with the .NET SDK: publish the runner into .device-carry/gpu-check
#                                         (self-contained linux-x64, carried to the GPU machine with the tree)
#   native/hip/gpu-check.sh [--out F]     on the GPU machine: build with nvcc (if found) or hipcc, run, write F
#                                         (default $OUT/gpu-check.json when $OUT is set, else native/hip/build/gpu-check.json)
#   native/hip/gpu-check.sh --cpu         the dry run on any machine: the HIP-on-CPU executor build, toy timing shapes
#                                         (executor timings mean nothing; the JSON says so)
#
# Environment: ARWKV_CUDA_ARCH (default: from nvidia-smi, else sm_90), ARWKV_HIP_TARGETS (hipcc), ARWKV_HIP_BLAS,
# ARWKV_GPU_CHECK_TIMEOUT (seconds for the runner, default 360: the whole check must stay under 7 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNNER_DIR=$ROOT/.device-carry/gpu-check
mode=gpu
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --publish) mode=publish ;;
    --cpu) mode=cpu ;;
    --out) out=${2:?--out needs a file}; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument '$1' (use --publish, --cpu or --out FILE)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = publish ]; then
  command -v dotnet >/dev/null 2>&1 || { echo "gpu-check.sh --publish needs the .NET SDK (./build.sh installs it)" >&2; exit 1; }
  rm -rf "$RUNNER_DIR"
  dotnet publish bench/Arwkv.GpuCheck -c Release -nologo -v q -p:PublishGpuCheck=true --self-contained true -o "$RUNNER_DIR"
  echo "gpu-check.sh: runner published to $RUNNER_DIR ($(du -sm "$RUNNER_DIR" | cut -f1) MiB)"
  exit 0
fi

started=$(date +%s)
[ -n "$out" ] || { if [ -n "${OUT:-}" ]; then out=$OUT/gpu-check.json; else out=$ROOT/native/hip/build/gpu-check.json; fi; }
mkdir -p "$(dirname "$out")"
runner=$RUNNER_DIR/arwkv-gpu-check
if [ ! -x "$runner" ]; then
  if command -v dotnet >/dev/null 2>&1; then "$0" --publish; else
    echo "gpu-check.sh: $runner is missing and there is no .NET SDK here: run native/hip/gpu-check.sh --publish on a" >&2
    echo "  machine with one and carry .device-carry/gpu-check with the tree" >&2
    exit 1
  fi
fi

runner_args=(--out "$out")
case "$mode" in
  cpu)
    native/hip/build.sh --cpu
    export ARWKV_HIP_LIBRARY=$ROOT/native/hip/build/cpu-w64/libarwkv_hip.so ARWKV_HIP_ALLOW_CPU_EXECUTOR=1
    runner_args+=(--quick)
    ;;
  gpu)
    if command -v "${NVCC:-nvcc}" >/dev/null 2>&1; then
      if [ -z "${ARWKV_CUDA_ARCH:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
        cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
        [ -z "$cap" ] || export ARWKV_CUDA_ARCH=sm_$cap
      fi
      native/hip/build.sh --cuda
    else
      native/hip/build.sh
    fi
    export ARWKV_HIP_LIBRARY=$ROOT/native/hip/build/libarwkv_hip.so
    ;;
esac
echo "gpu-check.sh: library built in $(( $(date +%s) - started )) s"

# A missing device fails the tests instead of skipping them: on this machine, a skip would hide the point of the run.
export ARWKV_HIP_TESTS_REQUIRED=1
set +e
timeout "${ARWKV_GPU_CHECK_TIMEOUT:-360}" "$runner" "${runner_args[@]}"
rc=$?
set -e
[ "$rc" != 124 ] || echo "gpu-check.sh: the runner ran past ${ARWKV_GPU_CHECK_TIMEOUT:-360} s and was stopped" >&2
echo "gpu-check.sh: done in $(( $(date +%s) - started )) s (rc $rc); results in $out"
exit "$rc"
