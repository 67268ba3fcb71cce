"""The files a watched block reads (deploykit.io.reads): what it opens for reading, the user's only, named
relative to the user's code folder, and checked again later."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
from pathlib import Path

import pytest

import deploykit
from deploykit.io.reads import ReadSet, recording, user_files


def test_a_block_records_the_users_files_it_reads_and_nothing_it_writes(tmp_path: Path) -> None:
    config, log = tmp_path / "config.json", tmp_path / "log.txt"
    config.write_text("{}")
    with recording() as seen:
        json.loads(config.read_text())
        os.close(os.open(config, os.O_RDONLY))
        log.write_text("written, not read")
        Path(json.__file__).read_text()  # the standard library's
        Path(deploykit.__file__).read_text()  # deploykit's own
        Path("/proc/self/status").read_text()
    assert user_files(seen) == [config.resolve()]
    command = Path(sysconfig.get_paths()["scripts"]) / "deploykit"  # the running command is __main__'s __file__
    assert user_files([str(command)]) == []
    with recording() as later:
        pass
    assert not later  # the hook records only inside a block


def test_bytecode_stands_for_its_source(tmp_path: Path) -> None:
    source = tmp_path / "helper.py"
    source.write_text("X = 1\n")
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert user_files([str(cached)]) == [source.resolve()]


def test_a_read_set_names_files_in_the_code_folder_relatively_and_sees_them_change(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere.json"
    project.mkdir()
    (project / "config.json").write_text('{"bias": 0.5}')
    elsewhere.write_text('{"bias": 0.5}')
    reads = ReadSet(project)
    with reads.watch():
        (project / "config.json").read_text()
        elsewhere.read_text()
    assert {"config.json", str(elsewhere.resolve())} <= set(reads.digests)
    assert not [name for name in reads.digests if "site-packages" in name or "/deploykit/" in name]
    assert reads.changed(reads.digests) is None
    moved = project.rename(tmp_path / "moved")
    assert ReadSet(moved).changed(reads.digests) is None  # a moved project is checked where it is now
    (moved / "config.json").rename(moved / "gone.json")
    assert ReadSet(moved).changed(reads.digests) == "config.json"
    (moved / "gone.json").rename(moved / "config.json")
    stat = elsewhere.stat()
    elsewhere.write_text('{"bias": 0.7}')  # its size and time kept
    os.utime(elsewhere, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ReadSet(moved).changed(reads.digests) == str(elsewhere.resolve())


def test_a_module_imported_before_the_watch_is_among_its_reads(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding a package.module:factory imports its parent packages before the model is built: a package
    installed in editable mode elsewhere that one of them imports is opened before the watch, not in it."""
    (tmp_path / "editable_helper.py").write_text("SHIFT = 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("editable_helper")
    reads = ReadSet(tmp_path / "project")
    with reads.watch():
        pass
    assert str((tmp_path / "editable_helper.py").resolve()) in reads.digests
    sys.modules.pop("editable_helper")
