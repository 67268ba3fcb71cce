"""A rerun of deploy sees an edited user model: the code of a package.module:factory is an input of the
export, parity and bench steps (zoo.sources.user_code_fingerprint), so a changed forward is exported again, not
reported against the stale ONNX."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import onnx
import onnx.numpy_helper
import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.zoo.sources import user_code_fingerprint

MODEL = '''import torch
from torch import nn


def make() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.{act}(), nn.Conv2d(4, 3, 1))
'''


def _package(root: Path, act: str) -> Path:
    (root / "userpkg" / "models").mkdir(parents=True, exist_ok=True)
    (root / "userpkg" / "__init__.py").write_text("")
    (root / "userpkg" / "models" / "__init__.py").write_text("")
    (root / "userpkg" / "models" / "net.py").write_text(MODEL.format(act=act))
    return root / "userpkg" / "models" / "net.py"


def _forget_userpkg() -> None:
    """What a new process would do: import the user's package afresh."""
    for name in [n for n in sys.modules if n == "userpkg" or n.startswith("userpkg.")]:
        del sys.modules[name]


def test_the_fingerprint_follows_every_file_of_the_users_package(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "ReLU")
    first = user_code_fingerprint("userpkg.models.net:make")
    (tmp_path / "userpkg" / "layers.py").write_text("WIDTH = 4\n")  # another file of the package
    assert first is not None and user_code_fingerprint("userpkg.models.net:make") != first
    assert user_code_fingerprint("deeplabv3plus_mobilenetv2") is None
    _forget_userpkg()


@pytest.mark.parametrize("imported", ["layers.py", "blocks/conv.py"])
def test_the_fingerprint_of_a_module_in_no_package_follows_its_folder(tmp_path: Path, imported: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """model.py in no package was hashed alone: the layers.py or blocks/ package beside it that it imports
    (`from layers import head`) was edited and a resumed deploy kept the old export, parity and bench."""
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "__init__.py").write_text("")
    for name in ("solo_model.py", "layers.py", "blocks/conv.py"):
        (tmp_path / name).write_text("WIDTH = 4\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = user_code_fingerprint("solo_model:make")
    (tmp_path / imported).write_text("WIDTH = 8\n")
    assert first is not None and user_code_fingerprint("solo_model:make") != first


def test_a_moved_project_keeps_its_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files were hashed with their absolute names: a project folder moved or copied redid every step."""
    prints = []
    for where in ("here", "there"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "moved_model.py").write_text("WIDTH = 4\n")
        monkeypatch.syspath_prepend(str(tmp_path / where))
        prints.append(user_code_fingerprint("moved_model:make"))
    assert prints[0] is not None and prints[0] == prints[1]


def test_an_edited_forward_is_exported_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _package(tmp_path, "ReLU")
    out = tmp_path / "out"
    args = ["deploy", "userpkg.models.net:make", "--input-shape", "1,3,16,16", "--precisions", "fp32",
            "--backend", "onnxruntime", "--bench-seconds", "0.2", "--threads", "1", "--out", str(out), "--json"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    module.write_text(MODEL.format(act="Sigmoid"))
    _forget_userpkg()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    steps = {s["name"]: s["skipped"] for s in json.loads(again.stdout)["steps"]}
    assert not steps["export"] and not steps["parity"] and not steps["bench"]
    assert [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node] == ["Conv", "Sigmoid", "Conv"]
    _forget_userpkg()


READING = '''import json
from pathlib import Path

import torch
from torch import nn


def make(extra: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    with torch.no_grad():
        model[2].bias.fill_(json.loads((Path(__file__).parent / "config.json").read_text())["bias"])
        model[0].bias.fill_(json.loads(Path(extra).read_text())["bias"])
    return model
'''


def test_a_file_the_factory_reads_is_an_input_of_its_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config the factory reads beside it, or at a path given as an option, was in no step's key: edited (here
    with its size and time kept), a resumed deploy skipped export, parity and bench on the old model (exit 0)
    where a fresh run builds the new one."""
    project, extra = tmp_path / "project", tmp_path / "extra.json"
    project.mkdir()
    (project / "reading_model.py").write_text(READING)
    for config in (project / "config.json", extra):
        config.write_text('{"bias": 0.5}')
    monkeypatch.syspath_prepend(str(project))
    out = tmp_path / "out"
    args = ["deploy", "reading_model:make", "--set", f"extra='{extra}'", "--input-shape", "1,3,16,16",
            "--precisions", "fp32", "--backend", "onnxruntime", "--bench-seconds", "0.2", "--threads", "1",
            "--out", str(out), "--json"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    for config, edited in ((project / "config.json", "2.bias"), (extra, "0.bias")):
        stat = config.stat()
        config.write_text('{"bias": 0.7}')
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        again = CliRunner().invoke(cli, args)
        assert again.exit_code == 0, again.output
        steps = {s["name"]: s["skipped"] for s in json.loads(again.stdout)["steps"]}
        assert not steps["export"] and not steps["parity"] and not steps["bench"]
        assert f"{config.name if config.parent == project else config}, which building the model read, changed" \
            in again.stderr
        biases = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out / "model.onnx")).graph.initializer}
        assert biases[edited] == pytest.approx(0.7)
    sys.modules.pop("reading_model", None)


def test_the_task_of_a_user_model_is_the_one_given(tmp_path: Path) -> None:
    """deploy --task saliency judged a one-channel user model as segmentation (the option was parsed, then
    dropped): its report showed pixel agreement and mIoU of an argmax over one channel, always 1. A rerun with
    another --task redoes the steps."""
    args = ["deploy", "tests.fixtures.user_models:tiny_segmenter", "--set", "num_classes=1", "--input-shape",
            "1,3,16,16", "--precisions", "fp32", "--backend", "onnxruntime", "--bench-seconds", "0.05",
            "--threads", "1", "--out", str(tmp_path / "out"), "--json"]
    found = CliRunner().invoke(cli, [*args, "--task", "saliency"])
    assert found.exit_code == 0, found.output
    summary = json.loads(found.stdout)
    assert summary["parity"]["task"] == "saliency" and "cc" in summary["verdict"]["task_metrics"]
    again = CliRunner().invoke(cli, [*args, "--task", "segmentation"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["parity"]["task"] == "segmentation"
    assert not any(s["skipped"] for s in json.loads(again.stdout)["steps"])
