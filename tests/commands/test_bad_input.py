"""Bad input across every command (issue 12, item 5): each case exits 2 with one line saying what was wrong,
prints no traceback, writes nothing (no partial file, no leftover temporary), and leaves an existing output
byte for byte.

"Unwritable" is made so that it holds as root too (root writes read-only folders): a path under /proc, where
nothing can be created, or a path whose parent is a regular file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deploykit.cli import cli
from deploykit.export import onnx_from_torch
from deploykit.zoo.sources import load_model

FIXTURES = "tests.fixtures.user_models"
USER = f"{FIXTURES}:tiny_segmenter"
PROC = "folder /proc is not writable (nothing can be created there)"
ZOO = "deeplabv3plus_mobilenetv2"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {d}: the fixture folder, {t}: this case's own empty folder
    says: str  # a fragment of the one error line


def case(id: str, says: str, words: str) -> Case:
    """A case from its command line as one string (no argument holds a space); {USER}, {ZOO} name models,
    {F} the user-model fixtures module."""
    words = words.replace("{USER}", USER).replace("{ZOO}", ZOO).replace("{F}", FIXTURES)
    return Case(id, tuple(words.split()), says)


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
    case("export-weights-empty", "not a file saved with torch.save",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/empty.pt -o {t}/x.onnx"),
    case("export-weights-garbage", "not a file saved with torch.save",
         "export {USER} --input-shape 1,3,64,64 --weights {d}/text.onnx -o {t}/x.onnx"),
    case("export-set-malformed", "KEY=VALUE", "export {USER} --input-shape 1,3,64,64 --set width -o {t}/x.onnx"),
    case("export-set-unknown-option", "rejected options {'depth': 3}",
         "export {USER} --input-shape 1,3,64,64 --set depth=3 -o {t}/x.onnx"),
    case("export-user-model-without-shape", "--input-shape", "export {USER} -o {t}/x.onnx"),
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
    case("build-calib-npz-two-arrays", "keep exactly one",
         "build-engine {d}/net.onnx --int8 --calib-data {d}/two.npz -o {t}/x.onnx"),
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
    case("build-calib-cache-under-proc", PROC,
         "build-engine {d}/net.onnx --int8 --calib-data photos --calib-cache /proc/c.json -o {t}/x.onnx"),
    case("build-calib-cache-parent-is-a-file", "is a file, not a folder",
         "build-engine {d}/net.onnx --int8 --calib-data photos --calib-cache {d}/afile/c.json -o {t}/x.onnx"),
    case("build-trt-option-on-onnxruntime", "do not apply to --backend onnxruntime",
         "build-engine {d}/net.onnx --backend onnxruntime --workspace 64 -o {t}/x.onnx"),
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
    case("parity-inputs-npz-wrong-rank", "expected N,C,H,W", "parity {USER} {d}/net.onnx --inputs {d}/rank3.npz"),
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
    # bench
    case("bench-compare-not-json", "is not a JSON file",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/bad.json"),
    case("bench-compare-empty", "is not a JSON file",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/empty.json"),
    case("bench-compare-other-json", "other.json is not a deploykit bench JSON",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/other.json"),
    case("bench-compare-binary", "is not a JSON file",
         "bench {d}/net.onnx --iterations 2 --no-roofline --compare {d}/int64.npz"),
    case("bench-batch-malformed", "integers", "bench {d}/net.onnx --batch 1,x"),
    case("bench-duration-and-iterations", "not both", "bench {d}/net.onnx --duration 1 --iterations 3"),
    case("bench-out-under-proc", PROC,
         "bench {d}/net.onnx --iterations 2 --no-roofline -o /proc/b.json"),
    case("bench-out-exists", "exists already", "bench {d}/net.onnx --iterations 2 -o {d}/existing.json"),
    case("bench-forward-raises", "raising_model (on input 1x3x32x32) raised ValueError",
         "bench tests.fixtures.user_models:raising_model --input-shape 1,3,32,32 --iterations 2 --no-roofline"),
    case("bench-kernels-out-under-proc", PROC, "bench kernels --quick --no-plots -o /proc/k.json"),
    case("bench-target-missing", "does not exist", "bench {t}/none.onnx --iterations 2 --no-roofline"),
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
    case("deploy-calib-npz-int64", "holds int64 values", "deploy {USER} --out {t}/out --calib-data {d}/int64.npz"),
    case("deploy-labels-without-images", "give --inputs DIR", "deploy {USER} --out {t}/out --labels {d}/labels"),
    # package
    case("package-more-names-than-artifacts", "2 --name values for 1 artifact",
         "package --triton {d}/net.onnx --name a --name b --out {t}/repo"),
    case("package-artifact-missing", "does not exist", "package --triton {t}/none.onnx --out {t}/repo"),
    case("package-artifact-empty", "holds no ONNX graph", "package --triton {d}/empty.onnx --out {t}/repo"),
    case("package-out-under-proc", PROC, "package --triton {d}/net.onnx --out /proc/repo"),
    case("package-out-parent-is-a-file", "is a file", "package --triton {d}/net.onnx --out {d}/afile/repo"),
    case("package-out-exists", "exists already", "package --triton {d}/net.onnx --out {d}/existing_repo"),
    # lint
    case("lint-model-missing", "does not exist", "lint {t}/none.onnx"),
    case("lint-model-not-onnx", "is not a readable ONNX model", "lint {d}/text.onnx"),
    case("lint-model-empty", "holds no ONNX graph", "lint {d}/empty.onnx"),
    # models
    case("models-unknown", "unknown model", "models no_such_model"),
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
    case("parity-weights-unsafe-global", "--trust-checkpoint",
         "parity {USER} {d}/net.onnx --weights {d}/ckpt_unsafe.pth --random 1 --input-shape 1,3,64,64"),
    case("bench-weights-unsafe-global", "--trust-checkpoint",
         "bench {USER} --weights {d}/ckpt_unsafe.pth --input-shape 1,3,64,64 --iterations 2"),
    case("deploy-weights-unsafe-global", "--trust-checkpoint",
         "deploy {USER} --weights {d}/ckpt_unsafe.pth --input-shape 1,3,64,64 --out {t}/out"),
    case("export-head-convs-with-decoder", "head_convs=1 is for DeepLabv3",
         "export {ZOO} --set head_convs=1 --input-shape 1,3,65,65 -o {t}/x.onnx"),
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
    (d / "afile").write_text("a regular file\n")
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
    whole = (d / "channels1.npz").read_bytes()
    (d / "truncated.npz").write_bytes(whole[: len(whole) // 3])
    (d / "bad.json").write_text("{not json")
    (d / "empty.json").write_text("")
    (d / "other.json").write_text('{"results": 3}')
    (d / "empty_dir").mkdir()
    for folder in ("images", "labels", "labels_partial", "labels_rgb"):
        (d / folder).mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "images" / f"{name}.png")
        Image.fromarray(np.zeros((64, 64), np.uint8), mode="L").save(d / "labels" / f"{name}.png")
        Image.new("RGB", (64, 64)).save(d / "labels_rgb" / f"{name}.png")
    shutil.copy(d / "labels" / "a.png", d / "labels_partial" / "a.png")
    _checkpoint_fixtures(d)
    return d


def _checkpoint_fixtures(d: Path) -> None:
    """Checkpoints that need more than weights_only allows, or hold no fitting weights."""
    from tests.fixtures import user_models

    weights = user_models.tiny_segmenter().state_dict()
    score = np.float64(0.5)  # as training scripts keep their best mIoU: allowed
    torch.save({"state_dict": weights, "best": score, "stop": user_models.Halt("x")}, d / "ckpt_unsafe.pth")
    torch.save({"model": user_models.tiny_segmenter(), "best": score}, d / "ckpt_whole.pth")
    torch.save({"best_pred": score, "epoch": 3}, d / "ckpt_scores.pth")
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(2, 3, 3, 3)}}, d / "ckpt_other.pth")
    torch.save({"state_dict": weights, "stop": user_models.Halt("x")}, d / "ckpt_missing.pth")
    _rename_global(d / "ckpt_missing.pth", b"Halt", b"Gone")  # a class the code here does not have
    torch.save({"state_dict": weights, "config": user_models.RaisingState()}, d / "ckpt_raises.pth")


def _rename_global(path: Path, old: bytes, new: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for info, data in entries:
            out.writestr(info, data.replace(old, new) if info.filename.endswith("data.pkl") else data)


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots`, with a digest of each file's bytes."""
    found: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return found


def test_the_table_is_large_and_names_each_case_once() -> None:
    assert len(CASES) >= 40
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
    own = tmp_path / "case"
    own.mkdir()
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(own / "cache"))  # a calibration cache counts as a write
    monkeypatch.chdir(own)
    args = [a.format(d=fixtures, t=own) for a in bad.args]
    before = _snapshot(fixtures, own)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("…", "Usage:", "Try ", "warning:"))
    ]
    assert len(problems) == 1, result.stderr
    assert problems[0].startswith(("deploykit: error: ", "Error: ")), problems[0]
    assert bad.says in problems[0], problems[0]
    assert _snapshot(fixtures, own) == before
    assert not [p for p in os.listdir("/proc") if p.startswith(".x.onnx") or p.startswith(".deploykit")]
