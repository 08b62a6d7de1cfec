#!/usr/bin/env bash
# The one GPU check, ready for a session that is lent a GPU machine (see benchmarks/README.md).
#
#   benchmarks/gpu_check.sh --prepare    # here: the wheels the GPU machine lacks -> .whl/, and a
#                                        # link .gpu-shared -> ../shared
#   benchmarks/gpu_check.sh              # there (or anywhere): install .whl/ offline if needed, run
#
# The device tool's call carries [".whl", ".gpu-shared/weights/tf_efficientnet_lite0",
# ".gpu-shared/data/ham10000_half"] (about 54 MiB with the repository): Lite0's real weights and
# the real HAM half, which section 5 fine-tunes on.
#
# The H200 machines have Python 3.12 with torch, torchvision, timm, onnxruntime, pandas, pyarrow,
# scikit-learn, safetensors and filelock, and no network: the project's other dependencies travel
# as wheels in .whl/ (git-ignored via .git/info/exclude; about 24 MB, under the 64 MiB limit).
# XGBoost's CUDA wheel is too large to travel: the CPU-only build (xgboost-cpu) does, and its CUDA
# row says so. timm travels at this machine's version, so both machines fine-tune the same code.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(lightgbm optuna sqlalchemy alembic colorlog mako greenlet pydicom pylibjpeg pylibjpeg-libjpeg
        tfrecord crc32c tqdm xgboost-cpu)
if [ "${1:-}" = "--prepare" ]; then
  WHEELS+=("timm==$(.venv/bin/python -c 'import timm; print(timm.__version__)')")
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --implementation cp -d .whl "${WHEELS[@]}"
  du -sh .whl
  # a link to the shared folder (ignored, nothing copied): the device call carries the two paths
  # section 5 needs through it, and they arrive there as a real .gpu-shared/ folder
  SHARED=${MELANOMA_SHARED_DIR:-../shared}
  if [ -d "$SHARED/data/ham10000_half" ]; then
    grep -qx '/.gpu-shared' .git/info/exclude || echo '/.gpu-shared' >> .git/info/exclude
    ln -sfn "$(cd "$SHARED" && pwd)" .gpu-shared
  fi
  exit 0
fi
[ -n "${MELANOMA_SHARED_DIR:-}" ] || [ -d ../shared ] || [ ! -d .gpu-shared ] || export MELANOMA_SHARED_DIR=$PWD/.gpu-shared
PY=${PYTHON:-python3}
if ! "$PY" -c 'import lightgbm, optuna, pydicom, tfrecord, xgboost' 2>/dev/null; then
  [ -d .whl ] || { echo "missing packages and no .whl/: run benchmarks/gpu_check.sh --prepare first" >&2; exit 2; }
  "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH="/tmp/gpu-check-site:${PYTHONPATH:-}"
fi
export HF_HUB_OFFLINE=1
exec "$PY" benchmarks/gpu_check.py --work "${GPU_CHECK_WORK:-/tmp/melanoma-gpu}" "$@"
