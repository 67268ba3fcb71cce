"""Bad input across every command (issue 12, item 5): each case exits 2 with one line saying what was wrong,
prints no traceback, writes nothing (no partial file, no leftover temporary), and leaves an existing output
byte for byte.

"Unwritable" is made so that it holds as root too (root writes read-only folders): a path under /proc, where
nothing can be created, or a path whose parent is a regular file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from deploykit.cli import cli
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.metadata import ModelMetadata, write_metadata
from deploykit.types import IMAGENET
from deploykit.zoo.sources import load_model
from tests.io.faults import REPO, THIRD_PARTY_TMP

FIXTURES = "tests.fixtures.user_models"
USER = f"{FIXTURES}:tiny_segmenter"
PROC = "folder /proc is not writable (nothing can be created there)"
ZOO = "deeplabv3plus_mobilenetv2"
LONG = "a" * 300  # a name beyond the 255 bytes file systems take


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {d}: the fixture folder, {t}: this case's own empty folder
    says: str  # a fragment of the one error line


def case(id: str, says: str, words: str) -> Case:
    """A case from its command line as one string (no argument holds a space); {USER}, {ZOO} name models,
    {F} the user-model fixtures module ("\\udcff" in a string is a byte that is not UTF-8, as Python decodes it
    from the command line)."""
    return Case(id, tuple(w.replace("{USER}", USER).replace("{ZOO}", ZOO).replace("{F}", FIXTURES)
                          for w in words.split()), says)


CASES = [
    # export
    case("export-unknown-model", "unknown model", "export no_such_model -o {t}/x.onnx"),
    case("export-factory-raises", "raised FileNotFoundError: no weights",
         "export tests.fixtures.user_models:raising_factory --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-factory-not-a-module", "not a torch.nn.Module",
         "export tests.fixtures.user_models:not_a_module --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-out-under-proc", PROC,
         "export {USER} --input-shape 1,3,64,64 -o /proc/x.onnx"),
    case("export-parent-is-a-file", "is a file, not a folder",
         "export {USER} --input-shape 1,3,64,64 -o {d}/afile/x.onnx"),
    case("export-forward-raises", "raised ValueError: expected 4 input channels",
         "export tests.fixtures.user_models:raising_model --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-parent-missing", "does not exist", "export {USER} --input-shape 1,3,64,64 -o {t}/missing/x.onnx"),
    case("export-out-exists", "exists already; pass --force",
         "export {USER} --input-shape 1,3,64,64 -o {d}/existing.onnx"),
    case("export-out-is-a-folder", "is a directory", "export {USER} --input-shape 1,3,64,64 -o {d}"),
    case("export-shape-not-numbers", "positive integers", "export {USER} --input-shape 1,3,a,64 -o {t}/x.onnx"),
    case("export-shape-three-dims", "positive integers", "export {USER} --input-shape 1,3,64 -o {t}/x.onnx"),
    case("export-weights-missing", "does not exist",
         "export {USER} --input-shape 1,3,64,64 --weights {t}/none.pt -o {t}/x.onnx"),
    case("export-weights-empty", "it is an empty file, not a PyTorch checkpoint",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/empty.pt -o {t}/x.onnx"),
    case("export-weights-garbage", "it is a text file, not a PyTorch checkpoint",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/text.onnx -o {t}/x.onnx"),
    case("export-model-is-a-url", "is a URL", "export http://127.0.0.1:9/v2/models/m -o {t}/x.onnx"),
    case("bench-target-is-a-url", "bench run --url URL --model NAME", "bench grpc://127.0.0.1:9/m"),
    case("parity-reference-is-a-url", "is a URL", "parity https://example.invalid/m {d}/net.onnx"),
    case("export-forward-takes-two-inputs", "forward takes 2 inputs (x, depth)",
         "export {F}:two_inputs --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-model-gives-nan", "gives NaN in PyTorch itself",
         "export {F}:diverged --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-weights-hold-nan", "gives NaN in PyTorch itself",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/nan.pt -o {t}/x.onnx"),
    case("export-weights-an-image", "it is a PNG image, not a PyTorch checkpoint",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/images/a.png -o {t}/x.onnx"),
    # --weights given a Hugging Face model folder: the file to pass is named (deploykit does not pick one)
    case("export-weights-hf-folder", "hf is a folder; pass its weights file: --weights",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/hf -o {t}/x.onnx"),
    case("parity-weights-hf-folder", "hf/model.safetensors or --weights ",
         "parity {USER} --weights {d}/hf {d}/net.onnx --random 1"),
    case("export-weights-folder-without-weights", "a folder with no weights file",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/empty_dir -o {t}/x.onnx"),
    case("export-weights-sharded-folder", "split into shards, and deploykit reads one file",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/sharded -o {t}/x.onnx"),
    case("export-weights-shard-index", "split into shards, and deploykit reads one file",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/sharded/model.safetensors.index.json -o {t}/x.onnx"),
    case("export-set-malformed", "KEY=VALUE", "export {USER} --input-shape 1,3,64,64 --set width -o {t}/x.onnx"),
    case("export-set-unknown-option", "rejected options {'depth': 3}",
         "export {USER} --input-shape 1,3,64,64 --set depth=3 -o {t}/x.onnx"),
    case("export-user-model-without-shape", "--input-shape", "export {USER} -o {t}/x.onnx"),
    # export: outputs that are inputs (issue 18, item 1) and numbers out of range (item 5)
    case("export-out-is-the-weights", "is the input", "export {USER} --input-shape 1,3,64,64 --weights {d}/w.pt "
         "-o {d}/w.pt --force"),
    case("export-out-links-to-the-weights", "(the same file through a link)",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/w.pt -o {d}/wlink.pt --force"),
    case("export-out-is-the-user-module", "user_models.py is the input",
         "export {USER} --input-shape 1,3,64,64 -o {r}/tests/fixtures/user_models.py --force"),
    case("export-opset-zero", "--opset", "export {USER} --input-shape 1,3,64,64 --opset 0 -o {t}/x.onnx"),
    case("export-opset-too-new", "--opset", "export {USER} --input-shape 1,3,64,64 --opset 99 -o {t}/x.onnx"),
    # export: an opset the chosen exporter cannot write, or cannot write this model's operators in
    case("export-dynamo-opset-below-18", "the dynamo exporter wrote opset 18, not the 12 asked for",
         "export {USER} --input-shape 1,3,64,64 --exporter dynamo --opset 12 -o {t}/x.onnx"),
    case("export-torchscript-opset-beyond-it", "the torchscript exporter does not write opset 24",
         "export {USER} --input-shape 1,3,64,64 --opset 24 -o {t}/x.onnx"),
    case("export-operator-missing-from-opset", "opset 9 has no form of this operator",
         "export {USER} --input-shape 1,3,64,64 --set align_corners=true --opset 9 -o {t}/x.onnx"),
    case("export-size-multiple-zero", "--size-multiple",
         "export {USER} --input-shape 1,3,64,64 --size-multiple 0 -o {t}/x.onnx"),
    case("export-argument-not-utf8", "is not valid UTF-8",
         "export {USER} --input-shape 1,3,64,64 -o {t}/\udcff.onnx"),
    # build-engine
    case("build-model-missing", "does not exist; export one", "build-engine {t}/none.onnx -o {t}/x.onnx"),
    case("build-model-empty", "holds no ONNX graph", "build-engine {d}/empty.onnx -o {t}/x.onnx"),
    case("build-model-truncated", "is not a readable ONNX model", "build-engine {d}/truncated.onnx -o {t}/x.onnx"),
    case("build-model-not-onnx", "is not a readable ONNX model", "build-engine {d}/text.onnx -o {t}/x.onnx"),
    case("build-int8-no-calibration", "INT8 needs calibration data", "build-engine {d}/net.onnx --int8 -o {t}/x.onnx"),
    case("build-calib-npz-wrong-rank", "expected preprocessed N,C,H,W",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/rank3.npz -o {t}/x.onnx"),
    case("build-calib-npz-int64", "holds int64 values",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/int64.npz -o {t}/x.onnx"),
    case("build-calib-npz-no-rows", "holds no inputs",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/norows.npz -o {t}/x.onnx"),
    case("build-calib-npz-truncated", "cannot read calibration data",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/truncated.npz -o {t}/x.onnx"),
    case("build-calib-npz-wrong-channels", "the model takes 3 channels",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/channels1.npz -o {t}/x.onnx"),
    case("build-calib-npz-wrong-size-for-static", "input is fixed at [3, 64, 64]",
         "build-engine {d}/static.onnx --int8 --calib-data {d}/small.npz -o {t}/x.onnx"),
    case("build-calib-npz-two-arrays", "keep just one",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/two.npz -o {t}/x.onnx"),
    # a FIFO named like an image was skipped without a word (reading one blocks)
    case("build-calib-fifo-named-like-an-image", "not regular files (a FIFO, socket or device",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images_fifo -o {t}/x.onnx"),
    case("parity-inputs-device-named-like-an-image", "not regular files (a FIFO, socket or device",
         "parity {d}/net.onnx {d}/net.onnx --inputs {d}/images_device"),
    case("build-calib-folder-empty", "holds no images",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/empty_dir -o {t}/x.onnx"),
    case("build-calib-missing", "--calib-data",
         "build-engine {d}/net.onnx --int8 --calib-data {t}/nowhere -o {t}/x.onnx"),
    case("build-calib-n-zero", "--calib-n",
         "build-engine {d}/net.onnx --int8 --calib-data photos --calib-n 0 -o {t}/x.onnx"),
    case("build-budget-malformed", "is not METRIC>=VALUE",
         "build-engine {d}/net.onnx --int8 --calib-data photos --accuracy-budget cosine=>0.9 -o {t}/x.onnx"),
    case("build-budget-unknown-metric", "unknown metric",
         "build-engine {d}/net.onnx --int8 --calib-data photos --accuracy-budget accuracy>=0.9 -o {t}/x.onnx"),
    case("build-budget-wrong-direction", "higher-is-better",
         "build-engine {d}/net.onnx --int8 --calib-data photos --accuracy-budget cosine<=0.9 -o {t}/x.onnx"),
    case("build-budget-needs-labels", "add --labels",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --accuracy-budget miou_drop<=0.5 -o {t}/x.onnx"),
    case("build-budget-labels-mask-missing", "no mask b.png",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --accuracy-budget miou_drop<=0.5 "
         "--labels {d}/labels_partial -o {t}/x.onnx"),
    case("build-budget-labels-on-photos", "needs --calib-data DIR",
         "build-engine {d}/net.onnx --int8 --calib-data photos --accuracy-budget miou_drop<=0.5 "
         "--labels {d}/labels -o {t}/x.onnx"),
    case("build-keep-matches-nothing", "matches no node",
         "build-engine {d}/net.onnx --fp16 --keep-fp32 Nope -o {t}/x.onnx"),
    case("build-fp16-io-on-int8", "--fp16-io applies to --fp16 builds only",
         "build-engine {d}/net.onnx --int8 --fp16-io --calib-data photos -o {t}/x.onnx"),
    case("build-out-under-proc", PROC, "build-engine {d}/net.onnx --fp16 -o /proc/x.onnx"),
    case("build-out-parent-is-a-file", "is a file, not a folder",
         "build-engine {d}/net.onnx --fp16 -o {d}/afile/x.onnx"),
    case("build-out-exists", "exists already", "build-engine {d}/net.onnx -o {d}/existing.onnx"),
    # INT8 asked for without calibration data: refused before the export, not at its build minutes later
    case("deploy-int8-without-calibration-data", "int8 needs calibration data",
         "deploy {USER} --input-shape 1,3,64,64 --precisions fp32,int8 --out {t}/run"),
    case("deploy-require-int8-without-calibration-data", "int8 needs calibration data",
         "deploy {USER} --input-shape 1,3,64,64 --require int8 --out {t}/run"),
    # --set values of another kind than the option's default
    case("export-set-a-switch-to-a-word", "--set decoder takes true or false",
         "export {ZOO} --set decoder=maybe --input-shape 1,3,65,65 -o {t}/x.onnx"),
    case("deploy-set-a-count-to-a-fraction", "--set num_classes takes an integer",
         "deploy {ZOO} --set num_classes=2.5 --out {t}/run"),
    # ONNX files no runtime loads, or that take no image tensor: one message from every reader, before any work
    case("lint-opset-newer-than-onnx", "opset 99", "lint {d}/opset99.onnx"),
    case("build-opset-newer-than-onnx", "opset 99", "build-engine {d}/opset99.onnx -o {t}/x.onnx"),
    case("bench-reads-a-name-nothing-makes", "reads 'nowhere', which no node", "bench run {d}/dangling.onnx"),
    case("lint-reads-a-name-nothing-makes", "reads 'nowhere', which no node", "lint {d}/dangling.onnx"),
    case("build-output-nothing-makes", "output 'output' is made by no node",
         "build-engine {d}/unmade.onnx --int8 --calib-data {d}/images -o {t}/x.onnx"),
    case("parity-model-without-inputs", "takes no inputs", "parity {d}/noinputs.onnx {d}/net.onnx"),
    case("lint-model-without-outputs", "has no outputs", "lint {d}/nooutputs.onnx"),
    # names longer than the file system takes (ENAMETOOLONG after the work was exit 3)
    case("build-out-name-too-long", "bytes; this file system takes names of up to",
         f"build-engine {{d}}/net.onnx -o {{t}}/{LONG}.onnx"),
    # `-o ""` (an unset shell variable) was taken as no output: the work ran and nothing was written
    Case("bench-kernels-output-empty", ("bench", "kernels", "--quick", "-o", ""), "the output path is empty"),
    Case("bench-output-empty", ("bench", "run", "{d}/net.onnx", "-o", ""), "the output path is empty"),
    Case("parity-report-empty", ("parity", "{d}/net.onnx", "{d}/net.onnx", "--report", ""), "the output path is empty"),
    case("parity-report-name-too-long", "give a shorter name",
         f"parity {{d}}/net.onnx {{d}}/net.onnx --random 1 --report {{t}}/{LONG}.md"),
    case("package-out-name-too-long", "give a shorter name", f"package --triton {{d}}/net.onnx --out {{t}}/{LONG}"),
    case("deploy-out-folder-name-too-long", "give a shorter name",
         f"deploy {{USER}} --input-shape 1,3,32,32 --out {{t}}/{LONG}/run"),
    case("lint-name-made-twice", "ONNX Runtime refuses: 'output' is made twice", "lint {d}/madetwice.onnx"),
    # an ONNX model that loads but cannot run at the shape asked for, as a PyTorch forward that raises
    case("bench-shape-the-graph-cannot-run", "cannot run on inputs of shape input 1x3x65x65: node",
         "bench {d}/oddsizes.onnx --input-shape 1,3,65,65 --iterations 2 --no-roofline -o {t}/run.json"),
    case("parity-shape-the-graph-cannot-run", "does not take this shape",
         "parity {d}/oddsizes.onnx {d}/net.onnx --random 1 --input-shape 1,3,65,65 --task segmentation"),
    # a Conv whose map is smaller than its kernel: ONNX Runtime raises InvalidArgument, not Fail (was exit 3)
    case("bench-shape-below-the-kernel", "cannot run on inputs of shape input 1x3x4x4: node",
         "bench {d}/bigkernel.onnx --input-shape 1,3,4,4 --iterations 2 --no-roofline -o {t}/run.json"),
    case("parity-shape-below-the-kernel", "does not take this shape",
         "parity {d}/bigkernel.onnx {d}/bigkernel.onnx --random 1 --input-shape 1,3,4,4 --task segmentation"),
    case("build-calibration-arrays-below-the-kernel", "calibration input 1 of shape 1x3x4x4: the model cannot run",
         "build-engine {d}/bigkernel.onnx --int8 --calib-data {d}/four.npy --no-calib-cache -o {t}/x.onnx"),
    case("bench-shape-refused-names-the-verified-size", "it was exported and verified at 64x64",
         "bench {d}/bigkernel_meta.onnx --input-shape 1,3,4,4 --iterations 2 --no-roofline -o {t}/run.json"),
    # a zoo model whose graph runs on sizes the model cannot take (U-Net crops any size): its rule refuses them
    case("parity-unet-size-its-graph-would-crop", "the padded U-Net needs sides that are multiples of 16; 65 is not, "
         "use 64 or 80", "parity {d}/unet_meta.onnx {d}/unet_meta.onnx --random 1 --input-shape 1,3,65,64"),
    case("bench-unet-size-its-graph-would-crop", "multiples of 16; 72 is not",
         "bench {d}/unet_meta.onnx --input-shape 1,3,64,72 --iterations 2 --no-roofline -o {t}/run.json"),
    case("build-calibration-arrays-unet-cannot-take", "four.npy: input 4x4: the padded U-Net",
         "build-engine {d}/unet_meta.onnx --int8 --calib-data {d}/four.npy --no-calib-cache -o {t}/x.onnx"),
    # below a zoo model's smallest size: its rule's words at export and in every runner, before the model is built
    # (DeconvNet's forward failed inside fc6 first: exit 3, later a line naming its default size)
    case("export-below-the-rules-smallest-size", "MSI-Net's 1/8 feature map needs sides of at least 8 pixels",
         "export msinet --set width=0.0625 --input-shape 1,3,4,64 -o {t}/x.onnx"),
    case("bench-zoo-below-the-rules-smallest-size", "input 7x9: MSI-Net's 1/8 feature map",
         "bench msinet --set width=0.0625 --input-shape 1,3,7,9 --iterations 2 --no-roofline -o {t}/run.json"),
    case("bench-zoo-below-its-smallest-map", "input 64x64: DeconvNet's fc6 (a valid 7x7 convolution on the 1/32 "
         "map) needs sides of at least 224",
         "bench deconvnet --set width_divisor=16 --input-shape 1,3,64,64 --iterations 2 --no-roofline "
         "-o {t}/run.json"),
    case("export-zoo-below-its-smallest-map", "use a height and width of at least 224 (multiples of 32)",
         "export deconvnet --set width_divisor=16 --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-size-multiple-the-rule-refuses", "--size-multiple 4 makes the second verification shape 2x3x196x204",
         "export unet --set width=0.0625 --input-shape 1,3,188,188 --size-multiple 4 -o {t}/x.onnx"),
    case("bench-openvino-shape-the-ir-cannot-run", "cannot run on inputs of shape input 1x3x65x65: node output (Add)",
         "bench {d}/oddsizes.xml --input-shape 1,3,65,65 --iterations 2 --no-roofline -o {t}/run.json"),
    case("parity-openvino-shape-the-ir-cannot-run", "does not take this shape",
         "parity {d}/oddsizes.xml {d}/net.onnx --random 1 --input-shape 1,3,65,65 --task segmentation"),
    # an IR OpenVINO cannot read: the reason, not the C++ source location its message starts with
    case("bench-openvino-weights-cut-short", "cutbin.xml: Incorrect weights in bin file; copy its",
         "bench {d}/cutbin.xml --iterations 2 --no-roofline -o {t}/run.json"),
    case("parity-openvino-xml-cut-short", "tags mismatch at offset", "parity {d}/cutxml.xml {d}/net.onnx --random 1"),
    case("bench-string-input", "is not a numeric tensor", "bench run {d}/strings.onnx"),
    case("parity-string-input", "is not a numeric tensor",
         "parity {d}/strings.onnx {d}/strings.onnx --input-shape 1,3,8,8"),
    # an output path that ends in '/' names a folder: pathlib would drop the slash and write a file called "out"
    case("build-out-ends-in-a-slash", "ends in '/'", "build-engine {d}/net.onnx -o {t}/out/"),
    case("export-out-ends-in-a-slash", "ends in '/'", "export {USER} --input-shape 1,3,64,64 -o {t}/exported/"),
    case("bench-out-ends-in-a-slash", "ends in '/'", "bench run {d}/net.onnx --iterations 2 -o {t}/runs/"),
    case("build-calib-cache-ends-in-a-slash", "ends in '/'",
         "build-engine {d}/net.onnx --int8 --calib-data photos --calib-cache {t}/cache/ -o {t}/x.onnx"),
    # a name that says another backend's artifact, refused before calibration (the cache would be a write)
    case("build-onnxruntime-named-like-an-engine", "a suffix of TensorRT's files",
         "build-engine {d}/net.onnx --backend onnxruntime --int8 --calib-data {d}/images -o {t}/x.plan"),
    case("build-onnxruntime-named-like-an-ir", "a suffix of OpenVINO's files",
         "build-engine {d}/net.onnx --backend onnxruntime --fp16 -o {t}/x.xml"),
    case("build-onnxruntime-named-like-ir-weights", "a suffix of OpenVINO's files",
         "build-engine {d}/net.onnx --backend onnxruntime -o {t}/x.bin"),
    case("build-openvino-named-like-onnx", "name the OpenVINO IR x.xml",
         "build-engine {d}/net.onnx --backend openvino --int8 --calib-data {d}/images -o {t}/x.onnx"),
    case("build-calib-cache-under-proc", PROC,
         "build-engine {d}/net.onnx --int8 --calib-data photos --calib-cache /proc/c.json -o {t}/x.onnx"),
    case("build-calib-cache-parent-is-a-file", "is a file, not a folder",
         "build-engine {d}/net.onnx --int8 --calib-data photos --calib-cache {d}/afile/c.json -o {t}/x.onnx"),
    case("build-trt-option-on-onnxruntime", "do not apply to --backend onnxruntime",
         "build-engine {d}/net.onnx --backend onnxruntime --workspace 64 -o {t}/x.onnx"),
    # build-engine: outputs that are inputs, hostile images and labels, numbers out of range
    case("build-out-is-the-model", "is the input", "build-engine {d}/net.onnx -o {d}/net.onnx --force"),
    case("build-out-is-the-model-by-another-path", "is the input",
         "build-engine {d}/net.onnx -o {d}/./../{n}/net.onnx --force"),
    case("build-out-hard-links-the-model", "(the same file through a link)",
         "build-engine {d}/net.onnx -o {d}/hard.onnx --force"),
    case("build-precision-graph-is-the-model", "m.fp16.onnx is the input",
         "build-engine {d}/m.fp16.onnx --fp16 -o {d}/m.fp16.ort.onnx --force"),
    case("build-out-inside-the-calib-folder", "inside the input folder",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images -o {d}/images/x.onnx"),
    case("build-out-inside-the-labels-folder", "inside the input folder",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --accuracy-budget miou_drop<=0.5 --labels "
         "{d}/labels -o {d}/labels/x.onnx"),
    case("build-budget-flag-without-budget", "--labels applies only with --accuracy-budget",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --labels {d}/labels -o {t}/x.onnx"),
    case("build-int8-flag-on-fp32", "--calib-method applies to --int8 builds only (this build is --fp32)",
         "build-engine {d}/net.onnx --calib-method entropy -o {t}/x.onnx"),
    case("build-calib-cache-is-the-model", "is the input",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --calib-cache {d}/net.onnx -o {t}/x.onnx"),
    case("build-timing-cache-is-the-model", "is the input",
         "build-engine {d}/net.onnx --timing-cache {d}/link.onnx -o {t}/x.onnx"),
    case("build-calib-bomb", "too large to decode safely",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/bomb -o {t}/x.onnx"),
    case("build-calib-animated", "has 2 frames", "build-engine {d}/net.onnx --int8 --calib-data {d}/animated "
         "-o {t}/x.onnx"),
    case("build-calib-name-not-utf8", "not valid UTF-8",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/badname -o {t}/x.onnx"),
    case("build-calib-float-pixels", "32-bit float pixels",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/floats -o {t}/x.onnx"),
    case("build-calib-truncated-png", "cannot read image",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/truncated -o {t}/x.onnx"),
    case("build-budget-labels-wrong-size", "is 32x32, but its image",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --accuracy-budget miou_drop<=0.5 "
         "--labels {d}/labels_small -o {t}/x.onnx"),
    case("build-calib-n-negative", "--calib-n", "build-engine {d}/net.onnx --int8 --calib-n -3 -o {t}/x.onnx"),
    case("build-percentile-over-100", "--percentile",
         "build-engine {d}/net.onnx --int8 --calib-method percentile --percentile 101 -o {t}/x.onnx"),
    case("build-percentile-nan", "--percentile", "build-engine {d}/net.onnx --int8 --percentile nan -o {t}/x.onnx"),
    case("build-holdout-zero", "--holdout", "build-engine {d}/net.onnx --int8 --holdout 0 -o {t}/x.onnx"),
    case("build-holdout-takes-every-item", "--holdout 9 leaves none of the",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --accuracy-budget cosine>=0.9 --holdout 9 "
         "-o {t}/x.onnx"),
    case("build-budget-on-one-item", "needs at least 2 calibration items",
         "build-engine {d}/net.onnx --int8 --calib-data synthetic --calib-n 1 --accuracy-budget cosine>=0.9 "
         "-o {t}/x.onnx"),
    case("build-max-float-negative", "--max-float", "build-engine {d}/net.onnx --int8 --max-float -1 -o {t}/x.onnx"),
    case("build-threads-zero", "--threads", "build-engine {d}/net.onnx --threads 0 -o {t}/x.onnx"),
    case("build-workspace-zero", "--workspace", "build-engine {d}/net.onnx --workspace 0 -o {t}/x.onnx"),
    case("build-require-precision-nan", "--require-precision",
         "build-engine {d}/net.onnx --require-precision nan -o {t}/x.onnx"),
    case("build-optimization-level-six", "--builder-optimization-level",
         "build-engine {d}/net.onnx --builder-optimization-level 6 -o {t}/x.onnx"),
    # parity
    case("parity-factory-raises", "raised FileNotFoundError: no weights",
         "parity tests.fixtures.user_models:raising_factory {d}/net.onnx"),
    case("parity-forward-raises", "raising_model (on input 1x3x64x64) raised ValueError",
         "parity tests.fixtures.user_models:raising_model {d}/net.onnx"),
    case("parity-candidate-missing", "does not exist", "parity {USER} {t}/none.onnx"),
    case("parity-candidate-empty", "empty.onnx holds no ONNX graph", "parity {USER} {d}/empty.onnx"),
    case("parity-candidate-truncated", "is not a readable ONNX model", "parity {USER} {d}/truncated.onnx"),
    case("parity-gate-malformed", "is not [output:]metric OP number", "parity {USER} {d}/net.onnx --gate cosine=>0.9"),
    case("parity-gate-unknown-metric", "unknown metric", "parity {USER} {d}/net.onnx --gate acc>=0.9"),
    case("parity-gate-unknown-output", "names output",
         "parity {USER} {d}/net.onnx --gate logits:cosine>=0.9 --limit 1"),
    case("parity-gate-needs-labels", "add --labels", "parity {USER} {d}/net.onnx --gate miou_drop<=0.5"),
    case("parity-inputs-missing", "does not exist", "parity {USER} {d}/net.onnx --inputs {t}/nowhere"),
    case("parity-inputs-npz-int64", "holds int64 values", "parity {USER} {d}/net.onnx --inputs {d}/int64.npz"),
    case("parity-inputs-npz-wrong-rank", "expected preprocessed N,C,H,W",
         "parity {USER} {d}/net.onnx --inputs {d}/rank3.npz"),
    case("parity-inputs-one-image", "not one image", "parity {USER} {d}/net.onnx --inputs {d}/images/a.png"),
    case("parity-inputs-npz-wrong-size-for-static", "has 32 at axis 2; expected 64",
         "parity {USER} {d}/static.onnx --inputs {d}/small.npz"),
    case("parity-shape-malformed", "positive integers", "parity {USER} {d}/net.onnx --input-shape 1x3"),
    case("parity-labels-missing-folder", "not a folder",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {t}/nowhere"),
    case("parity-labels-without-image-inputs", "give --inputs DIR", "parity {USER} {d}/net.onnx --labels {d}/labels"),
    case("parity-labels-mask-missing", "no mask b.png",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels_partial"),
    case("parity-labels-rgb-mask", "is a RGB image",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels_rgb"),
    case("parity-labels-on-saliency", "scores segmentation masks",
         "parity {d}/sal.onnx {d}/sal.onnx --inputs {d}/images --labels {d}/labels"),
    case("parity-report-under-proc", PROC,
         "parity {USER} {d}/net.onnx --report /proc/r.md"),
    case("parity-report-exists", "exists already", "parity {USER} {d}/net.onnx --report {d}/existing.md"),
    # parity: outputs that are inputs, sidecars that do not belong, hostile images and labels, numbers
    case("parity-report-is-a-candidate", "is the input", "parity {USER} {d}/net.onnx --report {d}/net.onnx --force"),
    case("parity-report-is-the-reference-onnx", "is the input",
         "parity {USER} {d}/net.onnx --reference-onnx {d}/static.onnx --report {d}/static.onnx --force"),
    case("parity-report-is-a-candidates-sidecar", "is the input",
         "parity {USER} {d}/art.ort.onnx --report {d}/art.ort.onnx.deploykit.json --force"),
    case("parity-report-inside-the-inputs", "inside the input folder",
         "parity {USER} {d}/net.onnx --inputs {d}/images --report {d}/images/r.md"),
    case("parity-report-inside-the-labels", "inside the input folder",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels --report {d}/labels/r.md"),
    case("parity-report-is-the-weights", "is the input",
         "parity {USER} --weights {d}/w.pt {d}/net.onnx --report {d}/w.pt --force"),
    case("parity-sidecar-of-another-artifact", "does not match its sidecar", "parity {USER} {d}/swapped.ort.onnx"),
    case("parity-sidecar-newer-schema", "newer than this deploykit reads", "parity {USER} {d}/newer.ort.onnx"),
    case("parity-sidecar-not-json", "is unreadable", "parity {USER} {d}/garbled.ort.onnx"),
    case("parity-sidecar-a-list", "is not a deploykit sidecar", "parity {USER} {d}/listed.ort.onnx"),
    case("parity-sidecar-other-backend", "says it is a openvino artifact", "parity {USER} {d}/elsewhere.ort.onnx"),
    case("parity-sidecar-no-hash", "lacks or garbles artifact_sha256", "parity {USER} {d}/unhashed.ort.onnx"),
    case("parity-inputs-bomb", "too large to decode safely", "parity {USER} {d}/net.onnx --inputs {d}/bomb"),
    case("parity-inputs-animated", "has 2 frames", "parity {USER} {d}/net.onnx --inputs {d}/animated"),
    case("parity-inputs-name-not-utf8", "not valid UTF-8", "parity {USER} {d}/net.onnx --inputs {d}/badname"),
    case("parity-inputs-int32-pixels", "32-bit integer pixels", "parity {USER} {d}/net.onnx --inputs {d}/ints"),
    case("parity-inputs-empty-png", "cannot read image", "parity {USER} {d}/net.onnx --inputs {d}/emptypng"),
    case("parity-labels-wrong-size", "is 32x32, but its image a.png is 64x64",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels_small"),
    case("parity-labels-unknown-class", "holds class 9, but the model has 3 classes",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels_class9"),
    case("parity-labels-mask-bomb", "cannot read label mask",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels_bomb"),
    case("parity-labels-mask-animated", "has 2 frames",
         "parity {USER} {d}/net.onnx --inputs {d}/images --labels {d}/labels_animated"),
    case("parity-seed-negative", "--seed", "parity {USER} {d}/net.onnx --random 1 --seed -1"),
    case("parity-atol-negative", "--atol", "parity {USER} {d}/net.onnx --atol -0.1"),
    case("parity-rtol-inf", "--rtol", "parity {USER} {d}/net.onnx --rtol inf"),
    case("parity-localize-tol-zero", "--localize-tol", "parity {USER} {d}/net.onnx --localize --localize-tol 0"),
    case("parity-threads-zero", "--threads", "parity {USER} {d}/net.onnx --threads 0"),
    # bench
    case("bench-compare-not-json", "is not a JSON file",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/bad.json"),
    case("bench-compare-empty", "is not a JSON file",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/empty.json"),
    case("bench-compare-other-json", "other.json is not a deploykit bench JSON",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/other.json"),
    case("bench-compare-binary", "is not a JSON file",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/int64.npz"),
    # a model of two inputs where one image tensor is fed (the FP16 / INT8 passes' calibration, parity)
    case("build-fp16-two-inputs", "takes 2 inputs (input, bias); the fp16 pass feeds a model one image tensor",
         "build-engine {d}/twoinputs.onnx --fp16 -o {t}/x.onnx"),
    case("build-int8-two-inputs", "takes 2 inputs (input, bias); the int8 pass feeds",
         "build-engine {d}/twoinputs.onnx --int8 --calib-data {d}/images -o {t}/x.onnx"),
    case("parity-outputs-cannot-be-paired", "cannot be paired: compare models with the same outputs",
         "parity {d}/net.onnx {d}/twooutputs.onnx --random 1"),
    case("parity-two-inputs", "takes 2 inputs (input, bias); parity feeds",
         "parity {d}/net.onnx {d}/twoinputs.onnx --random 1"),
    case("bench-compare-samples-edited", "its result field samples_ms is",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/edited_samples.json -o {t}/run.json"),
    case("bench-compare-versions-edited", "its environment is not an object with an object of versions",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/edited_versions.json -o {t}/run.json"),
    case("bench-batch-malformed", "integers", "bench {d}/net.onnx --batch 1,x"),
    case("bench-duration-and-iterations", "not both", "bench {d}/net.onnx --duration 1 --iterations 3"),
    case("bench-out-under-proc", PROC,
         "bench {d}/net.onnx --iterations 2 --no-roofline -o /proc/b.json"),
    case("bench-out-exists", "exists already", "bench {d}/net.onnx --iterations 2 -o {d}/existing.json"),
    case("bench-forward-raises", "raising_model (on input 1x3x32x32) raised ValueError",
         "bench tests.fixtures.user_models:raising_model --input-shape 1,3,32,32 --iterations 2 --no-roofline"),
    case("bench-kernels-out-under-proc", PROC, "bench kernels --quick --no-plots -o /proc/k.json"),
    case("bench-target-missing", "does not exist", "bench {t}/none.onnx --iterations 2 --no-roofline"),
    # bench: outputs that are inputs, sidecars that do not belong, numbers out of range
    case("bench-out-is-the-target", "is the input", "bench {d}/net.onnx --iterations 2 --no-roofline "
         "-o {d}/net.onnx --force"),
    case("bench-out-links-to-the-target", "(the same file through a link)",
         "bench {d}/net.onnx --iterations 2 --no-roofline -o {d}/link.onnx --force"),
    case("bench-out-is-the-linked-target", "(the same file through a link)",
         "bench {d}/link.onnx --iterations 2 --no-roofline -o {d}/net.onnx --force"),
    case("bench-out-is-the-sidecar", "is the input", "bench {d}/art.ort.onnx --iterations 2 --no-roofline "
         "-o {d}/art.ort.onnx.deploykit.json --force"),
    case("bench-out-is-the-baseline", "is the input", "bench {d}/net.onnx --iterations 2 --no-roofline "
         "--compare {d}/bad.json -o {d}/bad.json --force"),
    case("bench-out-is-the-weights", "is the input", "bench {USER} --input-shape 1,3,32,32 --weights {d}/w.pt "
         "--iterations 2 --no-roofline -o {d}/w.pt --force"),
    case("bench-sidecar-of-another-artifact", "does not match its sidecar",
         "bench {d}/swapped.ort.onnx --iterations 2 --no-roofline"),
    case("bench-sidecar-empty", "is unreadable", "bench {d}/blank.ort.onnx --iterations 2 --no-roofline"),
    case("bench-iterations-zero", "--iterations", "bench {d}/net.onnx --iterations 0"),
    case("bench-threads-negative", "--threads", "bench {d}/net.onnx --threads -1"),
    case("bench-duration-negative", "--duration", "bench {d}/net.onnx --duration -1"),
    case("bench-duration-inf", "--duration", "bench {d}/net.onnx --duration inf"),
    case("bench-warmup-nan", "--warmup", "bench {d}/net.onnx --warmup nan"),
    case("bench-min-change-negative", "--min-change", "bench {d}/net.onnx --min-change -5"),
    case("bench-kernels-threads-zero", "--threads", "bench kernels --quick --threads 0"),
    # deploy
    case("deploy-out-is-a-file", "is a file", "deploy {USER} --out {d}/afile"),
    case("deploy-out-under-file", "is a file, not a folder", "deploy {USER} --out {d}/afile/sub/out"),
    case("deploy-out-under-proc", PROC, "deploy {USER} --out /proc/deploykit"),
    case("deploy-unknown-model", "unknown model", "deploy no_such_model --out {t}/out"),
    case("deploy-budget-malformed", "is not METRIC>=VALUE", "deploy {ZOO} --out {t}/out --accuracy-budget miou=0.9"),
    case("deploy-budget-other-task", "is a saliency metric", "deploy {ZOO} --out {t}/out --accuracy-budget cc>=0.9"),
    case("deploy-budget-needs-labels", "add --labels",
         "deploy {ZOO} --out {t}/out --accuracy-budget miou_drop<=0.5"),
    case("deploy-precisions-unknown", "choose from", "deploy {USER} --out {t}/out --precisions fp64"),
    case("deploy-calib-missing", "does not exist", "deploy {USER} --out {t}/out --calib-data {t}/nowhere"),
    # refused when parity started, after the export and the builds had written their files
    case("deploy-inputs-one-image", "not one image", "deploy {USER} --out {t}/out --inputs {d}/images/a.png"),
    case("deploy-inputs-a-model-file", "neither a folder of images nor an .npz/.npy file",
         "deploy {USER} --out {t}/out --inputs {d}/net.onnx"),
    case("deploy-calib-one-image", "not a folder of images",
         "deploy {USER} --out {t}/out --precisions fp32,int8 --calib-data {d}/images/a.png"),
    case("deploy-calib-npz-int64", "holds int64 values", "deploy {USER} --out {t}/out --calib-data {d}/int64.npz"),
    case("deploy-labels-without-images", "give --inputs DIR", "deploy {USER} --out {t}/out --labels {d}/labels"),
    # deploy: an output folder that is or holds an input, numbers out of range, --require
    case("deploy-out-is-the-calib-folder", "inside the input folder",
         "deploy {USER} --out {d}/images --calib-data {d}/images"),
    case("deploy-out-holds-the-weights", "holds the input", "deploy {USER} --weights {d}/w.pt --out {d}"),
    case("deploy-out-inside-the-labels", "inside the input folder",
         "deploy {USER} --out {d}/labels/out --inputs {d}/images --labels {d}/labels"),
    case("deploy-threads-zero", "--threads", "deploy {USER} --out {t}/out --threads 0"),
    case("deploy-bench-seconds-zero", "--bench-seconds", "deploy {USER} --out {t}/out --bench-seconds 0"),
    case("deploy-calib-n-zero", "--calib-n", "deploy {USER} --out {t}/out --calib-n 0"),
    case("deploy-require-unbuilt", "--require int8 is not among --precisions",
         "deploy {USER} --out {t}/out --precisions fp32 --require int8"),
    case("deploy-require-unknown", "--require", "deploy {USER} --out {t}/out --require fp64"),
    # package
    case("package-more-names-than-artifacts", "2 --name values for 1 artifact",
         "package --triton {d}/net.onnx --name a --name b --out {t}/repo"),
    case("package-artifact-missing", "does not exist", "package --triton {t}/none.onnx --out {t}/repo"),
    case("package-artifact-empty", "holds no ONNX graph", "package --triton {d}/empty.onnx --out {t}/repo"),
    *(case(f"{command.split()[0]}-input-of-size-0", "declares size 0 at axis 2", f"{command} {{d}}/zerodim.onnx{rest}")
      for command, rest in (("lint", ""), ("build-engine", " -o {t}/z.ort.onnx"), ("bench", ""),
                            ("package --triton", " --out {t}/repo"))),
    # the model's own fault, said as such and named as the user knows it (not by the staging folder it was in)
    case("package-artifact-that-does-not-load", "unknownop.onnx does not load in ONNX Runtime (ONNX Runtime cannot "
         "load unknownop/1/model.onnx", "package --triton {d}/unknownop.onnx --out {t}/repo"),
    case("package-out-under-proc", PROC, "package --triton {d}/net.onnx --out /proc/repo"),
    case("package-out-parent-is-a-file", "is a file", "package --triton {d}/net.onnx --out {d}/afile/repo"),
    case("package-out-exists", "exists already", "package --triton {d}/net.onnx --out {d}/existing_repo"),
    # package: an output folder that holds the artifacts, sidecars that do not belong, numbers out of range
    case("package-out-holds-the-artifact", "holds the input", "package --triton {d}/net.onnx --out {d} --force"),
    case("package-out-links-to-the-artifacts-folder", "holds the input",
         "package --triton {d}/net.onnx --out {d}/dirlink --force"),
    case("package-sidecar-of-another-artifact", "does not match its sidecar",
         "package --triton {d}/swapped.ort.onnx --out {t}/repo"),
    case("package-sidecar-newer-schema", "newer than this deploykit reads",
         "package --triton {d}/newer.ort.onnx --out {t}/repo"),
    case("package-instances-zero", "--instances", "package --triton {d}/net.onnx --out {t}/repo --instances 0"),
    case("package-max-batch-negative", "--max-batch-size",
         "package --triton {d}/net.onnx --out {t}/repo --max-batch-size -1"),
    case("package-queue-delay-negative", "--max-queue-delay-us",
         "package --triton {d}/net.onnx --out {t}/repo --max-queue-delay-us -1"),
    # lint
    case("lint-model-missing", "does not exist", "lint {t}/none.onnx"),
    case("lint-model-not-onnx", "is not a readable ONNX model", "lint {d}/text.onnx"),
    case("lint-model-empty", "holds no ONNX graph", "lint {d}/empty.onnx"),
    # models
    case("models-unknown", "unknown model", "models no_such_model"),
    case("models-user-factory", "is a user model (package.module:factory) and `deploykit models` shows the zoo's",
         "models {USER}"),
    case("models-a-checkpoint", "is a checkpoint file", "models {d}/w.pt"),
    Case("models-empty-name", ("models", ""), "the model name '' is empty"),  # Path("") is the working folder
    Case("export-empty-model-name", ("export", "", "-o", "{t}/x.onnx"), "the model name '' is empty"),
    # zoo options that count channels: at least 1 (num_classes=-1 was a "bug" from torch, 0 a ZeroDivisionError)
    case("export-zoo-negative-classes", "--set num_classes takes a positive integer", "export fcn32s "
         "--set num_classes=-1 -o {t}/x.onnx"),
    case("export-zoo-no-classes", "--set num_classes takes a positive integer", "export dilatednet_context_basic "
         "--set num_classes=0 -o {t}/x.onnx"),
    # user code and checkpoints (issue 18, items 6 and 7; files from _checkpoint_fixtures)
    case("export-forward-sys-exit", "exiting_model (on input 1x3x64x64) raised SystemExit: 3",
         "export {F}:exiting_model --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-factory-sys-exit", "raised SystemExit: cannot find the config",
         "export {F}:exiting_factory --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-module-sys-exit", "your module tests.fixtures.exiting_module raised SystemExit",
         "export tests.fixtures.exiting_module:build --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-forward-base-exception", "raised Halt: stop here",
         "export {F}:halting_model --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-forward-in-numpy", "has no input: the tracer saw no torch operation",
         "export {F}:numpy_model --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-forward-ignores-input", "has no input",
         "export {F}:ignores_input --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("export-dynamo-ignores-input", "computes no output from its input",
         "export {F}:ignores_input --exporter dynamo --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("parity-forward-sys-exit", "raised SystemExit: 3",
         "parity {F}:exiting_model {d}/net.onnx --random 1 --input-shape 1,3,64,64"),
    case("bench-forward-sys-exit", "raised SystemExit: 3",
         "bench {F}:exiting_model --input-shape 1,3,64,64 --iterations 2 --warmup 0"),
    case("deploy-forward-sys-exit", "raised SystemExit: 3",
         "deploy {F}:exiting_model --input-shape 1,3,64,64 --precisions fp32 --out {t}/out"),
    case("export-weights-unsafe-global", "pickles tests.fixtures.user_models.Halt",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_unsafe.pth -o {t}/x.onnx"),
    case("export-weights-whole-model", "pickles tests.fixtures.user_models.TinySegmenter",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_whole.pth -o {t}/x.onnx"),
    case("export-weights-trusted-missing-class", "not importable here",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_missing.pth --trust-checkpoint -o {t}/x.onnx"),
    case("export-weights-trusted-raises", "unpickling checkpoint ckpt_raises.pth (--trust-checkpoint) raised",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_raises.pth --trust-checkpoint -o {t}/x.onnx"),
    case("export-weights-scores-only", "holds no state_dict",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_scores.pth -o {t}/x.onnx"),
    case("export-weights-other-model", "does not fit the model",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_other.pth -o {t}/x.onnx"),
    # checkpoints in layouts users have, that are not a state_dict to load (each was "your model raised
    # RuntimeError: Error(s) in loading state_dict", exit 3 for a zoo model, or "is it complete?")
    case("export-weights-torchscript", "it is a TorchScript archive (torch.jit.save), not a PyTorch checkpoint; "
         "give the file torch.save wrote", "export {USER} --input-shape 1,3,64,64 --weights {d}/scripted.pt "
         "-o {t}/x.onnx"),
    case("export-weights-npz", "it is a NumPy .npz archive", "export {USER} --input-shape 1,3,64,64 --weights "
         "{d}/weights.npz -o {t}/x.onnx"),
    case("export-weights-on-meta", "on the meta device (no values): context.0.bias", "export {USER} "
         "--input-shape 1,3,64,64 --weights {d}/ckpt_meta.pth -o {t}/x.onnx"),
    case("export-weights-of-more-classes", "has 5 outputs and the model's 3: build the model with 5 classes (e.g. "
         "--set num_classes=5)", "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_5.pth -o {t}/x.onnx"),
    case("export-weights-generator-and-discriminator", "several state_dicts, under 'generator', 'discriminator'",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/ckpt_gan.pth -o {t}/x.onnx"),
    case("parity-weights-unsafe-global", "--trust-checkpoint",
         "parity {USER} {d}/net.onnx --weights {d}/ckpt_unsafe.pth --random 1 --input-shape 1,3,64,64"),
    case("bench-weights-unsafe-global", "--trust-checkpoint",
         "bench {USER} --weights {d}/ckpt_unsafe.pth --input-shape 1,3,64,64 --iterations 2"),
    case("deploy-weights-unsafe-global", "--trust-checkpoint",
         "deploy {USER} --weights {d}/ckpt_unsafe.pth --input-shape 1,3,64,64 --out {t}/out"),
    # found by a hostile user (redteam): messages that raise, GeneratorExit, sizes beyond memory
    case("export-factory-exception-message-raises", "raised Unprintable: (its message cannot be shown",
         "export {F}:unprintable_factory --input-shape 1,3,64,64 -o {t}/x.onnx"),
    case("parity-forward-exception-message-raises", "raised Unprintable: (its message cannot be shown",
         "parity {F}:unprintable_model {d}/net.onnx --random 1 --input-shape 1,3,64,64"),
    case("export-forward-generator-exit", "raised GeneratorExit: closed",
         "export {F}:closing_model --input-shape 1,3,64,64 -o {t}/x.onnx"),
    # a shape whose input alone exceeds the machine's memory is refused when parsed, before any allocation (under
    # memory overcommit the kernel's OOM killer could otherwise end the process without a word)
    case("export-shape-beyond-memory", "for the float32 input alone",
         "export {USER} --input-shape 1,3,1000000,1000000 -o {t}/x.onnx"),
    case("bench-shape-beyond-memory", "for the float32 input alone",
         "bench {d}/net.onnx --input-shape 1,3,1000000,1000000 --iterations 2 --no-roofline"),
    case("deploy-shape-beyond-memory", "for the float32 input alone",
         "deploy {USER} --input-shape 64,3,100000,100000 --out {t}/out"),
    case("parity-shape-beyond-memory", "for the float32 input alone",
         "parity {USER} {d}/net.onnx --random 1 --input-shape 1,3,1000000,1000000"),
    case("export-zoo-option-beyond-memory", "out of memory",
         "export {ZOO} --set num_classes=100000000000 -o {t}/x.onnx"),
    # thresholds no value of the metric can meet: refused before the work, not failed after it
    case("parity-gate-above-perfect", "cosine is at most 1", "parity {USER} {d}/net.onnx --gate cosine>=2"),
    case("parity-gate-infinite", "is not a finite number", "parity {USER} {d}/net.onnx --gate max_abs<=-inf"),
    case("build-budget-above-perfect", "pixel_agreement is at most 1",
         "build-engine {d}/net.onnx --int8 --calib-data photos --accuracy-budget pixel_agreement>=1.5 -o {t}/x.onnx"),
    case("build-budget-infinite", "is not a finite number",
         "build-engine {d}/net.onnx --int8 --calib-data photos --accuracy-budget cosine>=inf -o {t}/x.onnx"),
    case("deploy-budget-above-perfect", "miou is at most 1",
         "deploy {ZOO} --out {t}/out --accuracy-budget miou>=1.01"),
    # arrays of inputs that cannot be inputs: NaN, object arrays (pickles), a folder named like a file
    case("build-calib-npz-nan", "input 0 holds NaN or infinite values",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/nan.npz -o {t}/x.onnx"),
    case("build-calib-npy-inf", "input 1 holds NaN or infinite values",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/inf.npy -o {t}/x.onnx"),
    case("parity-inputs-npz-nan", "input 0 holds NaN or infinite values",
         "parity {USER} {d}/net.onnx --inputs {d}/nan.npz"),
    case("parity-inputs-npz-object-array", "Object arrays cannot be loaded when allow_pickle=False); save a float32",
         "parity {USER} {d}/net.onnx --inputs {d}/objects.npz"),
    case("build-calib-npz-object-array", "Object arrays cannot be loaded when allow_pickle=False); save a float32",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/objects.npz -o {t}/x.onnx"),
    case("deploy-calib-npz-nan", "holds NaN or infinite values",
         "deploy {USER} --input-shape 1,3,64,64 --precisions int8 --calib-data {d}/nan.npz --out {t}/out"),
    # names that select nothing or escape their folder, a sidecar that says true for 1, a link to nowhere
    case("bench-backend-names-nothing", "give at least one name",
         "bench {d}/net.onnx --backend , --iterations 2 --no-roofline"),
    case("bench-kernels-backend-unknown", "--backend nope: unknown", "bench kernels --quick --backend nope"),
    case("bench-kernels-precision-unknown", "--precision fp64: unknown", "bench kernels --quick --precision fp64"),
    case("bench-kernels-precision-names-nothing", "give at least one name", "bench kernels --quick --precision ,"),
    case("package-name-dot-dot", "starts with a dot", "package --triton {d}/net.onnx --name .. --out {t}/repo"),
    case("package-name-hidden", "starts with a dot", "package --triton {d}/net.onnx --name .m --out {t}/repo"),
    case("package-name-empty", "--name is empty", "package --triton {d}/net.onnx --name= --out {t}/repo"),
    case("parity-sidecar-schema-true", "has schema version True", "parity {USER} {d}/truthy.ort.onnx"),
    case("build-out-link-to-nowhere", "exists already", "build-engine {d}/net.onnx -o {d}/nowhere.onnx"),
    # a calibration cache path that holds another file, sizes beyond any tensor, clients beyond reason
    case("build-calib-cache-is-not-a-cache", "is not a deploykit calibration cache",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --calib-cache {d}/other.json -o {t}/x.onnx"),
    case("build-calib-cache-is-an-empty-file", "is not a deploykit calibration cache",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/images --calib-cache {d}/empty.json -o {t}/x.onnx"),
    case("export-shape-beyond-int64", "has a size above",
         "export {USER} --input-shape 1,3,99999999999999999999,64 -o {t}/x.onnx"),
    case("parity-shape-beyond-int32", "has a size above",
         "parity {USER} {d}/net.onnx --random 1 --input-shape 1,3,4294967296,64"),
    case("bench-batch-beyond-range", "--batch must be integers from 1 to",
         "bench {d}/net.onnx --batch 99999999999 --iterations 2 --no-roofline"),
    case("bench-batch-the-model-cannot-take", "cannot run); choose a batch the model accepts (--batch 1",
         "bench {d}/static.onnx --batch 2 --iterations 2 --no-roofline"),
    case("bench-csv-and-json", "--csv or --json", "bench {d}/net.onnx --iterations 2 --no-roofline --csv --json"),
    case("bench-concurrency-beyond-range", "--concurrency must be integers from 1 to",
         "bench --url http://127.0.0.1:9 --model m --concurrency 100000000"),
    case("export-head-convs-with-decoder", "head_convs=1 is for DeepLabv3",
         "export {ZOO} --set head_convs=1 --input-shape 1,3,65,65 -o {t}/x.onnx"),
]

# A model file in a state no reader takes, handed to each command that reads one: every command says the same
# thing (one reader, deploykit.io.model_files), before any work.
MODEL_FILE_FAULTS = {
    "missing": ("{t}/nowhere.onnx", "does not exist"),
    "folder": ("{d}/folder.onnx", "is a folder, not a file"),
    "empty": ("{d}/empty.onnx", "holds no ONNX graph"),
    "truncated": ("{d}/truncated.onnx", "is not a readable ONNX model"),
    "not-onnx": ("{d}/text.onnx", "is not a readable ONNX model"),
    "data-gone": ("{d}/datagone.onnx", "in datagone.data, which is not beside it"),
    # the readers that load no external data (bench, parity, package) let these through to ONNX Runtime's C++
    # message, and lint passed a file ONNX Runtime refuses
    "data-short": ("{d}/datashort.onnx", "needs 2304 and datashort.data holds 100"),
    "data-a-folder": ("{d}/datafolder.onnx", "in datafolder.data, which is a folder, not a file"),
    "data-a-device": ("{d}/datadevice.onnx", "in datadevice.data, which is not a regular file"),
    "data-outside": ("{d}/dataoutside.onnx", "outside its folder"),
    "float-data-short": ("{d}/floatshort.onnx", "holds 3 values; its shape [8, 8, 3, 3] and type float need 576"),
}
MODEL_READERS = {
    "lint": "lint {m}",
    "build": "build-engine {m} -o {t}/x.onnx",
    "bench": "bench {m}",
    "parity-reference": "parity {m} {d}/net.onnx",
    "parity-candidate": "parity {d}/net.onnx {m}",
    "package": "package {m} --triton --out {t}/repo",
}
CASES += [
    case(f"{reader}-model-file-{fault}",
         "is a directory" if fault == "folder" and reader in ("lint", "build") else says,  # click's own check
         words.replace("{m}", path))
    for reader, words in MODEL_READERS.items() for fault, (path, says) in MODEL_FILE_FAULTS.items()
]
# A file where export and deploy take a PyTorch model: what goes where, not "unknown model".
CASES += [
    case(f"{command}-model-is-{kind}", says, f"{command} {path} " + ("-o {t}/x.onnx" if command == "export"
                                                                      else "--out {t}/out"))
    for command in ("export", "deploy")
    for kind, path, says in (("onnx", "{d}/net.onnx", "is a model file"),
                             ("missing-onnx", "{t}/nowhere.onnx", "is a model file"),
                             ("checkpoint", "{d}/w.pt", "is a checkpoint file"),
                             ("folder", "{d}/images", "is a folder"))
]


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad-input")
    loaded = load_model(USER)
    assert onnx_from_torch(loaded, d / "net.onnx", input_shape=(1, 3, 64, 64), simplify=False).passed
    assert onnx_from_torch(loaded, d / "static.onnx", input_shape=(1, 3, 64, 64), dynamic=False, simplify=False).passed
    sal = load_model("tests.fixtures.user_models:tiny_segmenter", options={"num_classes": 1}, task="saliency")
    assert onnx_from_torch(sal, d / "sal.onnx", input_shape=(1, 3, 64, 64), simplify=False).passed
    data = (d / "net.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (d / "empty.onnx").write_bytes(b"")
    (d / "empty.pt").write_bytes(b"")
    (d / "text.onnx").write_text("not a model\n")
    (d / "folder.onnx").mkdir()
    onnx.save(onnx.load(str(d / "net.onnx")), str(d / "datagone.onnx"), save_as_external_data=True,
              location="datagone.data", size_threshold=0)
    (d / "datagone.data").unlink()
    _external_data_fixtures(d)
    (d / "afile").write_text("a regular file\n")
    zero = onnx.load(str(d / "net.onnx"))
    zero.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0
    onnx.save(zero, str(d / "zerodim.onnx"))
    node = onnx.helper.make_node("Frob", ["input"], ["out"], domain="com.example")
    tensor = onnx.helper.make_tensor_value_info
    onnx.save(onnx.helper.make_model(
        onnx.helper.make_graph([node], "g", [tensor("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                               [tensor("out", onnx.TensorProto.FLOAT, [1, 3, 8, 8])]),
        opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)]),
        str(d / "unknownop.onnx"))
    for name in ("existing.onnx", "existing.md", "existing.json"):
        (d / name).write_bytes(b"an output from before\n")
    (d / "existing_repo").mkdir()
    (d / "existing_repo" / "keep.txt").write_text("from before\n")
    _save_npz(d / "rank3.npz", x=np.zeros((2, 3, 64), np.float32))
    _save_npz(d / "int64.npz", x=np.zeros((2, 3, 64, 64), np.int64))
    _save_npz(d / "norows.npz", x=np.zeros((0, 3, 64, 64), np.float32))
    _save_npz(d / "channels1.npz", x=np.zeros((2, 1, 64, 64), np.float32))
    _save_npz(d / "small.npz", x=np.zeros((2, 3, 32, 48), np.float32))
    _save_npz(d / "two.npz", x=np.zeros((2, 3, 64, 64), np.float32), y=np.zeros((2, 3, 64, 64), np.float32))
    _save_npz(d / "nan.npz", x=np.full((2, 3, 64, 64), np.nan, np.float32))
    _save_npz(d / "objects.npz", x=np.array([np.zeros((3, 64, 64)), "a"], dtype=object))
    inf = np.zeros((2, 3, 64, 64), np.float32)
    inf[1, 0, 0, 0] = np.inf
    np.save(d / "inf.npy", inf)
    whole = (d / "channels1.npz").read_bytes()
    (d / "truncated.npz").write_bytes(whole[: len(whole) // 3])
    (d / "bad.json").write_text("{not json")
    (d / "empty.json").write_text("")
    (d / "other.json").write_text('{"results": 3}')
    _baseline_fixtures(d)
    (d / "empty_dir").mkdir()
    for folder in ("images", "labels", "labels_partial", "labels_rgb"):
        (d / folder).mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "images" / f"{name}.png")
        Image.fromarray(np.zeros((64, 64), np.uint8), mode="L").save(d / "labels" / f"{name}.png")
        Image.new("RGB", (64, 64)).save(d / "labels_rgb" / f"{name}.png")
    shutil.copy(d / "labels" / "a.png", d / "labels_partial" / "a.png")
    for kind in ("fifo", "device"):
        shutil.copytree(d / "images", d / f"images_{kind}")
    os.mkfifo(d / "images_fifo" / "x.png")
    (d / "images_device" / "x.png").symlink_to("/dev/zero")
    _checkpoint_fixtures(d)
    _hostile_fixtures(d)
    _graph_fixtures(d)
    return d


def _external_data_fixtures(d: Path) -> None:
    """Models whose weights are almost right: a data file cut short, a folder or a device in its place, a
    location outside the model's folder, a tensor whose float_data holds fewer values than its shape."""
    for name in ("datashort", "datafolder", "datadevice", "dataoutside"):  # saving moves the model's tensors out
        onnx.save(onnx.load(str(d / "net.onnx")), str(d / f"{name}.onnx"), save_as_external_data=True,
                  location=f"{name}.data", size_threshold=0)
    data = d / "datashort.data"
    data.write_bytes(data.read_bytes()[:100])
    (d / "datafolder.data").unlink()
    (d / "datafolder.data").mkdir()
    (d / "datadevice.data").unlink()
    (d / "datadevice.data").symlink_to("/dev/zero")
    outside = onnx.load(str(d / "dataoutside.onnx"), load_external_data=False)
    for tensor in outside.graph.initializer:
        for entry in tensor.external_data:
            entry.value = "../dataoutside.data" if entry.key == "location" else entry.value
    onnx.save(outside, str(d / "dataoutside.onnx"))
    model = onnx.load(str(d / "net.onnx"))
    weight = next(t for t in model.graph.initializer if list(t.dims) == [8, 8, 3, 3])
    values = onnx.numpy_helper.to_array(weight).ravel()[:3].tolist()
    weight.ClearField("raw_data")
    weight.float_data.extend(values)
    onnx.save(model, str(d / "floatshort.onnx"))


def _baseline_fixtures(d: Path) -> None:
    """`bench -o` JSON files edited by hand: a sample that is not a number, versions that are not an object."""
    from deploykit.bench.run import BenchReport

    sample = {"target": "net.onnx", "backend": "onnxruntime", "precision": "fp32", "batch": 1,
              "input_shape": [1, 3, 64, 64], "mode": "", "throughput_qps": 1.0, "images_per_s": 1.0,
              "walltime_s": 1.0, "warmup_iterations": 0, "distinct_inputs": 1, "threads": 1,
              "latency": {k: 1.0 for k in ("count", "min", "mean", "median", "p90", "p95", "p99", "max", "std")},
              "samples_ms": [1.0, 1.0, 1.0]}
    report = BenchReport.from_dict({"results": [sample], "environment": {"versions": {}}}).to_dict()
    (d / "edited_samples.json").write_text(json.dumps(
        {**report, "results": [{**sample, "samples_ms": [1.0, "net.onnx"]}]}))
    (d / "edited_versions.json").write_text(json.dumps({**report, "environment": {"versions": ["onnx"]}}))


def _graph_fixtures(d: Path) -> None:
    """ONNX files that parse but no runtime can load, or that take no image tensor."""
    from onnx import TensorProto, helper

    def save(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[onnx.ValueInfoProto], opset: int = 17) -> None:
        model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs),
                                  opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.save(model, str(d / f"{name}.onnx"))

    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "h", "w"])
    relu = helper.make_node("Relu", ["input"], ["output"])
    save("opset99", [relu], [image], [out], opset=99)
    save("dangling", [helper.make_node("Add", ["input", "nowhere"], ["output"])], [image], [out])
    save("unmade", [helper.make_node("Relu", ["input"], ["other"])], [image], [out])
    save("noinputs", [helper.make_node("Constant", [], ["output"], value=onnx.numpy_helper.from_array(
        np.zeros((1, 3, 4, 4), np.float32)))], [], [out])
    save("nooutputs", [relu], [image], [])
    save("madetwice", [relu, helper.make_node("Neg", ["output"], ["output"])], [image], [out])
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32))
    save("oddsizes", [helper.make_node("MaxPool", ["input"], ["half"], kernel_shape=[2, 2], strides=[2, 2]),
                      helper.make_node("Constant", [], ["scales"], value=scales),
                      helper.make_node("Resize", ["half", "", "scales"], ["up"], mode="nearest"),
                      helper.make_node("Add", ["up", "input"], ["output"])], [image], [out])  # even sizes only
    built = CliRunner().invoke(cli, ["build-engine", str(d / "oddsizes.onnx"), "--backend", "openvino", "-o",
                                     str(d / "oddsizes.xml")])  # the test extra has OpenVINO
    assert built.exit_code == 0, built.output
    xml, weights = (d / "oddsizes.xml").read_bytes(), (d / "oddsizes.bin").read_bytes()
    (d / "cutbin.xml").write_bytes(xml)  # weights cut short, as by a copy that stopped
    (d / "cutbin.bin").write_bytes(weights[: len(weights) // 3])
    (d / "cutxml.xml").write_bytes(xml[: len(xml) // 2])
    (d / "cutxml.bin").write_bytes(weights)
    kernel = onnx.numpy_helper.from_array(np.ones((3, 3, 5, 5), np.float32), "kernel")
    model = helper.make_model(helper.make_graph([helper.make_node("Conv", ["input", "kernel"], ["output"])],
                                                "bigkernel", [image], [out], [kernel]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(d / "bigkernel.onnx"))  # sides of at least 5
    verified = ModelMetadata(model=USER, task="segmentation", num_classes=3, preprocessing=IMAGENET,
                             input_size=(64, 64), input_names=("input",), output_names=("output",))
    write_metadata(model, verified)
    onnx.save(model, str(d / "bigkernel_meta.onnx"))
    write_metadata(model, replace(verified, model="unet", options={"padded": True, "width": 0.125}))
    onnx.save(model, str(d / "unet_meta.onnx"))  # its metadata says U-Net: the rule is the spec's
    np.save(d / "four.npy", np.zeros((2, 3, 4, 4), np.float32))
    bias = helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["n", 3, "h", "w"])
    save("twoinputs", [helper.make_node("Add", ["input", "bias"], ["output"])], [image, bias], [out])
    save("twooutputs", [relu, helper.make_node("Neg", ["input"], ["negated"])], [image],
         [out, helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    text = helper.make_tensor_value_info("input", TensorProto.STRING, [1])
    save("strings", [helper.make_node("Identity", ["input"], ["output"])], [text],
         [helper.make_tensor_value_info("output", TensorProto.STRING, [1])])


def _checkpoint_fixtures(d: Path) -> None:
    """Checkpoints that need more than weights_only allows, or hold no fitting weights."""
    from tests.fixtures import user_models

    weights = user_models.tiny_segmenter().state_dict()
    for folder in ("hf", "sharded"):  # Hugging Face's layouts: one file beside config.json, or shards and an index
        (d / folder).mkdir()
        (d / folder / "config.json").write_text("{}")
    save_file(weights, d / "hf" / "model.safetensors")
    torch.save(weights, d / "hf" / "pytorch_model.bin")
    save_file(weights, d / "sharded" / "model-00001-of-00001.safetensors")
    (d / "sharded" / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    score = np.float64(0.5)  # as training scripts keep their best mIoU: allowed
    torch.save({"state_dict": weights, "best": score, "stop": user_models.Halt("x")}, d / "ckpt_unsafe.pth")
    torch.save({"model": user_models.tiny_segmenter(), "best": score}, d / "ckpt_whole.pth")
    torch.save({"best_pred": score, "epoch": 3}, d / "ckpt_scores.pth")
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(2, 3, 3, 3)}}, d / "ckpt_other.pth")
    torch.save({"state_dict": weights, "stop": user_models.Halt("x")}, d / "ckpt_missing.pth")
    _rename_global(d / "ckpt_missing.pth", b"Halt", b"Gone")  # a class the code here does not have
    torch.save({"state_dict": weights, "config": user_models.RaisingState()}, d / "ckpt_raises.pth")
    torch.jit.save(torch.jit.script(user_models.tiny_segmenter()), d / "scripted.pt")
    np.savez(d / "weights.npz", **{k: v.numpy() for k, v in weights.items()})
    torch.save({k: torch.empty_like(v, device="meta") for k, v in weights.items()}, d / "ckpt_meta.pth")
    torch.save(user_models.tiny_segmenter(num_classes=5).state_dict(), d / "ckpt_5.pth")
    torch.save({"generator": weights, "discriminator": weights}, d / "ckpt_gan.pth")


def _rename_global(path: Path, old: bytes, new: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for info, data in entries:
            out.writestr(info, data.replace(old, new) if info.filename.endswith("data.pkl") else data)


def _hostile_fixtures(d: Path) -> None:
    """Links to inputs, artifacts whose sidecars do not belong to them, images PIL cannot read as they are, masks
    of the wrong size or classes (issue 18, items 1, 2 and 4)."""
    import torch

    from deploykit.build import build_artifact
    from deploykit.io.sidecar import sidecar_path
    from deploykit.precision.table import PRECISIONS
    from tests.io.test_images import bomb_png

    (d / "link.onnx").symlink_to(d / "net.onnx")
    (d / "nowhere.onnx").symlink_to(d / "gone.onnx")
    os.link(d / "net.onnx", d / "hard.onnx")
    (d / "dirlink").symlink_to(d)
    shutil.copy(d / "net.onnx", d / "m.fp16.onnx")
    torch.save(load_model(USER).module.state_dict(), d / "w.pt")
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in
                load_model(USER).module.state_dict().items()}, d / "nan.pt")
    (d / "wlink.pt").symlink_to(d / "w.pt")
    art = build_artifact(d / "net.onnx", d / "art.ort.onnx").path
    other = build_artifact(d / "net.onnx", d / "other.fp16.ort.onnx", precision=PRECISIONS["fp16"]).path
    sidecar = json.loads(sidecar_path(art).read_text())
    for name, text in {"swapped": sidecar_path(other).read_text(), "newer": json.dumps({**sidecar, "schema": 2}),
                       "garbled": "{not json", "listed": "[1, 2]", "blank": "",
                       "truthy": json.dumps({**sidecar, "schema": True}),
                       "elsewhere": json.dumps({**sidecar, "backend": "openvino"}),
                       "unhashed": json.dumps({k: v for k, v in sidecar.items() if k != "artifact_sha256"})}.items():
        shutil.copy(art, d / f"{name}.ort.onnx")
        sidecar_path(d / f"{name}.ort.onnx").write_text(text)
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    for folder in ("bomb", "animated", "badname", "floats", "ints", "truncated", "emptypng", "labels_small",
                   "labels_class9", "labels_bomb", "labels_animated"):
        (d / folder).mkdir()
    bomb_png(d / "bomb" / "a.png")
    frames[0].save(d / "animated" / "a.gif", save_all=True, append_images=frames[1:])
    frames[0].save(os.fsencode(d / "badname") + b"/\xff.png")
    Image.fromarray(rng.standard_normal((64, 64)).astype(np.float32), mode="F").save(d / "floats" / "a.tif")
    Image.fromarray(rng.integers(0, 1 << 20, (64, 64)).astype(np.int32), mode="I").save(d / "ints" / "a.tif")
    frames[0].save(d / "truncated" / "a.png")
    (d / "truncated" / "a.png").write_bytes((d / "truncated" / "a.png").read_bytes()[:200])
    (d / "emptypng" / "a.png").write_bytes(b"")
    for name in ("a", "b"):
        Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(d / "labels_small" / f"{name}.png")
        Image.fromarray(np.full((64, 64), 9, np.uint8), mode="L").save(d / "labels_class9" / f"{name}.png")
        shutil.copy(d / "labels" / f"{name}.png", d / "labels_animated" / f"{name}.png")
        shutil.copy(d / "labels" / f"{name}.png", d / "labels_bomb" / f"{name}.png")
    bomb_png(d / "labels_bomb" / "a.png")
    masks = [Image.fromarray(np.zeros((64, 64), np.uint8), mode="L") for _ in range(2)]
    masks[0].save(d / "labels_animated" / "a.png", save_all=True, append_images=masks[1:])


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots`, with a digest of each file's bytes."""
    found: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return found


def test_the_table_is_large_and_names_each_case_once() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.args[0] for c in CASES} >= {
        "export",
        "build-engine",
        "parity",
        "bench",
        "deploy",
        "package",
        "lint",
        "models",
    }


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    bad: Case, fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own, scratch = tmp_path / "case", tmp_path / "tmp"
    own.mkdir()
    scratch.mkdir()
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(own / "cache"))  # a calibration cache counts as a write
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(own)
    args = [a.format(d=fixtures, t=own, r=REPO, n=fixtures.name) for a in bad.args]
    before = _snapshot(fixtures, own)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("…", "warning:"))
    ]
    assert len(problems) == 1, result.stderr
    assert problems[0].startswith("deploykit: error: "), problems[0]
    assert bad.says in problems[0], problems[0]
    assert _snapshot(fixtures, own) == before
    assert not [p for p in os.listdir("/proc") if p.startswith(".x.onnx") or p.startswith(".deploykit")]
    assert not [p.name for p in scratch.iterdir() if p.name not in THIRD_PARTY_TMP]  # nothing left in $TMPDIR
