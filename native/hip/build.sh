#!/usr/bin/env bash
# Builds libarwkv_hip.so from every .hip file in this folder into native/hip/build/.
#
#   native/hip/build.sh            hipcc (ROCm) for ARWKV_HIP_TARGETS (default "gfx942;gfx90a")
#   native/hip/build.sh --cuda     nvcc, the same sources compiled as CUDA for ARWKV_CUDA_ARCH (default sm_90)
#   native/hip/build.sh --cpu      the host C++ compiler and the HIP-on-CPU executor (hip_to_cpu.h): a library that
#                                  runs every kernel on the CPU, for tests; into build/cpu-w<WARP>[-asan]/
#   native/hip/build.sh --cpu --sanitize   the same under AddressSanitizer and UBSan (load it with
#                                  LD_PRELOAD=$(${CXX:-g++} -print-file-name=libasan.so))
#
# Environment:
#   ARWKV_HIP_TARGETS  ';'-separated AMD targets. Debian bookworm's hipcc (ROCm 5.2, clang 15) knows gfx90a and
#                      gfx940 but not gfx942 (MI300X): use ARWKV_HIP_TARGETS="gfx90a;gfx940" with it.
#   ARWKV_CUDA_ARCH    nvcc -arch value in --cuda mode.
#   ARWKV_HIP_BLAS     rocblas | cublas: route arwkv_gemm through the vendor BLAS (off by default).
#   ARWKV_HIP_JOBS     parallel compiles (default 2).
#   ARWKV_HIP_CPU_WARP_SIZE  --cpu: the executor's warp size, 64 (CDNA) or 32 (NVIDIA); default 64.
#   HIPCC, NVCC, CXX   compilers to use (default: hipcc, nvcc, g++ from PATH).
# In hip mode a missing hipcc is installed with apt-get (Debian's package); nvcc is never installed.
set -euo pipefail
cd "$(dirname "$0")"
SRC=$PWD
OUT=$SRC/build
mode=hip
sanitize=0
for arg in "$@"; do
  case "$arg" in
    --cuda) mode=cuda ;;
    --hip) mode=hip ;;
    --cpu) mode=cpu ;;
    --sanitize) sanitize=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "native/hip/build.sh: unknown argument '$arg' (use --cuda, --cpu [--sanitize] or nothing)" >&2; exit 2 ;;
  esac
done
[ "$sanitize" = 0 ] || [ "$mode" = cpu ] || { echo "native/hip/build.sh: --sanitize goes with --cpu" >&2; exit 2; }

JOBS=${ARWKV_HIP_JOBS:-2}
# Only the ARWKV_HIP_API functions of arwkv_hip.h are exported (-fvisibility=hidden hides kernels and helpers).
BLAS=${ARWKV_HIP_BLAS:-}
sources=(*.hip)
started=$(date +%s)
LIBRARY=$OUT/libarwkv_hip.so
OBJ=$OUT/obj-$mode

if [ "$mode" = hip ]; then
  HIPCC=${HIPCC:-hipcc}
  if ! command -v "$HIPCC" >/dev/null 2>&1; then
    echo "native/hip/build.sh: $HIPCC not found; installing Debian's hipcc with apt-get" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq hipcc >/dev/null
  fi
  TARGETS=${ARWKV_HIP_TARGETS:-gfx942;gfx90a}
  IFS=';' read -r -a targets <<<"$TARGETS"
  arch_flags=()
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  echo '__global__ void arwkv_probe() {}' >"$probe/probe.hip"
  for target in "${targets[@]}"; do
    [ -n "$target" ] || continue
    # An unknown target is a clang error at compile time; probing first gives one clear message instead.
    if ! "$HIPCC" --offload-arch="$target" --cuda-device-only -c "$probe/probe.hip" -o "$probe/probe.o" \
        >"$probe/log" 2>&1; then
      version=$({ "$HIPCC" --version 2>/dev/null || true; } | grep -m1 -i 'HIP version' || true)
      echo "native/hip/build.sh: the installed $HIPCC (${version:-unknown HIP version}) does not know the target '$target':" >&2
      sed 's/^/  /' "$probe/log" | head -5 >&2
      echo "  Debian bookworm's hipcc (ROCm 5.2) supports gfx90a and gfx940 but not gfx942; build with" >&2
      echo "  ARWKV_HIP_TARGETS=\"gfx90a;gfx940\" native/hip/build.sh   (gfx940 code objects do not load on gfx942:" >&2
      echo "  a MI300X needs a ROCm >= 5.7 hipcc, e.g. HIPCC=/opt/rocm/bin/hipcc)." >&2
      exit 1
    fi
    arch_flags+=("--offload-arch=$target")
  done
  [ ${#arch_flags[@]} -gt 0 ] || { echo "native/hip/build.sh: ARWKV_HIP_TARGETS is empty" >&2; exit 2; }
  defines=()
  libs=()
  case "$BLAS" in
    "") ;;
    rocblas) defines+=(-DARWKV_HIP_USE_ROCBLAS); libs+=(-lrocblas) ;;
    *) echo "native/hip/build.sh: ARWKV_HIP_BLAS='$BLAS' is not valid in hip mode (use rocblas or leave unset)" >&2; exit 2 ;;
  esac
  compile() { "$HIPCC" "${arch_flags[@]}" -std=c++17 -O3 -Wall -Wextra -Werror -fPIC -fvisibility=hidden "${defines[@]}" -c "$1" -o "$2"; }
  link() { "$HIPCC" "${arch_flags[@]}" -shared -fPIC -o "$LIBRARY" "$@" "${libs[@]}"; }
  describe="hipcc for $TARGETS"
elif [ "$mode" = cpu ]; then
  CXX=${CXX:-g++}
  command -v "$CXX" >/dev/null 2>&1 || { echo "native/hip/build.sh --cpu: $CXX not found (apt-get install g++)" >&2; exit 1; }
  WARP=${ARWKV_HIP_CPU_WARP_SIZE:-64}
  [ "$WARP" = 64 ] || [ "$WARP" = 32 ] || { echo "native/hip/build.sh: ARWKV_HIP_CPU_WARP_SIZE must be 64 or 32, not '$WARP'" >&2; exit 2; }
  [ -z "$BLAS" ] || { echo "native/hip/build.sh: ARWKV_HIP_BLAS has no CPU executor variant; leave it unset with --cpu" >&2; exit 2; }
  variant=cpu-w$WARP
  # GCC does not know #pragma unroll (its spelling is #pragma GCC unroll); the hipcc build still checks them.
  flags=(-std=c++20 -O2 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -fPIC -fvisibility=hidden -pthread -DARWKV_HIP_CPU_WARP_SIZE="$WARP")
  if [ "$sanitize" = 1 ]; then
    variant=$variant-asan
    # Every UB report is fatal, so a test cannot pass over one; frame pointers give the reports their lines.
    flags+=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  fi
  OUT=$OUT/$variant
  LIBRARY=$OUT/libarwkv_hip.so
  OBJ=$OUT/obj
  sources+=(hip_to_cpu.cpp)
  compile() { "$CXX" "${flags[@]}" -x c++ -c "$1" -o "$2"; }
  link() { "$CXX" "${flags[@]}" -shared -o "$LIBRARY" "$@"; }
  describe="$CXX and the HIP-on-CPU executor (warp size $WARP)"
  [ "$sanitize" = 0 ] || describe="$describe under AddressSanitizer and UBSan"
else
  NVCC=${NVCC:-nvcc}
  command -v "$NVCC" >/dev/null 2>&1 || { echo "native/hip/build.sh --cuda: $NVCC not found (install the CUDA toolkit)" >&2; exit 1; }
  ARCH=${ARWKV_CUDA_ARCH:-sm_90}
  defines=()
  libs=()
  case "$BLAS" in
    "") ;;
    cublas) defines+=(-DARWKV_HIP_USE_CUBLAS); libs+=(-lcublas) ;;
    *) echo "native/hip/build.sh: ARWKV_HIP_BLAS='$BLAS' is not valid with --cuda (use cublas or leave unset)" >&2; exit 2 ;;
  esac
  # -x cu: nvcc would otherwise not treat .hip files as CUDA sources. Device-side warnings are errors; the host
  # compiler is not given -Werror because it also sees nvcc's generated stubs, which we do not control.
  compile() { "$NVCC" -x cu -std=c++17 -arch="$ARCH" -O3 -Werror all-warnings -Xcompiler -Wall,-fPIC,-fvisibility=hidden \
                "${defines[@]}" -c "$1" -o "$2"; }
  link() { "$NVCC" -arch="$ARCH" -shared -Xcompiler -fPIC -o "$LIBRARY" "$@" "${libs[@]}"; }
  describe="nvcc for $ARCH"
fi

mkdir -p "$OBJ"
echo "native/hip/build.sh: compiling ${#sources[@]} sources with $describe (${JOBS} jobs)" >&2
objects=()
pids=()
failed=0
for source in "${sources[@]}"; do
  object="$OBJ/${source%.*}.o"
  objects+=("$object")
  compile "$source" "$object" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$JOBS" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || { echo "native/hip/build.sh: compilation failed" >&2; exit 1; }
link "${objects[@]}"
echo "native/hip/build.sh: built $LIBRARY in $(( $(date +%s) - started )) s" >&2
