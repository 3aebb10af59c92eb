#!/usr/bin/env bash
# The GPU figures of the README and the book, in one run on a CUDA machine: Burn's training
# step (backend=cuda, f32 and mixed bf16) against PyTorch eager (bf16 autocast, and f32) for
# r34 and r100 at batch 128, the group head's share of r100's step, and the default training
# job on the GPU. Each part has its own time limit, so one failure leaves the others.
#
#   cargo build --release --no-default-features --features cuda,flex --bin bench --bin train
#   scripts/cuda_bench.sh [BIN_DIR=target/release] [OUT_DIR=cuda-bench]
#   PARTS="first_step first_step_cached f32_r34 bf16_r34" scripts/cuda_bench.sh ...   # some
#
# Needs the NVIDIA driver, CUDA's headers and NVRTC (CubeCL compiles its kernels at run time;
# CUDA_PATH if the toolkit is not in /usr/local/cuda) and python3 with torch. Device memory
# is read from nvidia-smi every 200 ms per process, so Burn's and PyTorch's peaks are the same
# quantity: what the process held on the GPU, its CUDA context included.
set -u
cd "$(dirname "$0")/.."
bin="${1:-target/release}"
out="${2:-cuda-bench}"
mkdir -p "$out"

if [ -z "${CUDA_PATH:-}" ] && [ ! -d /usr/local/cuda ] && command -v nvcc >/dev/null; then
    CUDA_PATH="$(dirname "$(dirname "$(command -v nvcc)")")"
    export CUDA_PATH
fi
# NVRTC where the toolkit or PyTorch's wheels keep it.
extra="$(find "${CUDA_PATH:-/usr/local/cuda}" /usr/local/cuda*/ /opt /usr/lib -name 'libnvrtc.so*' -not -path '*stubs*' \
    -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')"
export LD_LIBRARY_PATH="${extra}${LD_LIBRARY_PATH:-}"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
echo "CUDA_PATH=${CUDA_PATH:-/usr/local/cuda} nvrtc in: ${extra:-none found}"

# One part: its output in OUT/NAME.log, then each of its processes' peak device memory.
# PARTS="first_step f32_r34 ..." runs only the parts named (a device session has 15 minutes).
part() {
    local name="$1" limit="$2"
    shift 2
    if [ -n "${PARTS:-}" ] && [[ " $PARTS " != *" $name "* ]]; then
        return 0
    fi
    echo "== $name ($(date +%T)): $*"
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits \
        -lms 200 >"$out/$name.memory.csv" 2>/dev/null &
    local sampler=$! t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
        kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    awk -F', *' '{ key = $2 " (pid " $1 ")"; if ($3 + 0 > peak[key]) peak[key] = $3 + 0 }
        END { for (k in peak) print "== " NAME ": peak device memory " peak[k] " MiB, " k }' \
        NAME="$name" "$out/$name.memory.csv"
}

# CubeCL's caches on disk, compiled PTX and autotune results, in OUT/cubecl-cache, so that they
# come back from the device machine with the figures and a later session starts warm from
# them (CUBECL_CACHE=FOLDER seeds the cache with an earlier session's). CubeCL reads its
# settings from a cubecl.toml in the working directory or above; compiled kernels are cached
# only when `[compilation] cache` is set. The file is removed when the script ends.
cache="$(cd "$out" && pwd)/cubecl-cache"
mkdir -p "$cache"
if [ -n "${CUBECL_CACHE:-}" ] && [ -d "$CUBECL_CACHE" ]; then
    cp -r "$CUBECL_CACHE"/. "$cache"/
    echo "cubecl cache seeded from $CUBECL_CACHE: $(find "$cache" -type f | wc -l) files"
fi
if [ -e cubecl.toml ]; then
    echo "cubecl.toml already exists here; the cache settings below are not applied"
else
    trap 'rm -f cubecl.toml' EXIT
    cat >cubecl.toml <<TOML
[compilation]
cache = { file = "$cache" }

[autotune]
cache = { file = "$cache" }
TOML
fi

steps="${STEPS:-10}"
# How long a cold first step takes, with CubeCL's log of every compilation and autotune; then
# the same step in a fresh process, which finds every kernel in the cache.
CUBECL_DEBUG_LOG="$out/cubecl_first_step.log" part first_step 300 "$bin/bench" backbone=tiny \
    batch=32 steps=1 warmup=0 backend=cuda
[ -e "$out/cubecl_first_step.log" ] && wc -l "$out/cubecl_first_step.log"
part first_step_cached 120 "$bin/bench" backbone=tiny batch=32 steps=1 warmup=0 backend=cuda
du -sh "$cache"
part smoke 90 "$bin/bench" backbone=tiny batch=32 steps=3 warmup=2 backend=cuda
for model in r34 r100; do
    part "f32_$model" 110 "$bin/bench" backbone="$model" groups=32 batch=128 steps="$steps" \
        warmup=3 backend=cuda torch=true torch_amp=bf16
done
for model in r34 r100; do
    part "bf16_$model" 90 "$bin/bench" backbone="$model" groups=32 batch=128 steps="$steps" \
        warmup=3 backend=cuda precision=bf16 torch=true torch_amp=bf16
done
# The group head's share of a step: r100 without it (the ArcFace baseline), both frameworks.
part baseline_r100 80 "$bin/bench" backbone=r100 groups=0 batch=128 steps="$steps" warmup=3 \
    backend=cuda torch=true torch_amp=bf16
[ -n "${SKIP_TORCH_F32:-}" ] || part torch_f32 60 python3 scripts/bench_torch.py backbone=r34,r100 groups=32 batch=128 \
    steps="$steps" warmup=3 device=cuda amp=none
part train 100 "$bin/train" backend=cuda workers=8 out="$out/run"
