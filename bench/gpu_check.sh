#!/usr/bin/env bash
# The GPU checks as one script, for a short lease of a GPU machine that has no network: run from
# the repository root there, with .site.tar.xz (made here by bench/gpu_wheels.sh) carried beside
# the checkout (the device tool's `carry`). Everything it prints also goes to $OUT/gpu_check.log ($OUT: the folder the lease
# brings back; reports/gpu/ without one).
#
#   bash bench/gpu_check.sh        # about 3 minutes on one H100 (needs bench/gpu_wheels.sh)
#     1. the GPU and its torch;
#     2. tests/test_cuda.py (the CUDA paths) and tests/gan/test_ensemble.py;
#     3. bench/train_throughput.py --ensemble --device cuda: the zoo's DCGANs one at a time
#        against one batched ensemble, images/s and share of the fp32 and bf16 matmul peaks;
#        --ceiling: a step's convolutions and products alone and as dense batched GEMMs;
#        --prefetch: the CNN detector's batches made in turn and one step ahead.
#   bash bench/gpu_check.sh --run  # and (needs bench/gpu_wheels.sh --full) about 8 minutes more:
#     4. bench/train_throughput.py --device cuda (the trainer with MLflow against a bare loop);
#     5. a first `gandefect run` of the default data with `device: auto` (the GPU), timed, with
#        every stage's seconds, the gates' verdicts and the zoo's FIDs (the bento stage is left
#        out: BentoML is not carried).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-reports/gpu}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "the packages the image lacks"
mkdir -p /tmp/site
if [ -f .site.tar.xz ]; then
  tar -C /tmp/site -xJf .site.tar.xz || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1

step "the GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'sees', torch.cuda.get_device_name())" || exit 1

step "CUDA tests and the ensemble's tests"
# (the zoo-grouping test builds the zoo's trainers, which import MLflow: part of --run's packages)
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/gan/test_ensemble.py -k "not zoo_groups"

step "ensemble throughput on the GPU"
python3 bench/train_throughput.py --ensemble --device cuda --steps 150 --rounds 3

step "the ceiling of a step's convolutions and products on the GPU"
python3 bench/train_throughput.py --ceiling --device cuda --rounds 3

step "the CNN detector's batches made in turn and one step ahead, on the GPU"
python3 bench/train_throughput.py --prefetch --device cuda --rounds 2

if [ "${1:-}" != "--run" ]; then
  exit 0
fi
python3 -c "import mlflow, prefect, dvc, great_expectations" 2>/dev/null || {
  echo "the lifecycle's packages are not there: make .whl with bench/gpu_wheels.sh --full" >&2
  exit 1
}

step "trainer throughput on the GPU"
python3 bench/train_throughput.py --device cuda --steps 150 --rounds 2

step "a first gandefect run on the GPU"
if [ ! -d .git ]; then # DVC versions the data in a git repository: a copy of the tree may have none
  git init -q && git add -A && git -c user.name=gpu-check -c user.email=gpu-check@localhost commit -qm "gpu check"
fi
start=$(date +%s)
python3 -m gandefect.cli run --stage gans --stage detectors --stage repairer
code=$?
echo "gandefect run: exit $code after $(($(date +%s) - start)) s"
cp reports/retrain-latest.md "$out/retrain.md" 2>/dev/null
cp reports/gan-zoo.md "$out/gan-zoo.md" 2>/dev/null
exit $code
