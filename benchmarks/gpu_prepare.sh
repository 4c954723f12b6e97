#!/usr/bin/env bash
# Inputs of benchmarks/gpu_check.sh, made here, where the package registry is reachable: Python 3.12 wheels of what
# the GPU machine's image lacks (nerfstudio, gsplat with its CUDA sources, viser, tyro, ...) and of this package in
# .whl/, and a 100-object generated scene in .gpu_scene/s100 (both git-ignored, about 25 MiB together). Then run
#     device run  carry=[".whl", ".gpu_scene"]  command="bash benchmarks/gpu_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WHEELS=(
  nerfstudio==1.1.5 gsplat==1.4.0 viser==0.2.7 tyro==1.0.17 docstring_parser==0.18.0 msgspec==0.23.0 websockets==17.4
  nerfacc==0.5.2 splines==0.3.0 pyquaternion==0.9.9 pytorch-msssim==1.0.0 fpsample==0.3.3 tensorly==0.10.0
  pathos==0.3.5 dill==0.4.1 multiprocess==0.70.19 ppft==1.7.8 appdirs==1.4.4
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl "${WHEELS[@]}"
rm -f .whl/unic_lift_ns-*.whl
package=$(mktemp -d)  # built from a copy, so that setuptools' build/ and egg-info stay out of the checkout
cp -r pyproject.toml README.md unic_lift_ns "$package"/
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$package"
rm -rf "$package"
if [ ! -f .gpu_scene/s100/scene.json ]; then
  "$(dirname "$PY")/unic-lift-synth" --output .gpu_scene/s100 --num-objects 100 --num-views 120 --resolution 256
fi
du -sh .whl .gpu_scene
