#!/usr/bin/env bash
# melanoma-stack end to end: stage 1 (CNN embeddings) then stage 2 (tuned boosters, OOF AUC, report).
# With no arguments it runs on the synthetic demo dataset (generated on first use).
set -euo pipefail
CALLER_DIR="$PWD"  # relative paths given on the command line mean what they mean here
cd "$(dirname "$0")"

usage() {
  cat <<'USAGE'
Usage: ./run_all.sh [options]

  --data DIR          dataset folder in the Kaggle layout (train.csv [test.csv] + jpeg/, train/*.dcm
                      or tfrecords/); default: the synthetic demo in data/demo (generated if absent)
  --out DIR           outputs: stage 1 writes DIR/manifest.parquet and DIR/embeddings/, stage 2
                      writes DIR/stage2/; default: data/out/<name of the data folder>
                      (with --model: data/out/<name>-scored)
  --backbones LIST    comma-separated timm backbone specs (arch[.tag], hf-hub:org/name,
                      local-dir:/path), or 'none' for metadata only;
                      default: tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2
  --stages LIST       what each backbone's embedding holds: stages counted from the end (last,
                      last-1, ...) and/or head; default last,last-1 (see README)
  --trials N          Optuna trials added to each model's study this run (default 20)
  --features GROUPS   stage-2 feature groups: metadata,patient,embedding,probe,ugly-duckling,
                      neighbours (these six: the default), patient-context,diagnosis,
                      patient-scores,acquisition,source,expert
  --timeout S         seconds of tuning per model
  --ablate            also refit without each feature group in turn: what each group is worth
  --storage URL       Optuna storage (default sqlite:///OUT/stage2/optuna.db); a PostgreSQL/MySQL URL
                      lets several workers share one study
  --weights-dir DIR   folder of local-dir weight folders (also $MELANOMA_WEIGHTS_DIR)
  --train-csv CSV     the training CSV, when it is not DATA/train.csv; without --data only the
                      CSVs named here are read (--test-csv for a test split; needs --out)
  --test-csv CSV      the test CSV, when it is not DATA/test.csv
  --images DIR        where the images are when not in DATA's Kaggle places
  --channel-order O   auto (default): judge each source's colours and swap red and blue back
                      where they are clearly swapped (refuses on mixed evidence); rgb: as stored;
                      bgr: red and blue swapped
  --skip-missing      embed the images present when some named in the CSV are missing (default: error)
  --max-failures N    images that may fail to decode before stage 1 stops (default 0)
  --extra-data DIR    extra labelled training data (Kaggle layout, or the ISIC 2019 layout with
                      ISIC_2019_Training_GroundTruth.csv); repeatable; its rows join the training
                      part of every fold and never a validation fold
  --drop-extra-duplicates
                      drop extra images whose name is already in another source (default: error)
  --no-merge-duplicates
                      keep patients in separate fold groups even when they share an identical
                      image (default: such patients share a fold)
  --device D          auto | cpu | cuda (default auto)
  --stage S           1 | 2 | all (default all); --stage 2 reuses the cached embeddings
  --experts LIST      also fine-tune these backbones inside the patient folds (the expert stage:
                      python -m stage1_embed.experts, every knob there) and stack their
                      out-of-fold probabilities in stage 2
  --model DIR         score instead of training: embed DATA with the saved model's backbones and
                      preprocessing, then write OUT/predictions.csv and OUT/submission.csv
                      (DIR is a training run's OUT/stage2/model; DATA may hold only test.csv, or
                      no CSV at all: a bare folder of images)
  --split S           with --model: the split to score, test (default when present) or train
  --explain           with --model: each image's top contributions by feature group
  --smoke             tiny and fast (a small demo, one backbone, 2 trials): checks the install
  -h, --help          this help

Paths are taken relative to the folder you run it from. --split and --explain need --model;
--backbones, --stages, --trials, --features, --timeout, --ablate, --storage, --extra-data,
--drop-extra-duplicates and --experts are for training and are refused with --model.
USAGE
}

die() { echo "error: $*" >&2; echo "run ./run_all.sh --help for usage" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
from_caller() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER_DIR/$1" ;; esac; }

STAGE1_ARGS=() STAGE2_EXTRA=() TRAINING_FLAGS=() SCORING_FLAGS=() EXTRA_ARGS=() DROP_DUPLICATES=0 MODEL="" PREDICT_ARGS=() EXPERTS="" EXPERT_EXTRA=()
ABLATE=0 DATA="" TRAIN_CSV="" SEEN_TEST_CSV=0 OUT="" BACKBONES="" TRIALS=20 FEATURES="" TIMEOUT="" STORAGE="" WEIGHTS_DIR="" DEVICE=auto STAGE=all SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data) need "$@"; DATA="$(from_caller "$2")"; shift 2 ;;
    --out) need "$@"; OUT="$(from_caller "$2")"; shift 2 ;;
    --backbones) need "$@"; BACKBONES="$2"; TRAINING_FLAGS+=("$1"); shift 2 ;;
    --stages) need "$@"; STAGE1_ARGS+=(--stages "$2"); TRAINING_FLAGS+=("$1"); shift 2 ;;
    --trials) need "$@"; TRIALS="$2"; TRAINING_FLAGS+=("$1"); shift 2 ;;
    --features) need "$@"; FEATURES="$2"; TRAINING_FLAGS+=("$1"); shift 2 ;;
    --timeout) need "$@"; TIMEOUT="$2"; TRAINING_FLAGS+=("$1"); shift 2 ;;
    --ablate) ABLATE=1; TRAINING_FLAGS+=("$1"); shift ;;
    --storage) need "$@"; STORAGE="$2"; TRAINING_FLAGS+=("$1"); shift 2 ;;
    --weights-dir) need "$@"; WEIGHTS_DIR="$(from_caller "$2")"; shift 2 ;;
    --train-csv) need "$@"; TRAIN_CSV="$(from_caller "$2")"; STAGE1_ARGS+=(--train-csv "$TRAIN_CSV"); shift 2 ;;
    --test-csv) need "$@"; STAGE1_ARGS+=(--test-csv "$(from_caller "$2")"); SEEN_TEST_CSV=1; shift 2 ;;
    --images) need "$@"; STAGE1_ARGS+=(--images "$(from_caller "$2")"); EXPERT_EXTRA+=(--images "$(from_caller "$2")"); shift 2 ;;
    --channel-order) need "$@"; STAGE1_ARGS+=(--channel-order "$2"); shift 2 ;;
    --skip-missing) STAGE1_ARGS+=(--skip-missing); shift ;;
    --max-failures) need "$@"; STAGE1_ARGS+=(--max-failures "$2"); shift 2 ;;
    --extra-data) need "$@"; EXTRA_ARGS+=(--extra-data "$(from_caller "$2")"); TRAINING_FLAGS+=("$1"); shift 2 ;;
    --drop-extra-duplicates) DROP_DUPLICATES=1; TRAINING_FLAGS+=("$1"); shift ;;
    --no-merge-duplicates) STAGE2_EXTRA+=(--no-merge-duplicates); EXPERT_EXTRA+=(--no-merge-duplicates); TRAINING_FLAGS+=("$1"); shift ;;
    --device) need "$@"; DEVICE="$2"; shift 2 ;;
    --stage) need "$@"; STAGE="$2"; shift 2 ;;
    --model) need "$@"; MODEL="$(from_caller "$2")"; shift 2 ;;
    --experts) need "$@"; EXPERTS="$2"; TRAINING_FLAGS+=("$1"); shift 2 ;;
    --split) need "$@"; PREDICT_ARGS+=(--split "$2"); SCORING_FLAGS+=("$1"); shift 2 ;;
    --explain) PREDICT_ARGS+=(--explain); SCORING_FLAGS+=("$1"); shift ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1'" ;;
  esac
done
case "$STAGE" in 1|2|all) ;; *) die "--stage must be 1, 2 or all (got '$STAGE')" ;; esac
if [ -z "$MODEL" ] && [ ${#SCORING_FLAGS[@]} -gt 0 ]; then
  die "${SCORING_FLAGS[0]} applies to scoring with a saved model: add --model DIR (a training run's OUT/stage2/model)"
fi
if [ -n "$MODEL" ] && [ ${#TRAINING_FLAGS[@]} -gt 0 ]; then
  die "${TRAINING_FLAGS[0]} applies to training; scoring with --model uses the model's own backbones, features and boosters (drop ${TRAINING_FLAGS[0]}, or drop --model to train)"
fi
case "$DEVICE" in auto|cpu|cuda|cuda:*) ;; *) die "--device must be auto, cpu or cuda (got '$DEVICE')" ;; esac
[[ "$TRIALS" =~ ^[0-9]+$ ]] || die "--trials must be a whole number (got '$TRIALS')"

source scripts/ensure_venv.sh
START=$(date +%s)

STAGE1_EXTRA=()
if [ "$SMOKE" = 1 ]; then
  BACKBONES="${BACKBONES:-tf_efficientnet_lite0}"
  TRIALS=2
  STAGE2_EXTRA+=(--folds 3 --bootstrap 200 --max-rounds 300 --early-stopping 30)
  EXPERT_EXTRA+=(--folds 3 --epochs 1 --image-size 64)
fi
[ -z "$MODEL" ] || [ -n "$DATA" ] || die "--model needs --data (the images to score)"
if [ -z "$DATA" ] && [ -n "$TRAIN_CSV" ]; then  # only the CSVs named are read: no default dataset
  [ -n "$OUT" ] || die "--train-csv without --data needs --out (its folder name names the dataset, e.g. --out data/out/isic2020)"
elif [ "$SEEN_TEST_CSV" = 1 ] && [ -z "$DATA" ]; then
  die "--test-csv needs --train-csv or --data"
elif [ -z "$DATA" ]; then  # the generated demo (a smaller one for --smoke)
  if [ "$SMOKE" = 1 ]; then DATA=data/demo-smoke DEMO_ARGS=(--patients 30); else DATA=data/demo DEMO_ARGS=(); fi
  if [ ! -f "$DATA/train.csv" ]; then python -m stage1_embed.demo --out "$DATA" "${DEMO_ARGS[@]}"; fi
fi
[ -z "$DATA" ] || [ -d "$DATA" ] || die "--data $DATA is not a folder"
[ -z "$TRAIN_CSV" ] || [ -f "$TRAIN_CSV" ] || die "--train-csv $TRAIN_CSV is not a file"
# scoring gets its own folder by default: it must never replace a dataset's training features
OUT="${OUT:-data/out/$(basename "$(cd "$DATA" && pwd)")${MODEL:+-scored}}"
DATA_ARGS=() EXPERT_DATA="${DATA:-$(dirname "${TRAIN_CSV:-.}")}"
[ -z "$DATA" ] || DATA_ARGS=(--data "$DATA")

if [ -n "$MODEL" ]; then  # scoring with a saved model: no training
  [ -d "$MODEL" ] || die "--model $MODEL is not a folder"
  if [ "$STAGE" != 2 ]; then
    echo "== stage 1: embeddings with the model's backbones ($DATA -> $OUT)"
    python -m stage1_embed --data "$DATA" --out "$OUT" --device "$DEVICE" --model "$MODEL" \
      ${WEIGHTS_DIR:+--weights-dir "$WEIGHTS_DIR"} "${STAGE1_ARGS[@]}"
  fi
  echo "== scoring with $MODEL"
  python -m stage2_boost predict --model "$MODEL" --features "$OUT" --out "$OUT" "${PREDICT_ARGS[@]}"
  echo "== done in $(( $(date +%s) - START )) s (predictions: $(cd "$OUT" && pwd)/predictions.csv)"
  exit 0
fi
if [ "$STAGE" != 2 ]; then
  ARGS=("${DATA_ARGS[@]}" --out "$OUT" --device "$DEVICE")
  [ -n "$BACKBONES" ] && ARGS+=(--backbones "$BACKBONES")
  [ -n "$WEIGHTS_DIR" ] && ARGS+=(--weights-dir "$WEIGHTS_DIR")
  [ "$DROP_DUPLICATES" = 1 ] && ARGS+=(--drop-extra-duplicates)
  echo "== stage 1: embeddings (${DATA:-$TRAIN_CSV} -> $OUT)"
  python -m stage1_embed "${ARGS[@]}" "${EXTRA_ARGS[@]}" "${STAGE1_EXTRA[@]}" "${STAGE1_ARGS[@]}"
fi
if [ -n "$EXPERTS" ] && [ "$STAGE" != 2 ]; then
  echo "== expert stage: fine-tuning $EXPERTS inside the patient folds"
  python -m stage1_embed.experts --data "$EXPERT_DATA" --out "$OUT" --experts "$EXPERTS" --device "$DEVICE" \
    ${WEIGHTS_DIR:+--weights-dir "$WEIGHTS_DIR"} "${EXTRA_ARGS[@]}" "${EXPERT_EXTRA[@]}"
fi
if [ "$STAGE" != 1 ]; then
  ARGS=(train --features "$OUT" --trials "$TRIALS" --device "$DEVICE")
  [ -n "$FEATURES" ] && ARGS+=(--groups "$FEATURES")
  [ -n "$TIMEOUT" ] && ARGS+=(--timeout "$TIMEOUT")
  [ "$ABLATE" = 1 ] && ARGS+=(--ablate)
  [ -n "$STORAGE" ] && ARGS+=(--storage "$STORAGE")
  [ -n "$EXPERTS" ] && ARGS+=(--experts "$EXPERTS")
  echo "== stage 2: tuned LightGBM + XGBoost ($OUT -> $OUT/stage2)"
  python -m stage2_boost "${ARGS[@]}" "${EXTRA_ARGS[@]}" "${STAGE2_EXTRA[@]}"
fi
echo "== done in $(( $(date +%s) - START )) s (dataset $(cd "$EXPERT_DATA" && pwd), outputs $(cd "$OUT" && pwd))"
