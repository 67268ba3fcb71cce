"""Where the calibration cache lives: the variables that place it, and the ones that must not."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploykit.calib.cache import cache_dir


@pytest.mark.parametrize(("home", "xdg"), [("", ""), ("relative/home", "relative/cache"), (None, None)])
def test_an_empty_or_relative_home_or_xdg_cache_home_is_taken_as_unset(monkeypatch: pytest.MonkeyPatch,
                                                                          home: str | None, xdg: str | None) -> None:
    """HOME="" made the cache /.cache/deploykit (written as root, silently skipped otherwise); the XDG spec ignores a
    relative XDG_CACHE_HOME."""
    import pwd

    monkeypatch.delenv("DEPLOYKIT_CACHE_DIR", raising=False)
    for name, value in (("HOME", home), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert cache_dir() == Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "deploykit"
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/me")
    assert cache_dir() == Path("/var/cache/me/deploykit")


@given(home=st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=12)),
       xdg=st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=12)))
def test_the_cache_is_an_absolute_folder_whatever_home_and_xdg_cache_home_hold(home: str | None,
                                                                                xdg: str | None) -> None:
    """A generated HOME / XDG_CACHE_HOME (empty, relative, '~', spaces): the cache never lands relative to the
    folder deploykit runs in."""
    with mock.patch.dict(os.environ):  # restored after each example
        for name, value in {"HOME": home, "XDG_CACHE_HOME": xdg, "DEPLOYKIT_CACHE_DIR": None}.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        assert cache_dir().is_absolute() and cache_dir().name == "deploykit"
