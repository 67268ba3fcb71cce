"""The errors deploykit raises on purpose. Each message says what was wrong and how to fix it.

The CLI turns every DeployKitError into one line on stderr and exit status 2; anything else is a bug.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DeployKitError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in deploykit."""


class UnknownModel(DeployKitError):
    """A model name that is neither registered nor an importable `package.module:factory`."""


class BackendUnavailable(DeployKitError):
    """A backend (TensorRT, a GPU, an optional package) that this machine cannot provide."""


class ExportError(DeployKitError):
    """torch -> ONNX export failed or the exported model does not match PyTorch."""


class CheckpointError(DeployKitError):
    """A checkpoint that cannot be read or does not fit the model."""


class BuildError(DeployKitError):
    """Building an engine or optimized model failed."""


class CalibrationError(DeployKitError):
    """Calibration data is missing, unreadable or unsuitable."""


class ParityError(DeployKitError):
    """Outputs that cannot be compared (missing outputs, shape mismatch)."""


class ConfigConflict(DeployKitError):
    """Options that contradict each other or the model."""


class InputError(DeployKitError):
    """A file, shape or value given on the command line that is unusable."""


class OutputExists(DeployKitError):
    """An output that exists already; pass --force to overwrite it."""


class PluginError(DeployKitError):
    """A package's deploykit entry point (a backend, precision or metric) that cannot be loaded or clashes."""


class UserCodeError(DeployKitError):
    """The user's own code (a factory, a model's forward) raised: reported with its first line and the user's
    file and line, since the traceback is theirs to fix, not a bug in deploykit."""

    @classmethod
    def from_exception(cls, what: str, exc: BaseException) -> UserCodeError:
        """`what` is e.g. "your factory pkg.mod:make"; the location is the deepest frame outside deploykit
        and torch (the user's line, or the library they call), else the deepest frame."""
        where = raised_at(exc)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        location = f" ({where[0]}:{where[1]})" if where is not None else ""
        if isinstance(exc, SyntaxError) and exc.filename:  # raised by the compiler: no frame of the user's
            location = f" ({exc.filename}:{exc.lineno})"
            first = exc.msg
        said = f": {first}" if first else ""  # sys.exit() says nothing
        return cls(f"{what} raised {type(exc).__name__}{said}{location}")


def raised_at(exc: BaseException) -> tuple[str, int] | None:
    """(file, line) of the deepest traceback frame outside deploykit and torch, else of the deepest frame
    (None without a traceback)."""
    import torch

    ours = tuple(str(Path(p).resolve().parent) + "/" for p in (__file__, torch.__file__))
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [f for f in frames if not str(Path(f.filename).resolve()).startswith(ours)
              and not f.filename.startswith("<frozen")]
    where = (theirs or frames)[-1:]
    return (where[0].filename, where[0].lineno or 0) if where else None


# What a user's code may raise that is not theirs to answer for: an interrupt (Ctrl-C; a signal handler that
# stops a run raises KeyboardInterrupt or a subclass of it) and a generator being closed.
NOT_THEIRS = (KeyboardInterrupt, GeneratorExit, DeployKitError)


@contextmanager
def users_code(what: str) -> Iterator[None]:
    """Run code the user wrote (their factory, their model's forward, their checkpoint's unpickling): whatever
    it raises, any Exception, SystemExit (`sys.exit(3)` in a forward) or other BaseException but
    KeyboardInterrupt, is theirs: a UserCodeError naming `what`, their file and line (exit 2)."""
    try:
        yield
    except NOT_THEIRS:
        raise
    except BaseException as exc:
        raise UserCodeError.from_exception(what, exc) from exc
