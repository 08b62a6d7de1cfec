#!/usr/bin/env bash
# The one GPU check, ready for a session that is lent a GPU machine (see benchmarks/README.md).
#
#   benchmarks/gpu_check.sh --prepare    # here: download the wheels the GPU machine lacks into .whl/
#   benchmarks/gpu_check.sh              # there (or anywhere): install .whl/ offline if needed, run
#
# The H200 machines have Python 3.12 with torch, torchvision, timm, onnxruntime, pandas, pyarrow,
# scikit-learn, safetensors and filelock, and no network: the project's other dependencies travel
# as wheels in .whl/ (git-ignored via .git/info/exclude; about 20 MB, under the 64 MiB limit).
# XGBoost's CUDA wheel is too large to travel: its GPU row then says it is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(lightgbm optuna sqlalchemy alembic colorlog mako greenlet pydicom pylibjpeg pylibjpeg-libjpeg
        tfrecord crc32c tqdm)
if [ "${1:-}" = "--prepare" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --implementation cp -d .whl "${WHEELS[@]}"
  du -sh .whl
  exit 0
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import lightgbm, optuna, pydicom, tfrecord' 2>/dev/null; then
  [ -d .whl ] || { echo "missing packages and no .whl/: run benchmarks/gpu_check.sh --prepare first" >&2; exit 2; }
  "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH="/tmp/gpu-check-site:${PYTHONPATH:-}"
fi
export HF_HUB_OFFLINE=1
exec "$PY" benchmarks/gpu_check.py --work "${GPU_CHECK_WORK:-/tmp/melanoma-gpu}" "$@"
