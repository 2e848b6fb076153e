#!/usr/bin/env bash
# Builds libarwkv_hip.so from every .hip file in this folder into native/hip/build/.
#
#   native/hip/build.sh            hipcc (ROCm) for ARWKV_HIP_TARGETS (default "gfx942;gfx90a")
#   native/hip/build.sh --cuda     nvcc, the same sources compiled as CUDA for ARWKV_CUDA_ARCH (default sm_90)
#
# Environment:
#   ARWKV_HIP_TARGETS  ';'-separated AMD targets. Debian bookworm's hipcc (ROCm 5.2, clang 15) knows gfx90a and
#                      gfx940 but not gfx942 (MI300X): use ARWKV_HIP_TARGETS="gfx90a;gfx940" with it.
#   ARWKV_CUDA_ARCH    nvcc -arch value in --cuda mode.
#   ARWKV_HIP_BLAS     rocblas | cublas: route arwkv_gemm through the vendor BLAS (off by default).
#   ARWKV_HIP_JOBS     parallel compiles (default 2).
#   HIPCC, NVCC        compilers to use (default: hipcc, nvcc from PATH).
# In hip mode a missing hipcc is installed with apt-get (Debian's package); nvcc is never installed.
set -euo pipefail
cd "$(dirname "$0")"
SRC=$PWD
OUT=$SRC/build
mode=hip
for arg in "$@"; do
  case "$arg" in
    --cuda) mode=cuda ;;
    --hip) mode=hip ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "native/hip/build.sh: unknown argument '$arg' (use --cuda or nothing)" >&2; exit 2 ;;
  esac
done

JOBS=${ARWKV_HIP_JOBS:-2}
BLAS=${ARWKV_HIP_BLAS:-}
mkdir -p "$OUT/obj-$mode"
sources=(*.hip)
started=$(date +%s)

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
  compile() { "$HIPCC" "${arch_flags[@]}" -std=c++17 -O3 -Wall -Wextra -Werror -fPIC "${defines[@]}" -c "$1" -o "$2"; }
  link() { "$HIPCC" "${arch_flags[@]}" -shared -fPIC -o "$OUT/libarwkv_hip.so" "$@" "${libs[@]}"; }
  describe="hipcc for $TARGETS"
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
  compile() { "$NVCC" -x cu -std=c++17 -arch="$ARCH" -O3 -Werror all-warnings -Xcompiler -Wall,-fPIC \
                "${defines[@]}" -c "$1" -o "$2"; }
  link() { "$NVCC" -arch="$ARCH" -shared -Xcompiler -fPIC -o "$OUT/libarwkv_hip.so" "$@" "${libs[@]}"; }
  describe="nvcc for $ARCH"
fi

echo "native/hip/build.sh: compiling ${#sources[@]} sources with $describe (${JOBS} jobs)" >&2
objects=()
pids=()
failed=0
for source in "${sources[@]}"; do
  object="$OUT/obj-$mode/${source%.hip}.o"
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
echo "native/hip/build.sh: built $OUT/libarwkv_hip.so in $(( $(date +%s) - started )) s" >&2
