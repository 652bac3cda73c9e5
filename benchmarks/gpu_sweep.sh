#!/usr/bin/env bash
# The GPU check: the bare forward pass of every shipped model card across batch sizes on CUDA, through the
# replica's own code path (fp16 autocast, channels_last), into $OUT/gpu_sweep.json (or ./gpu_sweep.json).
#
# Made for a bare CUDA machine that has Python, torch, torchvision, numpy, PyYAML and typing_extensions but not
# this project's other dependencies (the device machines some sessions are lent run Python 3.12). Before, on a
# machine with pip and the package index:
#   benchmarks/gpu_sweep.sh --wheels     # pydantic, pydicom and their needs as wheels, into .whl/
#                                        # (WHEEL_PYTHON=3.12 by default: the CUDA machine's Python)
# then, on the CUDA machine, from the repository root, with .whl carried along:
#   benchmarks/gpu_sweep.sh              # about 1 minute on one GPU; prints the table and the suggestions
# Anywhere else `PYTHON=.venv/bin/python benchmarks/gpu_sweep.sh` runs the same sweep on what torch sees.
# BATCH_SIZES (1,2,...,256) and SECONDS_EACH (3) change the sweep; it stops at a batch that does not fit.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
wheels=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 pydicom==3.0.2)

if [ "${1:-}" = "--wheels" ]; then
    rm -rf .whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
    ls .whl
    exit 0
fi
if ! "$python" -c "import pydantic, pydicom" 2>/dev/null; then  # the bare machine: the carried wheels
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "pydantic or pydicom is missing and there is no .whl/ to install them from:" \
            "run 'benchmarks/gpu_sweep.sh --wheels' where pip can reach the index, and carry .whl" >&2
        exit 1
    fi
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/qure-site \
        .whl/*.whl
    export PYTHONPATH="/tmp/qure-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-.}"
mkdir -p "$out"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$python" -m qure_ray.models.timing --batch-sizes "${BATCH_SIZES:-1,2,4,8,16,32,64,128,256}" \
    --seconds "${SECONDS_EACH:-3}" --json "$out/gpu_sweep.json"
