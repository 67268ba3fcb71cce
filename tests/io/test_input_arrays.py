"""Input arrays (.npy/.npz) that are almost right, read by calibration (--calib-data) and parity (--inputs) alike:
one reader (deploykit.io.images.load_inputs), so each file gives both the same arrays or the same one-line
InputError that says how to save the file. The two readers used to differ: an .npy saved under an .npz name
(np.save keeps the name it is given) crashed calibration with a TypeError (exit 3) while parity read it, and an
object array's numpy message said nothing of what to do."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.calib.data import calibration_data
from deploykit.errors import DeployKitError
from deploykit.io.images import read_npz

SHAPE = (2, 3, 8, 8)


def _npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


INPUTS = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
FILES = {
    "npz": _npz(input=INPUTS),
    "npy": _npy(INPUTS),
    "object-npz": _npz(input=np.array([INPUTS, "x"], dtype=object)),
    "object-npy": _npy(np.array([INPUTS, "x"], dtype=object), allow_pickle=True),
    "two-arrays": _npz(a=INPUTS, b=INPUTS),
    "other-name": _npz(pixels=INPUTS),
    "big-endian": _npy(INPUTS.astype(">f4")),
    "empty-npz": _npz(),
}


def _read(path: Path) -> tuple[str, object]:
    """("arrays", the rows) or ("error", its message), through calibration and through parity."""
    outcomes = []
    for read in (lambda: [np.asarray(r) for r in calibration_data(path, input_shape=None, preprocessing=None)],
                 lambda: read_npz(path, "input")):
        try:
            outcomes.append(("arrays", read()))
        except DeployKitError as exc:
            outcomes.append(("error", str(exc).replace("calibration data", "input file")))
    calibration, parity = outcomes
    assert calibration[0] == parity[0], (calibration, parity)
    if calibration[0] == "arrays":
        assert all(np.array_equal(a, b) for a, b in zip(calibration[1], parity[1], strict=True))  # type: ignore[call-overload]
    return calibration


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(FILES)), suffix=st.sampled_from((".npz", ".npy")),
       cut=st.one_of(st.none(), st.integers(0, 400)))
def test_calibration_and_parity_read_an_array_file_alike(kind: str, suffix: str, cut: int | None,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("arrays") / f"x{suffix}"
    data = FILES[kind]
    path.write_bytes(data if cut is None else data[:cut])
    outcome, value = _read(path)
    if outcome == "error":
        assert "\n" not in str(value)
        assert "np.save" in str(value) or "keep just one" in str(value) or "holds no inputs" in str(value), value
    elif kind in ("npz", "npy", "big-endian", "other-name") and cut is None:
        assert outcome == "arrays"
