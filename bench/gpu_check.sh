#!/usr/bin/env bash
# The CUDA check of issue 2 (and the OT solver on a GPU), as one prepared run for a lent GPU machine.
#
# On the device tool's machine (PyTorch, timm, h5py, typer, transformers are there; POT is not, and neither
# are the offline encoder packages, so the image encoder is DINOv2-S/14 with random weights: same shapes,
# same FLOPs, same speed). Prepare here once, in the repo root:
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl POT==0.9.7
# then run, with carry [".whl"] and a timeout of about 540 s:
#     bash bench/gpu_check.sh
# Everything printed is also written to $OUT (the device tool's return folder; /tmp/gpu_check elsewhere).
# On a CPU, `DEVICE=cpu QUICK=1 bash bench/gpu_check.sh` runs the same steps small (how it is tested here).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels (POT) into a private site folder
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -n "${QUICK:-}" ]; then images=16; batch=8; rounds=1; dtypes=float32; else images=2048; batch=256; rounds=3; dtypes=bfloat16,float16,float32; fi

{
    echo "== machine"
    $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no gpu')"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

    echo "== image extraction: images/s and the fraction of the card's matmul peak, per precision and mode"
    # Decoding in DataLoader workers (num_workers auto = min(8, cores) on a GPU), pinned memory and
    # non-blocking copies are extract_images' GPU path; 'read' in its timings is the encoder waiting for them.
    $PY bench/bench_extract_images.py --device "$DEVICE" --image-model random:vit_small_patch14_dinov2 \
        --images "$images" --batch-size "$batch" --rounds "$rounds" --num-workers auto \
        --dtypes "$dtypes" --modes autocast,eager,compiled

    echo "== the groundedbert command on the device: synthesise, extract images, verify"
    rm -rf /tmp/gpu_check_data /tmp/gpu_check_cache
    $PY -m stages.cli data synth /tmp/gpu_check_data --images 64
    for dtype in bfloat16 float32; do
        $PY -m stages.cli extract --captions /tmp/gpu_check_data/captions.jsonl --images /tmp/gpu_check_data \
            --cache "/tmp/gpu_check_cache/$dtype" --split train --modality image --no-progress \
            --image-model random:vit_small_patch14_dinov2 --device "$DEVICE" --compute-dtype "$dtype"
        $PY -m stages.cli cache verify "/tmp/gpu_check_cache/$dtype/train"
    done

    echo "== batched partial OT: CPU and, where there is one, the GPU (pairs/s and bandwidth)"
    if $PY -c "import ot" 2> /dev/null; then
        $PY bench/bench_transport.py --quick --repeats 10
    else
        echo "POT is not installed: carry its wheel (see the top of this script)"
    fi
} 2>&1 | tee "$OUT/gpu_check.txt"
