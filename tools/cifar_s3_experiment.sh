#!/usr/bin/env bash
# Short CIFAR-10 experiment with the shared data and robust WRN-16-2 teacher: retrain one searched S3
# architecture with cross-layer distillation (Eq. 3) and with CE only, then evaluate both on the
# 5,000-image validation split (clean, PGD-20) and AutoAttack on its first 1,000 images.
#
#   bash tools/cifar_s3_experiment.sh SHARED_DIR OUT_DIR [EPOCHS]
#
# SHARED_DIR holds data/cifar10-train/make_batches.py and teachers/cifar10/Linf/wrn-16-2-nfgsm.pt.
set -euo pipefail
shared=$1; out=$2; epochs=${3:-5}
mkdir -p "$out"
python "$shared/data/cifar10-train/make_batches.py" "$out/data"
teacher=(--teacher wrn-16-2 --teacher-ckpt wrn-16-2-nfgsm --model-dir "$shared/teachers")
[ -f "$out/search/arch.json" ] || {
  rnas search --space s3 "${teacher[@]}" --data-dir "$out/data" --limit 5000 --epochs 1 --out "$out/search"
  rnas derive "$out/search"
}
for baseline in cl ce; do
  [ -f "$out/retrain-$baseline/checkpoint.pt" ] && [ -f "$out/eval-$baseline.json" ] && continue
  rnas retrain "$out/search/arch.json" --baseline "$baseline" --data-dir "$out/data" --epochs "$epochs" \
    --out "$out/retrain-$baseline"
  rnas eval "$out/retrain-$baseline/checkpoint.pt" --attacks clean,pgd20 --json "$out/eval-$baseline.json"
  rnas eval "$out/retrain-$baseline/checkpoint.pt" --attacks autoattack --n 1000 --json "$out/eval-aa-$baseline.json"
done
