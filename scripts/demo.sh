#!/usr/bin/env bash
# The main job, on this machine's CPU: DeepLabv3+ (MobileNetV2) from PyTorch to verified FP32 / FP16 / INT8
# artifacts, each built with every ready CPU backend (ONNX Runtime, and OpenVINO from the openvino extra) and the
# fastest measured kept (--backend auto), compared with PyTorch on real images, benchmarked, reported.
# The weights are the small model benchmarks/train_small.py trains (no pretrained weights can be downloaded here);
# calibration and parity use images generated from real photographs (benchmarks/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh plots,openvino --no-warm-up
. .venv/bin/activate
unset PYTHONDONTWRITEBYTECODE  # deploy byte-compiles what it imports, once (setup.sh did not)
# deploy names the ready backends and the CPU; `deploykit doctor` lists every backend and how to install it
deploykit deploy deeplabv3plus_mobilenetv2 \
  --weights benchmarks/checkpoints/deeplabv3plus_mobilenetv2_small.pt \
  --calib-data benchmarks/data/calib --calib-n 16 \
  --inputs benchmarks/data/heldout \
  --accuracy-budget "pixel_agreement>=0.99" \
  --backend auto \
  --out out/deeplabv3plus_mobilenetv2 "$@"
