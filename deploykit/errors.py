"""The errors deploykit raises on purpose, and the exit status each outcome has (`OUTCOMES`).

Each message says what was wrong and how to fix it. The CLI turns every DeployKitError into one line on stderr
and exit status 2 (bad input), a CheckFailed into one line and exit status 1 (the work ran; a check failed),
a signal that ends it into 128 + its number after cleanup (`SIGNALLED`: 129 SIGHUP, 130 SIGINT, 131 SIGQUIT, 143
SIGTERM), and anything else into exit status 3 (a bug).
"""

from __future__ import annotations

import importlib
import signal
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """How a command ended, as scripts see it: the exit status and the name `--json` output carries."""

    name: str
    exit_status: int
    meaning: str

    def record(self) -> dict[str, object]:
        """The fields every `--json` document carries."""
        return {"outcome": self.name, "exit_status": self.exit_status}


DONE = Outcome("done", 0, "done (deploy: its verdict ships an artifact)")
CHECK_FAILED = Outcome("check-failed", 1, "a check failed: a parity gate, an accuracy budget, --require-precision, "
                                          "a deploy with nothing to ship or without its --require precision, "
                                          "an export beyond tolerance, a lint error")
BAD_INPUT = Outcome("bad-input", 2, "bad input: one line says what was wrong and how to fix it; nothing written")
BUG = Outcome("bug", 3, "a bug in deploykit: rerun with --debug for the traceback and report it")
INTERRUPTED = Outcome("interrupted", 128 + signal.SIGINT, "interrupted by SIGINT (Ctrl-C), after cleanup")
TERMINATED = Outcome("terminated", 128 + signal.SIGTERM, "terminated by SIGTERM, after cleanup")
HUNG_UP = Outcome("hung-up", 128 + signal.SIGHUP, "hung up by SIGHUP (its terminal or SSH session closed), after "
                                                   "cleanup")
QUIT = Outcome("quit", 128 + signal.SIGQUIT, "quit by SIGQUIT (Ctrl-\\), after cleanup (no core dump)")
# The signals deploykit ends on through the same cleanup as Ctrl-C (deploykit.io.signals), by their default
# action each would end it where it stands: SIGHUP when a terminal or SSH session closes, SIGQUIT with a core dump.
SIGNALLED: dict[int, Outcome] = {signal.SIGHUP: HUNG_UP, signal.SIGINT: INTERRUPTED, signal.SIGQUIT: QUIT,
                                 signal.SIGTERM: TERMINATED}
OUTCOMES = {o.name: o for o in (DONE, CHECK_FAILED, BAD_INPUT, BUG, *SIGNALLED.values())}


class CheckFailed(Exception):
    """The work ran and a check failed: a parity gate, an accuracy budget, --require-precision, a deploy that
    ships nothing (or not its --require precision). Not bad input: the inputs were usable, the result is not
    good enough. The message is the one-line summary; the command has printed the details."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP, SIGQUIT: `signum`), raised where SIGINT raises KeyboardInterrupt, so the same cleanup
    runs (deploykit.io.signals)."""

    def __init__(self, *args: object, signum: int = signal.SIGTERM) -> None:
        super().__init__(*args)
        self.signum = signum


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


class DiskFull(DeployKitError):
    """The disk (or quota) filled while writing: the message names the path, the free space and what is needed;
    nothing half-written is left."""


class UserCodeError(DeployKitError):
    """The user's own code (a factory, a model's forward) raised: reported with its first line and the user's
    file and line, since the traceback is theirs to fix, not a bug in deploykit."""

    @classmethod
    def from_exception(cls, what: str, exc: BaseException) -> UserCodeError:
        """`what` is e.g. "your factory pkg.mod:make"; the location is the deepest frame outside deploykit
        and torch (the user's line, or the library they call), else the deepest frame."""
        where = raised_at(exc)
        first = first_line(exc, 300, default="")
        location = f" ({where[0]}:{where[1]})" if where is not None else ""
        if isinstance(exc, SyntaxError) and exc.filename:  # raised by the compiler: no frame of the user's
            location = f" ({exc.filename}:{exc.lineno})"
            first = exc.msg
        said = f": {first}" if first else ""  # sys.exit() says nothing
        return cls(f"{what} raised {type(exc).__name__}{said}{location}")


def size_text(size: float) -> str:
    """A size as a message says it: GB or MB, or kB or bytes where MB would round it to 0.0."""
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB" if size < 1e13 else f"{size / 1e9:.3g} GB"  # not 300 digits of 1e300
    if size >= 50_000:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.1f} kB" if size >= 1000 else f"{int(size)} bytes"


def a_or_an(noun: str) -> str:
    """`noun` with its indefinite article, as messages name a kind: "an int", "a tuple"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def first_line(exc: BaseException, limit: int = 300, *, default: str | None = None) -> str:
    """The first line of `exc`'s message, at most `limit` characters; `default` (else the exception's type name)
    when it says nothing. Never raises: a user's exception whose __str__ raises says so instead."""
    try:
        text = str(exc)
    except Exception as broken:  # whatever a user's __str__ raises
        text = f"(its message cannot be shown: __str__ raised {type(broken).__name__})"
    lines = text.strip().splitlines()
    return (lines[0] if lines else (type(exc).__name__ if default is None else default))[:limit]


# How allocators say that memory ran out: Python's MemoryError, NumPy's "Unable to allocate", PyTorch's CPU
# allocator (a RuntimeError), ONNX Runtime's BFCArena.
OUT_OF_MEMORY_TEXTS = ("Unable to allocate", "can't allocate memory", "Cannot allocate memory",
                       "Failed to allocate memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or what caused it, is an allocation that failed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError) or any(t in first_line(current, 10_000) for t in OUT_OF_MEMORY_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def broken_dependency(exc: BaseException) -> str | None:
    """The package a failed import names when the failure is the environment's, not deploykit's: a package
    deploykit needs (torch, onnx, onnxruntime ...) missing or broken here (a wheel without its shared library).
    None for any other exception, and for an import of deploykit's own modules, which is a bug."""
    if not isinstance(exc, ImportError):
        return None
    if exc.name:
        package = exc.name.split(".")[0]
        return None if package == __package__ else package
    ours = str(Path(__file__).resolve().parent) + "/"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if not frames or str(Path(frames[-1].filename).resolve()).startswith(ours):
        return None
    parts = Path(frames[-1].filename).parts  # .../site-packages/torch/__init__.py -> torch
    return parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else None


def not_installed(exc: ImportError, module: str) -> bool:
    """Whether importing `module` failed because the package is absent, so that `pip install` is the fix. An
    installed package that fails to import (its shared library missing: "libnvinfer.so.10: cannot open shared
    object file"; its native submodule or a dependency of its own missing) raises ImportError too, and is
    broken, not missing."""
    return isinstance(exc, ModuleNotFoundError) and exc.name == module


def optional_import(module: str, needs: str, install: str, distribution: str | None = None) -> Any:
    """Import a package of an optional extra: when it is absent, BackendUnavailable says "`needs` needs it:
    `install`"; when it is installed but fails to import (a dependency of its own or a native part missing),
    it says what failed and to reinstall `distribution` (the pip name; default the package's)."""
    package = module.partition(".")[0]
    try:
        importlib.import_module(package)  # first: sys.modules may hold the submodule of a package marked absent
        return importlib.import_module(module)
    except ImportError as exc:
        if not_installed(exc, package):
            raise BackendUnavailable(f"{needs} needs {package}: {install}") from exc
        raise BackendUnavailable(f"{needs} needs {package}, which is installed but fails to import "
                                 f"({first_line(exc)}); reinstall it: pip install --force-reinstall "
                                 f"{distribution or package}") from exc


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


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) while a command runs: raised by deploykit's handler (`raise_interrupted`, put in place by
    deploykit.io.signals), so that it is told from a KeyboardInterrupt a user's code raises itself."""


def raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(f"interrupted by signal {signum}")


def not_theirs(exc: BaseException) -> bool:
    """Whether `exc`, raised while a user's code ran, is not theirs to answer for: deploykit's own errors and an
    interrupt. While deploykit's handlers are in place (a command) Ctrl-C raises Interrupted and SIGTERM
    Terminated, so a bare KeyboardInterrupt is the user's code's own (exit 2, their line); without them (a
    library caller), every KeyboardInterrupt is taken for Ctrl-C. No block of user code holds a `yield`, so a
    GeneratorExit raised inside one is the user's own, like any other exception."""
    if isinstance(exc, (DeployKitError, Interrupted, Terminated)):
        return True
    return isinstance(exc, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is not raise_interrupted


@contextmanager
def users_code(what: str) -> Iterator[None]:
    """Run code the user wrote (their factory, their model's forward, their checkpoint's unpickling): whatever
    it raises, any Exception, SystemExit (`sys.exit(3)` in a forward), GeneratorExit or other BaseException but
    an interrupt (`not_theirs`), is theirs: a UserCodeError naming `what`, their file and line (exit 2)."""
    try:
        yield
    except BaseException as exc:
        if not_theirs(exc):
            raise
        raise UserCodeError.from_exception(what, exc) from exc
