"""The errors deploykit raises on purpose. Each message says what was wrong and how to fix it.

The CLI turns every DeployKitError into one line on stderr and exit status 2; anything else is a bug.
"""


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
