#!/usr/bin/env bash
# Every GPU figure of the project in one run (a few minutes on one H100/H200), for a machine that is lent for a
# short time: the paper setting's training speed and model-FLOPs utilisation (ViT-B/16, three 224x224 views,
# bf16, random weights: no download), batched scan rendering, and the tests that are skipped without a GPU.
#
#   bash bench/gpu.sh                            # needs a CUDA GPU and the requirements (transformers >= 5.23)
#   PEAK_TFLOPS=989 BATCH=64 bash bench/gpu.sh   # the MFU denominator (H100/H200 SXM dense bf16) and batch
#   DEVICE=cpu QUICK=1 bash bench/gpu.sh         # a smoke test of this script on a CPU (no figures worth keeping)
#   TEXT_MODEL=/path/to/all-MiniLM-L6-v2 bash bench/gpu.sh   # the text encoder's folder where it is not installed
#
# The paper's view encoder trained and scored in minutes: bench/gpu_paper.py (run it before or after this one:
# beside it, this script's CPU steps slowed its renders threefold).
#
# Everything printed is also appended to ${OUT:-bench-gpu-out}/gpu.log. Each step has its own time limit
# (STEP_TIMEOUT seconds, default 240) so one slow step cannot eat the others' time. The Surrey Face Model is
# read from $AFFECTVLM_SFM_DIR (default ../shared/sfm); the render step is skipped without it.
set -uo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-bench-gpu-out}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
SFM=${AFFECTVLM_SFM_DIR:-../shared/sfm}
TEXT_MODEL=${TEXT_MODEL:-sentence-transformers/all-MiniLM-L6-v2}
if [ "$QUICK" = 1 ]; then
  TRAIN=(--batch 2 --steps 1 --warmup 0)
  RENDER=(--levels 0 --repeats 2 --warmup 1 --batch 4)
else
  TRAIN=(--batch "${BATCH:-64}" --steps 10 --warmup 3)
  RENDER=(--repeats 20 --batch 64)
fi
failed=0

step() {
  echo "== $*" | tee -a "$LOG"
  timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee -a "$LOG"
  local code=${PIPESTATUS[0]}
  echo "== exit $code" | tee -a "$LOG"
  [ "$code" = 0 ] || failed=1
}

step "$PY" -c "import torch, transformers, accelerate; print('torch', torch.__version__, '| transformers', \
transformers.__version__, '| accelerate', accelerate.__version__, '| device', \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA GPU')"
step "$PY" bench/train.py --device "$DEVICE" --config paper --random-init --bf16 "${TRAIN[@]}" \
  --peak-tflops "${PEAK_TFLOPS:-989}"
# the setting bench/gpu_paper.py trains: the same ViT-B/16 views against the default's frozen text encoder
step "$PY" bench/train.py --device "$DEVICE" --config paper-scratch --bf16 "${TRAIN[@]}" \
  --peak-tflops "${PEAK_TFLOPS:-989}" --set "model.affectvlm.text_model_name_or_path=$TEXT_MODEL"
if [ -f "$SFM/sfm_3448.npz" ]; then
  step "$PY" bench/render.py --device "$DEVICE" --sfm-dir "$SFM" "${RENDER[@]}"
else
  echo "== render: skipped, no sfm_3448.npz in $SFM (set AFFECTVLM_SFM_DIR)" | tee -a "$LOG"
fi
if [ "$DEVICE" = cuda ]; then
  step "$PY" -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_scan_render.py -k "gpu or cuda"
fi
echo "== done: log in $LOG" | tee -a "$LOG"
exit $failed
