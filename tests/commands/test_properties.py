"""Property-based tests of the bad-input contract (issue 18, item 8), with hypothesis choosing the inputs:
arbitrary bytes as an ONNX model, an image, an .npz, a sidecar or a label mask; arbitrary values for every
numeric option, inside and outside its range; output paths that reach an input through links and relative
forms. For every generated case: the exit status, exactly one line on stderr, no traceback, the fixture folder
byte for byte as it was, and nothing left in the output folder or $TMPDIR.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deploykit.cli import cli
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.zoo.sources import load_model
from tests.commands.test_option_ranges import BASE, NUMERIC, commands
from tests.io.faults import THIRD_PARTY_TMP

USER = "tests.fixtures.user_models:tiny_segmenter"
SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deploykit.build import build_artifact

    d = tmp_path_factory.mktemp("properties")
    assert onnx_from_torch(load_model(USER), d / "net.onnx", input_shape=(1, 3, 64, 64), simplify=False).passed
    build_artifact(d / "net.onnx", d / "art.ort.onnx")
    (d / "images").mkdir()
    (d / "labels").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(d / "images" / f"{name}.png")
        Image.fromarray(np.zeros((64, 64), np.uint8), mode="L").save(d / "labels" / f"{name}.png")
    return d


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


class Run:
    """One generated case: its own output folder and $TMPDIR, and the contract checked after the command."""

    def __init__(self, root: Path, fixtures: Path) -> None:
        self.out, self.tmp, self.fixtures = Path(tempfile.mkdtemp(dir=root)), Path(tempfile.mkdtemp(dir=root)), fixtures
        self.before = _snapshot(fixtures)

    def invoke(self, args: list[str]) -> Result:
        previous = tempfile.tempdir
        tempfile.tempdir = str(self.tmp)
        os.environ["TMPDIR"] = str(self.tmp)
        try:
            return CliRunner().invoke(cli, args)
        finally:
            tempfile.tempdir = previous

    def check(self, result: Result, status: int, says: str = "") -> None:
        assert result.exit_code == status, (result.exit_code, result.output)
        assert "Traceback" not in result.output
        problems = [line for line in result.stderr.splitlines()
                    if line.strip() and not line.startswith(("…", "warning:"))]
        if status == 0:
            assert not problems, problems
        else:
            assert len(problems) == 1, result.stderr
            assert problems[0].startswith("deploykit: error: "), problems[0]
            assert says in problems[0], (says, problems[0])
        assert _snapshot(self.fixtures) == self.before
        assert not [p for p in self.out.rglob("*") if p.name.startswith(".")]
        assert not [p for p in self.tmp.iterdir() if p.name not in THIRD_PARTY_TMP]


@pytest.fixture
def run(fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield lambda: Run(tmp_path, fixtures)
    os.environ.pop("TMPDIR", None)


# -- arbitrary file contents ----------------------------------------------------------------------------------

CONTENT = st.one_of(st.binary(max_size=2048), st.just(b""), st.text(max_size=200).map(str.encode),
                    st.sampled_from([b"\x08\x07\x12\x04test", b"PK\x03\x04", b"\x89PNG\r\n\x1a\n", b"{}", b"[1]",
                                     b'{"schema": 1}']))


@SETTINGS
@given(data=CONTENT)
def test_arbitrary_bytes_as_an_onnx_model(data: bytes, run: Any) -> None:
    case = run()
    model = case.out.parent / f"{case.out.name}.onnx"
    model.write_bytes(data)
    for args in (["build-engine", str(model), "-o", str(case.out / "x.onnx")], ["lint", str(model)],
                 ["parity", USER, str(model), "--random", "1", "--input-shape", "1,3,32,32"]):
        case.check(case.invoke(args), 2)
        assert model.read_bytes() == data


@SETTINGS
@given(data=CONTENT, suffix=st.sampled_from([".png", ".jpg", ".tif", ".gif", ".bmp"]))
def test_arbitrary_bytes_as_a_calibration_image(data: bytes, suffix: str, run: Any) -> None:
    case = run()
    folder = case.out.parent / f"{case.out.name}-images"
    folder.mkdir()
    (folder / f"a{suffix}").write_bytes(data)
    result = case.invoke(["build-engine", str(case.fixtures / "net.onnx"), "--int8", "--calib-data", str(folder),
                          "--no-calib-cache", "-o", str(case.out / "x.int8.ort.onnx")])
    case.check(result, 2)


@SETTINGS
@given(data=CONTENT)
def test_arbitrary_bytes_as_an_npz(data: bytes, run: Any) -> None:
    case = run()
    arrays = case.out.parent / f"{case.out.name}.npz"
    arrays.write_bytes(data)
    case.check(case.invoke(["build-engine", str(case.fixtures / "net.onnx"), "--int8", "--calib-data", str(arrays),
                            "-o", str(case.out / "x.int8.ort.onnx")]), 2)
    case.check(case.invoke(["parity", USER, str(case.fixtures / "net.onnx"), "--inputs", str(arrays)]), 2)


@SETTINGS
@given(data=CONTENT)
def test_arbitrary_bytes_as_a_sidecar(data: bytes, run: Any) -> None:
    case = run()
    artifact = case.out.parent / f"{case.out.name}.ort.onnx"
    shutil.copyfile(case.fixtures / "art.ort.onnx", artifact)
    Path(str(artifact) + ".deploykit.json").write_bytes(data)
    case.check(case.invoke(["bench", str(artifact), "--iterations", "1", "--no-roofline"]), 2)
    case.check(case.invoke(["package", "--triton", str(artifact), "--out", str(case.out / "repo")]), 2)


@SETTINGS
@given(data=CONTENT)
def test_arbitrary_bytes_as_a_label_mask(data: bytes, run: Any) -> None:
    case = run()
    labels = case.out.parent / f"{case.out.name}-labels"
    shutil.copytree(case.fixtures / "labels", labels)
    (labels / "a.png").write_bytes(data)
    result = case.invoke(["parity", USER, str(case.fixtures / "net.onnx"), "--inputs",
                          str(case.fixtures / "images"), "--labels", str(labels)])
    case.check(result, 2)


PROPS = ("task", "num_classes", "preprocessing", "input_size", "input_names", "output_names", "options", "versions")
PROP_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(
    ["null", "{}", "[]", "-1", "[0, 0]", "[64]", '"x"', '{"mean": [0.5], "std": [0.5]}', "saliency", "segmentation"]))


@SETTINGS
@given(key=st.sampled_from(PROPS), value=PROP_VALUES)
def test_arbitrary_text_as_a_metadata_prop(key: str, value: str, run: Any) -> None:
    """An ONNX file whose deploykit.* metadata was edited: either it still holds what export writes and the
    commands run, or it is refused in one line naming the prop (it was int('L') or a KeyError deep inside)."""
    import onnx

    case = run()
    model = onnx.load(str(case.fixtures / "net.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, f"deploykit.{key}": value})
    edited = case.out.parent / f"{case.out.name}.onnx"
    onnx.save(model, str(edited))
    for args in (["parity", str(case.fixtures / "net.onnx"), str(edited), "--random", "1"],
                 ["bench", str(edited), "--iterations", "1", "--no-roofline"],
                 ["build-engine", str(edited), "--fp16", "-o", str(case.out / "x.fp16.ort.onnx")]):
        result = case.invoke(args)
        assert result.exit_code in (0, 2), (args[0], result.exit_code, result.output)
        case.check(result, result.exit_code, f"deploykit.{key}" if result.exit_code else "")
        shutil.rmtree(case.out)
        case.out.mkdir()


# -- arbitrary option values ----------------------------------------------------------------------------------


def _inside(kind: click.types._NumberRangeBase, value: float) -> bool:
    if not math.isfinite(value):
        return False
    low_ok = kind.min is None or (value > kind.min if kind.min_open else value >= kind.min)
    high_ok = kind.max is None or (value < kind.max if kind.max_open else value <= kind.max)
    return low_ok and high_ok


def _value(option: click.Option) -> st.SearchStrategy[str]:
    if isinstance(option.type, click.types.IntParamType):
        numbers: st.SearchStrategy[Any] = st.integers(min_value=-(1 << 40), max_value=1 << 40)
    else:
        numbers = st.floats(allow_nan=True, allow_infinity=True, width=64)
    words = st.sampled_from(["", "x", "1e", "--", "0x10", "1,2", "½"])
    return st.one_of(numbers.map(repr), words)


@settings(SETTINGS, max_examples=300)  # cheap: nothing runs but click's parsing
@given(data=st.data())
def test_arbitrary_values_of_every_numeric_option(data: st.DataObject, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value inside the range reaches the command as that number; anything else is refused while parsing,
    naming the option, and nothing runs."""
    command, option = data.draw(st.sampled_from(NUMERIC), label="option")
    text = data.draw(_value(option), label="value")
    seen: list[object] = []
    target = next(c for name, c in commands() if name == command)
    with monkeypatch.context() as patch:
        patch.setattr(target, "callback", lambda **kw: seen.append(kw[option.name]))
        result = CliRunner().invoke(cli, [*command.split(), *BASE[command], option.opts[0], text])
    try:
        number = float(text) if isinstance(option.type, click.types.FloatParamType) else int(text)
    except ValueError:
        number = math.nan
    assert isinstance(option.type, click.types._NumberRangeBase)
    if _inside(option.type, number):
        assert result.exit_code == 0 and seen == [number], (text, result.output)
    else:
        assert result.exit_code == 2 and not seen, (text, result.output)
        assert option.opts[0] in result.stderr and "Traceback" not in result.output
        assert _one_usage_line(result, command), result.stderr


ALL_COMMANDS = list(commands())


def _one_usage_line(result: Result, command: str) -> bool:
    lines = result.stderr.splitlines()
    return len(lines) == 1 and lines[0].startswith("deploykit: error: ") and f" {command} --help`" in lines[0]


@settings(SETTINGS, max_examples=200)  # cheap: nothing runs but click's parsing
@given(data=st.data())
def test_an_argument_list_click_refuses_ends_in_one_line(data: st.DataObject, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever click refuses while parsing (an unknown option, a missing or surplus argument, a value that is
    not a choice or a number, an option without its value) ends with exit 2 and the contract's one line, which
    points at the help of the command it is about; an argument list click takes reaches the command."""
    command, target = data.draw(st.sampled_from(ALL_COMMANDS), label="command")
    names = sorted({name for param in target.params if isinstance(param, click.Option) for name in param.opts
                    if name not in ("--help", "-h", "--version")})
    word = st.one_of(st.sampled_from(names), st.sampled_from(["--nope", "-Z", "x", "", "1", "-1", "a,b", "nan"]),
                     st.text(alphabet="-ab1,.", max_size=4))
    args = data.draw(st.lists(word, max_size=6), label="args")
    ran: list[str] = []
    with monkeypatch.context() as patch:
        patch.setattr(target, "callback", lambda **_kw: ran.append(command))
        result = CliRunner().invoke(cli, [*command.split(), *args])
    if result.exit_code == 2:
        assert not ran and _one_usage_line(result, command), (args, result.stderr)
    else:
        assert result.exit_code == 0 and ran == [command], (args, result.output)


# -- output paths that alias inputs ---------------------------------------------------------------------------


@st.composite
def alias(draw: st.DrawFn, target: Path) -> str:
    """A path that names `target` another way: ./ and ../folder/ detours, doubled slashes, a link to it or to
    its folder, or a hard link."""
    form = draw(st.sampled_from(["plain", "detour", "slashes", "file-link", "folder-link", "hard-link"]))
    folder = target.parent
    if form == "detour":
        hops = draw(st.lists(st.sampled_from(["./", f"../{folder.name}/"]), min_size=1, max_size=3))
        return str(folder) + "/" + "".join(hops) + target.name
    if form == "slashes":
        return str(folder) + "//" + target.name
    if form in ("file-link", "folder-link", "hard-link"):
        links = Path(tempfile.mkdtemp(dir=folder.parent))
        if form == "file-link":
            (links / "l").symlink_to(target)
            return str(links / "l")
        if form == "folder-link":
            (links / "f").symlink_to(folder)
            return str(links / "f" / target.name)
        os.link(target, links / "h")
        return str(links / "h")
    return str(target)


@SETTINGS
@given(data=st.data())
def test_outputs_that_reach_an_input_another_way_are_refused(data: st.DataObject, run: Any) -> None:
    case = run()
    inputs = case.out.parent / f"{case.out.name}-in"
    inputs.mkdir()
    shutil.copyfile(case.fixtures / "net.onnx", inputs / "net.onnx")
    kept = (inputs / "net.onnx").read_bytes()
    where = data.draw(alias(inputs / "net.onnx"), label="output")
    command = data.draw(st.sampled_from([
        ["bench", str(inputs / "net.onnx"), "--iterations", "1", "--no-roofline", "-o", where, "--force"],
        ["parity", USER, str(inputs / "net.onnx"), "--report", where, "--force"],
        ["build-engine", str(inputs / "net.onnx"), "-o", where, "--force"],
    ]), label="command")
    case.check(case.invoke(command), 2, "is the input")
    assert (inputs / "net.onnx").read_bytes() == kept
    folder = data.draw(st.sampled_from([str(inputs), str(inputs) + "/.", str(inputs) + "//"]), label="folder")
    case.check(case.invoke(["package", "--triton", str(inputs / "net.onnx"), "--out", folder, "--force"]), 2,
               "holds the input")
    assert (inputs / "net.onnx").read_bytes() == kept
