#!/usr/bin/env bash
# Prepare the GPU check on a machine without a GPU (TVM and nvcc build CUDA artifacts here; the lent GPU machines
# cannot install TVM, whose wheel is larger than what may travel, and reach no package index):
#   gpu_payload/  the artifacts benchmarks/layer_gpu.py times and the `gpu` tests check (cuda:${1:-sm_90})
#   .whl/         the wheels the GPU machine lacks (Python 3.12, manylinux x86_64)
# Both are git-ignored. Then, on the GPU: bash scripts/gpu_check.sh (the device tool: carry .whl and gpu_payload).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:-sm_90}
PY=${PY:-.venv/bin/python}
rm -rf gpu_payload
"$PY" benchmarks/layer_gpu.py --build gpu_payload --target "cuda:$ARCH"
mkdir -p .whl
for pkg in apache-tvm-ffi==0.1.14.post1 jsonschema jsonschema-specifications referencing rpds-py cryptography cffi \
           pycparser cotengra autoray cotengrust cmaes kahypar; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$pkg" || echo "gpu_prep: no wheel for $pkg (the check runs without it)"
done
du -sh gpu_payload .whl
