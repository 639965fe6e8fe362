#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, after scripts/gpu_prep.sh: the `gpu` tests and benchmarks/layer_gpu.py, with
# every table and log in one folder ($OUT, else gpu_results/). Through the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl", "gpu_payload"], timeout_s=480)
# Needs python3 with numpy, torch (CUDA) and pytest there; installs the carried wheels into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 ADNTN_GPU_PAYLOAD=$PWD/gpu_payload
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/backends/test_cuda_device.py 2>&1 | tee "$OUT/gpu_tests.txt"
timeout 300 python3 benchmarks/layer_gpu.py --run gpu_payload --out "$OUT/layer_gpu.json" 2>&1 | tee "$OUT/layer_gpu_log.txt"
