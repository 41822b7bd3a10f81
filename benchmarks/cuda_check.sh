#!/usr/bin/env bash
# The GPU checks of the fast paths, as one script for a session that is lent a CUDA machine:
# the CUDA exactness tests (per-pattern training steps vs dense, fast inference vs plain, bf16 and fp16),
# then the training-step benchmark (fp32 and bf16, with the "floor" bound) and the inference
# benchmark on CUDA. Logs go to $OUT when it is set (the device tool's folder that comes back).
#
# The device image has torch (2.11), safetensors and huggingface_hub but not diffusers: carry it and
# importlib-metadata as wheels (diffusers 0.42.1 needs huggingface_hub >= 1.32; the image had 1.33):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib-metadata
# and run, carrying .whl:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
#       PYTHONPATH=/tmp/site:. bash benchmarks/cuda_check.sh
# Not yet run on a GPU (no session has been lent one since it was written); the dense ADE20K training
# rows take longest: `QUICK=1` runs only the tests and the landscape row.
set -uo pipefail
cd "$(dirname "$0")/.."
log_dir="${OUT:-/tmp/cuda_check}"
mkdir -p "$log_dir"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 2
status=0
python3 -m pytest tests/test_pattern_spade.py tests/test_fast.py -q -k "cuda" -p no:cacheprovider 2>&1 | tee "$log_dir/tests.log" || status=1
runs="landscape:128:2"
[ "${QUICK:-0}" = 1 ] || runs="ade20k:256:1,ade20k:256:2,landscape:128:2"
python3 benchmarks/train_step.py --device cuda --runs "$runs" --steps 5 --warmup 2 \
    --variants dense,pattern,dense+bf16,pattern+bf16,floor 2>&1 | tee "$log_dir/train_step.log" || status=1
if [ "${QUICK:-0}" != 1 ]; then
    python3 benchmarks/generator_speed.py --device cuda --presets ade20k --repeats 10 --samples 2 --no-truth 2>&1 \
        | tee "$log_dir/generator_speed.log" || status=1
fi
exit $status
