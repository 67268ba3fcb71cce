from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.io.reads import ReadSet
from deploykit.pipeline.steps import StepRecord, inputs_key


def test_inputs_key_hashes_file_content(tmp_path: Path) -> None:
    file = tmp_path / "a.bin"
    file.write_bytes(b"one")
    first = inputs_key({"model": file, "precision": "int8"})
    assert first == inputs_key({"precision": "int8", "model": file})
    file.write_bytes(b"two")
    assert inputs_key({"model": file, "precision": "int8"}) != first
    assert inputs_key({"model": file, "precision": "fp16"}) != inputs_key({"model": file, "precision": "int8"})


def test_step_reruns_only_when_inputs_or_outputs_change(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    calls: list[str] = []

    def action() -> str:
        calls.append("ran")
        out.write_text("result")
        return "fresh"

    def run(inputs: dict[str, object]) -> bool:
        return StepRecord(tmp_path).run("build", inputs, [out], action, lambda: "cached").skipped

    assert run({"precision": "int8"}) is False
    assert run({"precision": "int8"}) is True  # a new StepRecord reads the saved record
    assert run({"precision": "fp16"}) is False
    out.write_text("tampered")
    assert run({"precision": "fp16"}) is False
    out.unlink()
    assert run({"precision": "fp16"}) is False
    assert len(calls) == 4


def test_failed_step_is_not_recorded_as_fresh(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    record = StepRecord(tmp_path)
    record.run("s", {"a": 1}, [out], lambda: out.write_text("x"), lambda: None)

    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        StepRecord(tmp_path).run("s", {"a": 2}, [out], fail, lambda: None)
    assert StepRecord(tmp_path).run("s", {"a": 1}, [out], lambda: "again", lambda: "cached").skipped is False


@pytest.mark.parametrize("record", ['[]', 'null', '"x"', '{"s": 1}', '{"s": {"outputs": {}}}',
                                    '{"s": {"key": "KEY", "outputs": []}}', '{"s": {"key": "KEY", "outputs": "o"}}',
                                    '{"s": {"key": "KEY", "outputs": {"o": 1}}}',
                                    '{"s": {"key": "KEY", "outputs": {}, "reads": ["config.json"]}}'])
def test_an_edited_record_means_not_done(tmp_path: Path, record: str) -> None:
    """Valid JSON of another shape in the record (edited, or another tool's) was an AttributeError, exit 3."""
    (tmp_path / "o").write_text("x")
    (tmp_path / ".deploykit-steps.json").write_text(record.replace("KEY", inputs_key({"a": 1})))
    assert StepRecord(tmp_path).run("s", {"a": 1}, [], lambda: "ran", lambda: "cached").result == "ran"
    assert StepRecord(tmp_path).run("s", {"a": 1}, [], lambda: "ran", lambda: "cached").result == "cached"


def test_prune_removes_only_files_the_record_names_in_its_folder(tmp_path: Path) -> None:
    """prune deletes what earlier runs' steps wrote and this run's do not claim; an edited record naming a path
    outside the folder removes nothing there."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("kept.txt", "dropped.txt", "mine.txt"):
        (out / name).write_text(name)
    (tmp_path / "victim.txt").write_text("x")
    (out / ".deploykit-steps.json").write_text(
        '{"a": {"key": "k", "outputs": {"kept.txt": "d"}}, "b": {"key": "k", "outputs": {"dropped.txt": "d", '
        '"../victim.txt": "d"}}, "c": {"key": "k"}}')
    StepRecord(out).prune(["a", "c"])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["kept.txt", "mine.txt"]
    assert (tmp_path / "victim.txt").is_file()
    assert set(StepRecord(out).entries) == {"a", "c"}


def test_a_step_reruns_when_a_file_its_action_read_changed(tmp_path: Path) -> None:
    """What an action reads beyond its inputs is known once it ran: the record keeps those files' digests and a
    rerun digests them again before it skips, and says which changed."""
    config = tmp_path / "config.json"
    config.write_text("1")

    def run() -> tuple[bool, str | None]:
        reads = ReadSet(tmp_path)

        def action() -> str:
            with reads.watch():
                return config.read_text()

        outcome = StepRecord(tmp_path).run("export", {"a": 1}, [], action, lambda: "cached", reads)
        return outcome.skipped, outcome.changed_read

    assert run() == (False, None)
    assert run() == (True, None)
    config.write_text("2")
    assert run() == (False, "config.json")
    assert run() == (True, None)
