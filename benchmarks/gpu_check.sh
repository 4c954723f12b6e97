#!/usr/bin/env bash
# The GPU check (issue #14), one script for an H100/H200 machine with nvcc, its own PyTorch and no network; its
# inputs come from benchmarks/gpu_prepare.sh. It installs the carried wheels, builds gsplat's CUDA kernels once,
# runs the GPU-marked tests (CPU rasteriser against gsplat, values and gradients; the backbone against Splatfacto),
# then bench_step.py on the demo and on the 100-object scene with the paper's recipe (unic-lift, 30k-step settings)
# after a few hundred training steps, and the 3D-loss scale run. Everything goes to one log, $OUT/gpu_check.log.
#
# DEVICE=cpu runs the same steps on CPU without installing or building anything (the test suite does, with small
# sizes): TRAIN_STEPS, REPETITIONS, SCALE_SIZES and PYTHON override the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_STEPS=${TRAIN_STEPS:-300}
REPETITIONS=${REPETITIONS:-21}
SCALE_SIZES=${SCALE_SIZES:-300000 1000000 3000000}
LOG=${OUT:-.}/gpu_check.log
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
status=0
section() { echo "=== $(date +%T) $*"; }
run() { "$@" || { echo "=== FAILED ($?): $*"; status=1; }; }

section "machine"
run "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
command -v nvcc >/dev/null && nvcc --version | tail -1
if [ "$DEVICE" = cuda ] && [ -d .whl ]; then
  section "install the carried wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "=== FAILED: wheel install"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$DEVICE" = cuda ]; then
  section "build gsplat's CUDA kernels (MAX_JOBS=$MAX_JOBS, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
  SECONDS=0
  "$PY" -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat built no CUDA extension'" \
    || { echo "=== FAILED: gsplat build"; exit 1; }
  echo "gsplat built in ${SECONDS} s"
fi
section "GPU-marked tests"
run "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_rasterization_gpu.py tests/test_model.py tests/test_datamanager.py
for scene in assets/demo .gpu_scene/s100; do
  if [ ! -f "$scene/transforms.json" ]; then
    echo "=== SKIPPED bench_step on $scene: no scene there (benchmarks/gpu_prepare.sh makes it)"
    continue
  fi
  section "bench_step on $scene: unic-lift, $TRAIN_STEPS training steps, then $REPETITIONS timed steps per variant"
  run "$PY" benchmarks/bench_step.py steps --data "$scene" --method unic-lift --train-steps "$TRAIN_STEPS" \
    --repetitions "$REPETITIONS" --device "$DEVICE"
done
section "3D loss at scale"
# shellcheck disable=SC2086  # SCALE_SIZES is a list
run "$PY" benchmarks/bench_step.py scale --device "$DEVICE" --sizes $SCALE_SIZES
section "done, status $status"
exit $status
