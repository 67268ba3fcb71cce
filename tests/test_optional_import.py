"""deploykit.errors.optional_import: an optional extra's package that is absent is "pip install" it; one that is
installed but fails to import is "reinstall" it, with what failed (advice to install what is installed was given
for matplotlib, scikit-image, tritonclient, aiohttp and grpcio)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deploykit.errors import BackendUnavailable, optional_import


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on sys.path for fake packages; the names they take are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("dk_broken", "dk_broken.sub", "dk_fine"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_an_absent_package_says_how_to_install_it(packages: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"^plots needs dk_absent: pip install 'deploykit\[plots\]'$"):
        optional_import("dk_absent.pyplot", "plots", "pip install 'deploykit[plots]'")


def test_an_installed_package_that_fails_to_import_says_what_failed_and_to_reinstall(packages: Path) -> None:
    (packages / "dk_broken").mkdir()
    (packages / "dk_broken" / "__init__.py").write_text("import dk_its_own_dependency_missing\n")
    with pytest.raises(BackendUnavailable) as refused:
        optional_import("dk_broken", "binary requests", "pip install 'deploykit[triton]'", "dk-broken[all]")
    message = str(refused.value)
    assert "installed but fails to import" in message and "dk_its_own_dependency_missing" in message, message
    assert message.endswith("reinstall it: pip install --force-reinstall dk-broken[all]"), message


def test_a_missing_submodule_of_an_installed_package_is_broken_not_absent(packages: Path) -> None:
    (packages / "dk_broken").mkdir()
    (packages / "dk_broken" / "__init__.py").write_text("")
    with pytest.raises(BackendUnavailable, match="installed but fails to import"):
        optional_import("dk_broken.sub", "plots", "pip install 'deploykit[plots]'")


def test_a_package_that_imports_is_returned(packages: Path) -> None:
    (packages / "dk_fine").mkdir()
    (packages / "dk_fine" / "__init__.py").write_text("VALUE = 7\n")
    assert optional_import("dk_fine", "x", "y").VALUE == 7


def test_the_sample_photographs_without_scikit_image_say_to_install_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from deploykit.io.images import sample_photographs

    def absent(name: str) -> None:  # what Python raises for `import skimage.data` without scikit-image
        raise ModuleNotFoundError("No module named 'skimage'", name="skimage")

    monkeypatch.setattr("deploykit.errors.importlib.import_module", absent)
    with pytest.raises(BackendUnavailable, match=r"photographs needs skimage: pip install 'deploykit\[images\]'"):
        sample_photographs()
