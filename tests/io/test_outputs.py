"""Outputs are written atomically and never overwrite without force."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from deploykit.errors import InputError, OutputExists
from deploykit.io.digests import sha256_file
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import atomic_output, write_json


def test_an_existing_output_needs_force(tmp_path: Path) -> None:
    out = write_json(tmp_path / "a.json", {"x": 1}, force=False)
    with pytest.raises(OutputExists, match="--force"):
        write_json(out, {"x": 2}, force=False)
    write_json(out, {"x": 2}, force=True)
    assert json.loads(out.read_text()) == {"x": 2}


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_output(out, force=False) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the exporter crashed")
    assert list(tmp_path.iterdir()) == []


def test_outputs_into_a_missing_folder_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "m.onnx", force=False)
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path, force=True)


def test_sha256_names_the_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert sha256_file(a) == sha256_file(b) and len(sha256_file(a)) == 64


def test_a_killed_runs_temporary_files_go_and_nothing_else(tmp_path: Path) -> None:
    """SIGKILL leaves temporary names carrying the dead process's id: the next write into the folder removes
    them, keeps a running process's, and never touches a user's file that only looks alike."""
    from deploykit.io.outputs import write_text

    dead = _dead_pid()
    stale = [tmp_path / f".out.onnx.{dead}.ab12cd_3.part", tmp_path / f".deploykit-stage.{dead}.zz99yy88"]
    stale[0].write_bytes(b"half")
    stale[1].mkdir()
    (stale[1] / "net.onnx").write_bytes(b"staged")
    kept = [tmp_path / f".out.onnx.{os.getppid()}.ab12cd_3.part",
            tmp_path / f"deploykit-report-{dead}.abcdefgh", tmp_path / f".notes.{dead}.part"]
    for path in kept:
        path.write_bytes(b"keep")
    write_text(tmp_path / "new.txt", "x", force=False)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"keep" for p in kept)


def test_a_set_killed_between_its_renames_lands_whole_on_the_next_write(tmp_path: Path) -> None:
    from deploykit.io.output_checks import check_output_path
    from deploykit.io.temporaries import COMMITTING

    stage = tmp_path / f".deploykit-stage.{_dead_pid()}.abcdefgh"
    stage.mkdir()
    (stage / COMMITTING).touch()
    (stage / "a.onnx.deploykit.json").write_text("{}")
    (tmp_path / "a.onnx").write_bytes(b"landed before the kill")
    check_output_path(tmp_path / "other.json", force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "a.onnx.deploykit.json"]


def _dead_pid() -> int:
    """A process id that no process has now: a child that has exited and been waited for."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_full_disk_in_a_stage_names_the_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It named the stage ("cannot write OUT (OUT/.deploykit-stage.PID.RANDOM has 0 bytes free"), a hidden folder
    gone by the time the user reads it (deploy into a full tmpfs)."""
    from deploykit.errors import DiskFull
    from deploykit.io.outputs import staged
    from tests.io.faults import full_disk_at_write

    with full_disk_at_write(1, monkeypatch, tmp_path), pytest.raises(DiskFull) as caught, \
            staged(tmp_path, force=False) as stage:
        stage.path(tmp_path / "net.onnx").write_bytes(b"x")
    assert f"({tmp_path} has " in str(caught.value) and ".deploykit-stage" not in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["character device", "named pipe"])
def test_a_device_or_pipe_in_the_outputs_place_is_refused_not_replaced(tmp_path: Path, kind: str) -> None:
    """`-o /dev/null --force` renamed an ONNX file over /dev/null (as root): a node is never replaced."""
    out = tmp_path / "sink"
    if kind == "named pipe":
        os.mkfifo(out)
    else:
        try:
            os.mknod(out, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("making a device node needs root")
    before = os.lstat(out)
    for force in (False, True):
        with pytest.raises(InputError, match=f"is a {kind}, not a file: .* give a file path"), \
                atomic_output(out, force=force) as tmp:
            tmp.write_bytes(b"onnx")
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sink"]


def test_a_file_rewritten_with_its_size_and_time_kept_gets_its_new_digest(tmp_path: Path) -> None:
    """The digest cache was keyed by inode, size and modification time: a file rewritten in place with those kept
    (cp -p or rsync -a over it, os.utime) kept its old digest for the rest of the process."""
    file = tmp_path / "config.json"
    file.write_text('{"bias": 0.5}')
    stat, before = file.stat(), sha256_file(file)
    file.write_text('{"bias": 0.7}')
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sha256_file(file) != before


def test_a_staged_files_digest_is_carried_where_it_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename and a chmod set the status-change time, which is in the digest's key: a built artifact hashed
    in its stage is not hashed again where it lands."""
    from deploykit.io import digests
    from deploykit.io.outputs import staged

    with staged(tmp_path, force=False) as stage:
        artifact = stage.path(tmp_path / "model.onnx")
        artifact.write_bytes(b"graph")
        digest = sha256_file(artifact)
    monkeypatch.setattr(digests.hashlib, "sha256", None)  # any hashing now fails
    assert sha256_file(tmp_path / "model.onnx") == digest
