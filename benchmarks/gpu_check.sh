#!/usr/bin/env bash
# The GPU checks of the training and the search, one script (sized for under 8 minutes on one CUDA
# GPU; not yet timed on one: no GPU has been lent so far):
#   (a) FBNetV2_F1 training on synthetic 224 px images, our loop vs a bare loop, with and without
#       AMP (bf16, fp16), channels_last and torch.compile: images/s (benchmarks/train_throughput.py);
#   (b) peak memory of search steps (benchmarks/search_memory.py): the FBNetV2-F space at 224 px,
#       sampled resolution, batch 32/64/128, and the channel search at 1..32 options per choice,
#       dmasking vs conventional;
#   (c) tools/search.py through torchrun (nccl on CUDA, gloo on CPU), one process per GPU, for one
#       short epoch on a tiny ImageFolder made here; prints the world size and the per-rank alpha digests.
#
#   bash benchmarks/gpu_check.sh                 # CUDA, full sizes
#   bash benchmarks/gpu_check.sh --device cpu    # the same steps at small sizes (what the tests run)
#   bash benchmarks/gpu_check.sh --out DIR       # keep the outputs in DIR (default: a temporary folder)
#
# Each part prints its own table; a failing part is reported and the next one still runs; the exit
# status is the number of failed parts.
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device|--out)
      if [ $# -lt 2 ]; then echo "error: $1 needs a value" >&2; exit 2; fi
      if [ "$1" = --device ]; then DEVICE="$2"; else OUT="$2"; fi
      shift 2 ;;
    *) echo "error: unknown argument '$1'; usage: bash benchmarks/gpu_check.sh [--device cuda|cpu] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "error: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
# the project's virtual environment (make install) when there is one
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY="${PYTHON:-python}"
if [ -z "$OUT" ]; then OUT="$(mktemp -d)"; fi
if ! mkdir -p "$OUT" 2>/dev/null || [ ! -w "$OUT" ]; then
  echo "error: --out '$OUT' is not a folder this script can write (a file, or no permission)" >&2; exit 2
fi
if [ "$DEVICE" = cuda ]; then
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if [ "$NGPU" -lt 1 ]; then echo "error: no CUDA device (torch.cuda.device_count() is 0); use --device cpu" >&2; exit 2; fi
  "$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| GPUs', torch.cuda.device_count())"
  NPROC=$NGPU
  TRAIN=(--resolution 224 --images 9600 --batch 64 --rounds 2 --warmup-rounds 1
         --options none amp=bf16 amp=fp16 channels_last compile)
  MEMORY=(--tables channels f --steps 3 --batch 32 --f-batches 32 64 128 --f-steps 2)
  SEARCH=(SEARCH.SPACE fbnetv2_f_space DATA.INPUT_SIZE 224 SEARCH.BATCH_SIZE 32 DATA.LIMIT 256
          SEARCH.CHECKPOINT_BLOCKS False SEARCH.AMP bf16 SEARCH.CHANNELS_LAST True SEARCH.COST.TARGET 240)
  CLASSES=4
else
  NPROC=2  # two gloo processes: DDP's reduction and our alpha all-reduce run as on several GPUs
  TRAIN=(--resolution 64 --images 64 --batch 16 --rounds 2 --warmup-rounds 1 --threads 1
         --options none amp=bf16 channels_last)
  MEMORY=(--tables channels f --steps 1 --batch 4 --max-options 2 --f-batches 1 --f-steps 1)
  SEARCH=(SEARCH.SPACE mnist_small_space MODEL.IN_CHANS 3 DATA.INPUT_SIZE 32 SEARCH.BATCH_SIZE 8 DATA.LIMIT 32
          SEARCH.COST.TARGET 1.0)
  CLASSES=2
  export OMP_NUM_THREADS=1 BENCH_THREADS=1
fi
FAILED=0
part() {  # part NAME COMMAND...: run one part, report its time and status
  local name="$1"; shift
  echo; echo "== ($name) $*"
  local t0=$SECONDS
  if "$@"; then echo "== ($name) ok in $((SECONDS - t0)) s"
  else echo "== ($name) FAILED (exit $?) after $((SECONDS - t0)) s"; FAILED=$((FAILED + 1)); fi
}

part a "$PY" benchmarks/train_throughput.py --device "$DEVICE" --models FBNetV2_F1 "${TRAIN[@]}"
part b "$PY" benchmarks/search_memory.py --device "$DEVICE" "${MEMORY[@]}"

make_folder() {  # a tiny ImageFolder: train/ and val/, $CLASSES classes, 40 PNGs each
  "$PY" - "$OUT/images" "$CLASSES" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
root, classes = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for split in ("train", "val"):
    for c in range(classes):
        d = os.path.join(root, split, f"c{c}")
        os.makedirs(d, exist_ok=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(os.path.join(d, f"{i}.png"))
EOF
}
search_ddp() {
  make_folder || return 1
  rm -rf "$OUT/search"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" tools/search.py \
    --config-file configs/search_imagenet.yaml DEVICE "$DEVICE" DATA.ROOT "$OUT/images" DATA.NUM_WORKERS 2 \
    MODEL.NUM_CLASSES "$CLASSES" SEARCH.EPOCHS 1 SEARCH.WARMUP_EPOCHS 0 OUTPUT_DIR "$OUT/search" \
    "${SEARCH[@]}" || return 1
  "$PY" - "$OUT/search/search.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
d = s["alpha_sha256_per_rank"]
print(f"world size {len(d)}, alpha digests per rank equal: {len(set(d)) == 1}, derived {s['derived_flops_m']:.2f} MFLOPs")
sys.exit(0 if len(set(d)) == 1 else 1)
EOF
}
part c search_ddp

echo; echo "gpu_check: $FAILED part(s) failed; outputs in $OUT"
exit "$FAILED"
