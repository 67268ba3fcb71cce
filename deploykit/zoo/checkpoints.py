"""Loading checkpoints: plain state_dicts and the layouts of popular repositories, strictly.

A checkpoint format is a function that takes the loaded object and returns (state_dict, options) where
options are builder options the checkpoint implies (e.g. VainF's one decoder conv). Architecture files
register the formats of the repositories that train them, next to the architecture they map.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from deploykit.errors import CheckpointError, UserCodeError, a_or_an, first_line, users_code
from deploykit.zoo.archives import ZIP, archive_kind, extraction_fix

StateDict = dict[str, torch.Tensor]
FormatFn = Callable[[Any], "Converted | None"]


@dataclass(frozen=True)
class Converted:
    """A checkpoint brought to deploykit's key layout, and the builder options its origin implies."""

    state_dict: StateDict
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "state_dict"
    note: str = ""  # what the checkpoint holds beside the weights taken (EMA weights), for the user to see
    # builder options the layout does not record and the weights do not show (output_stride: the same tensors
    # at 8 and 16), which the model is built with at their default unless the user gives them
    unrecorded: tuple[str, ...] = ()


_FORMATS: dict[str, FormatFn] = {}


def register_checkpoint_format(name: str, fn: FormatFn) -> FormatFn:
    """`fn(obj)` returns Converted when `obj` is in its format (for this model family), else None."""
    if name in _FORMATS:
        raise ValueError(f"checkpoint format {name!r} registered twice")
    _FORMATS[name] = fn
    return fn


def registered_formats() -> tuple[str, ...]:
    """Every registered checkpoint format's name (import deploykit.zoo.models first to register them all)."""
    return tuple(sorted(_FORMATS))


def _numpy_globals() -> list[Any]:
    """NumPy scalars (np.nanmean's float64 score beside the weights), dtypes and arrays. Pickles name the
    reconstructors numpy.core.multiarray.* (NumPy 1) or numpy._core.multiarray.* (NumPy 2): both are allowed,
    so a file saved under either NumPy loads under the other."""
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    allowed: list[Any] = [np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(multiarray, name)
        allowed += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25: one class per dtype, pickled by some versions
    if dtypes is not None:
        allowed += [cls for cls in vars(dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return allowed


# What training scripts keep beside the weights, allowed on top of torch's own weights_only set (tensors,
# containers, OrderedDict, primitive types): these build values and call no code of the file's choosing.
SAFE_GLOBALS: tuple[Any, ...] = (*_numpy_globals(), argparse.Namespace, bytes)  # bytes: an empty array's data
TRUST_HINT = "--trust-checkpoint"


def read_checkpoint(path: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """torch.load with weights_only=True and SAFE_GLOBALS allowed. A torch.save file that needs any other
    global (a class of the training code, a whole pickled model) is refused naming the globals, unless
    `trust`: then it is unpickled in full, which runs code the file names (whatever that code raises is the
    user's: UserCodeError)."""
    file = Path(path)
    if file.is_dir():
        raise CheckpointError(_folder_fix(file))
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    if file.name.endswith(SHARD_INDEX):
        raise CheckpointError(_sharded_fix(file))
    kind = checkpoint_kind(file)
    if kind == "safetensors":
        return _read_safetensors(file)
    if kind != "torch.save":
        fix = _CONVERT.get(kind, "").format(file=file) or extraction_fix(file, kind)
        raise CheckpointError(f"cannot read checkpoint {file}: it is {kind}, not a PyTorch checkpoint; give the "
                              f"{ACCEPTED}{fix}")
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip and runtime errors alike
            needed = _unsafe_globals(file, exc)
            if not needed:
                raise CheckpointError(f"cannot read checkpoint {file}: it starts like a torch.save file but does "
                                      f"not load ({_torch_reason(exc)}); is it complete? give the {ACCEPTED}"
                                      ) from exc
            if not trust:
                raise CheckpointError(
                    f"checkpoint {file} is a torch.save file that also pickles {_list(needed, limit=4)}, which "
                    "loading with weights_only=True refuses (unpickling them runs code the file names); if you "
                    f"trust the file, pass {TRUST_HINT}, or save only the state_dict"
                ) from exc
    return _unpickle_trusted(file)


ACCEPTED = "file torch.save wrote (.pt/.pth/.bin) or a .safetensors file, holding a state_dict"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # safetensors first: it holds no code
SHARD_INDEX = ".index.json"  # Hugging Face's map of a checkpoint split into shards (model.safetensors.index.json)


def _folder_fix(folder: Path) -> str:
    """What to pass instead of a folder (a Hugging Face model folder: config.json beside model.safetensors or
    pytorch_model.bin): its one weights file, named; deploykit does not pick among several."""
    index = sorted(folder.glob(f"*{SHARD_INDEX}"))
    if index:
        return _sharded_fix(index[0])
    files = sorted((p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()),
                   key=lambda p: (WEIGHT_SUFFIXES.index(p.suffix), p.name))
    if not files:
        return (f"--weights {folder} is a folder with no weights file ({', '.join(WEIGHT_SUFFIXES)}) in it; "
                f"pass the {ACCEPTED}")
    named = " or ".join(f"--weights {p}" for p in files[:3])
    return f"--weights {folder} is a folder; pass its weights file: {named}"


def _sharded_fix(index: Path) -> str:
    return (f"{index} maps a checkpoint split into shards, and deploykit reads one file; save it unsharded "
            "(model.save_pretrained(folder, max_shard_size=\"100GB\") writes one model.safetensors) or pass the "
            "state_dict saved as one file")
# How files that are not checkpoints start, to name what was given instead (the common mix-ups).
_OTHER_KINDS = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"\x89HDF", "an HDF5 file (Keras?)"),
                (b"GGUF", "a GGUF file"), (b"\x93NUMPY", "a NumPy .npy array"),
                (b"\x08", "possibly an ONNX model (a protobuf)"))
TORCHSCRIPT = "a TorchScript archive (torch.jit.save)"
NPZ = "a NumPy .npz archive"
# How to turn what was given into a state_dict file, where one line of Python does it
_CONVERT = {
    TORCHSCRIPT: "; save its weights with torch.save(torch.jit.load('{file}').state_dict(), 'weights.pt')",
    NPZ: "; save its arrays as one with torch.save({{k: torch.from_numpy(v) for k, v in "
         "numpy.load('{file}').items()}}, 'weights.pt')",
}


def _zip_kind(file: Path) -> str:
    """What a zip archive holds, by its entries: torch.save's (<name>/data.pkl), a TorchScript archive (it also
    has <name>/constants.pkl and code/), NumPy's .npz (.npy entries) or another kind. A zip that does not open
    (cut short) is taken for torch.save's, whose loading then says it is incomplete."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "torch.save"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return TORCHSCRIPT
    if any(n.endswith("data.pkl") for n in names):
        return "torch.save"
    if names and all(n.endswith(".npy") for n in names):
        return NPZ
    return ZIP


def checkpoint_kind(file: Path) -> str:
    """"torch.save" (a zip archive, or a legacy pickle), "safetensors", or what the file looks like instead,
    from its first bytes: so that a file of another kind is named, not reported as an unpickling error."""
    with open(file, "rb") as handle:
        head = handle.read(16)
    size = file.stat().st_size
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(file)
    if head[:1] == b"\x80":  # pickle protocol 2+: torch.save's legacy layout
        return "torch.save"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    archive = archive_kind(file, head)
    if archive:
        return archive
    if not head:
        return "an empty file"
    for magic, kind in _OTHER_KINDS:
        if head.startswith(magic):
            return kind
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        return "a binary file of an unknown kind"
    return "a text file"


def _read_safetensors(file: Path) -> StateDict:
    """A .safetensors file's tensors (a flat state_dict; the format holds no code)."""
    try:
        return load_file(file, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {file}: a .safetensors file that does not load "
                              f"({first_line(exc, 160)}); is it complete?") from exc


def _torch_reason(exc: Exception) -> str:
    """What torch.load's error says went wrong, without its paragraph on weights_only (which, for a damaged
    file, wrongly suggests that loading it in full would work)."""
    text = str(exc)
    detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


def _unsafe_globals(file: Path, exc: Exception) -> list[str]:
    """The globals a torch.save file needs beyond the allowed ones, the training code's own classes first
    (all of them where torch can list them); [] when the file is no torch.save file at all."""
    named = re.findall(r"GLOBAL (\S+) was not an allowed global", str(exc))
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(file)) or named
    except Exception:  # the legacy (non-zip) layout, which torch cannot scan: the one global the error names,
        # unless the file ends inside that name ("collections.Ordered" of a cut OrderedDict): then it is cut short
        data = file.read_bytes()
        names = [n for n in named if "\n".join(n.rsplit(".", 1)).encode() + b"\n" in data]  # pickle's GLOBAL
    return sorted(names, key=lambda name: name.startswith("torch."))


def _unpickle_trusted(file: Path) -> Any:
    try:
        with users_code(f"unpickling checkpoint {file.name} (--trust-checkpoint)"):
            return torch.load(file, map_location="cpu", weights_only=False)
    except UserCodeError as error:
        cause = error.__cause__
        if isinstance(cause, (ModuleNotFoundError, AttributeError)):  # the code that saved it is not here
            raise CheckpointError(
                f"checkpoint {file} pickles objects of code that is not importable here ({cause}); run from the "
                "folder of the code that saved it (or add it to PYTHONPATH), or save only the state_dict"
            ) from cause
        raise


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "params")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "ema_model", "model_ema_state_dict")


def _is_weight(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray) and value.dtype.kind in "biufc")


def _weights(value: Mapping[Any, Any]) -> StateDict | None:
    """`value` as a state_dict when it maps names to tensors or numeric NumPy arrays (weights converted from
    another framework), else None."""
    if not value or not all(_is_weight(v) for v in value.values()):
        return None
    return {str(k): v if isinstance(v, torch.Tensor) else torch.tensor(v) for k, v in value.items()}


def _state_dict_keys(obj: Mapping[Any, Any]) -> list[Any]:
    """The keys of `obj` under which a state_dict is."""
    return [k for k, v in obj.items() if isinstance(v, Mapping) and _weights(v) is not None]


def _wrapper_key(obj: Any) -> Any:
    """The key a state_dict is wrapped under: a common one (EMA weights when they are the only ones), else the
    one key of any name that holds a state_dict ('network', 'generator' alone); None when there is none or
    several (student and teacher, generator and discriminator), which `no_state_dict` names."""
    if not isinstance(obj, Mapping) or _weights(obj) is not None:
        return None
    known = [k for k in (*WRAPPER_KEYS, *EMA_KEYS) if isinstance(obj.get(k), Mapping)]
    if known:
        return known[0]
    held = _state_dict_keys(obj)
    return held[0] if len(held) == 1 else None


def plain_state_dict(obj: Any) -> StateDict | None:
    """A bare state_dict, or one under a wrapper key (`_wrapper_key`), with DataParallel's `module.` prefix
    removed."""
    key = _wrapper_key(obj)
    state = _weights(obj[key] if key is not None else obj) if isinstance(obj, Mapping) else None
    return None if state is None else {k.removeprefix("module."): v for k, v in state.items()}


def _what(value: Any) -> str:
    if isinstance(value, Mapping) and value and _weights(value) is not None:
        return f"{len(value)} tensors"
    return "None" if value is None else a_or_an(type(value).__name__)


def _held(obj: Any) -> str:
    """What a checkpoint without a state_dict holds: its type, and a mapping's tensors and other entries."""
    if obj is None:
        return "None"
    if not isinstance(obj, Mapping) or not obj:
        return a_or_an(f"{'empty ' * (not obj)}{type(obj).__name__}")
    single = [k for k, v in obj.items() if _is_weight(v)]
    others = [f"{k!r} ({_what(v)})" for k, v in obj.items() if k not in single]
    tensors = f"{len(single)} tensors" + (" and " if others else "") if single else ""
    return a_or_an(f"{type(obj).__name__} of {tensors}{_list(others, 5)}")


def no_state_dict(obj: Any) -> CheckpointError:
    """The error for a checkpoint without one state_dict to take, naming what it holds instead."""
    held = _state_dict_keys(obj) if isinstance(obj, Mapping) else []
    if len(held) > 1:
        return CheckpointError(f"checkpoint holds several state_dicts, under {_list([repr(k) for k in held], 4)}; "
                               f"save the one to deploy alone with torch.save(checkpoint[{held[0]!r}], path) and "
                               "give that file")
    return CheckpointError(f"checkpoint holds no state_dict (a mapping of names to tensors, possibly under "
                           f"'state_dict' or 'model_state'), but {_held(obj)}; save one with "
                           "torch.save(model.state_dict(), path)")


def _modules_as_state_dicts(obj: Any) -> Any:
    """A whole pickled model (torch.save(model), read with --trust-checkpoint) stands for its state_dict, at
    the top level or under a wrapper key."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping) and any(isinstance(v, nn.Module) for v in obj.values()):
        return {k: v.state_dict() if isinstance(v, nn.Module) else v for k, v in obj.items()}
    return obj


def convert_checkpoint(obj: Any, formats: tuple[str, ...]) -> Converted:
    """Try the model's registered formats in order, then a plain state_dict.

    A checkpoint that records its builder options under "options" (deploykit's own, e.g. from
    benchmarks/train_small.py) has them applied whichever layout its keys are in; options a format infers
    from the keys take precedence.
    """
    obj = _modules_as_state_dicts(obj)
    saved = obj.get("options") if isinstance(obj, Mapping) else None
    saved_options = dict(saved) if isinstance(saved, Mapping) else {}
    for name in formats:
        fn = _FORMATS.get(name)
        converted = fn(obj) if fn else None
        if converted is not None:
            return replace(converted, options={**saved_options, **converted.options})
    plain = plain_state_dict(obj)
    if plain is None:
        raise no_state_dict(obj)
    return Converted(plain, options=saved_options, note=_wrapper_note(obj))



def _wrapper_note(obj: Any) -> str:
    """What the user should know of the wrapper the weights were taken from: a key of an uncommon name, or EMA
    weights beside the model's (timm, YOLO-style trainers), which are not taken (the model's are, as most
    evaluation scripts do by default) though they are often the better."""
    key = _wrapper_key(obj)
    if key is None:
        return ""
    if key not in (*WRAPPER_KEYS, *EMA_KEYS):
        return f"the weights under {key!r} taken"
    held = [k for k in EMA_KEYS if isinstance(obj.get(k), Mapping)]
    if key in EMA_KEYS or not held:
        return ""
    return (f"the checkpoint also holds EMA weights under {held[0]!r}, not taken (the model's are); to deploy "
            f"them, save checkpoint[{held[0]!r}] alone with torch.save and give that file")


def _list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass(frozen=True)
class LoadReport:
    source: str
    loaded: int
    left_random: tuple[str, ...]  # parameters the checkpoint did not cover (only with allow_partial)
    note: str = ""  # what was not plain: keys renamed (align_keys), weights beside the ones taken (EMA)


def _compiled(key: str) -> str:
    """`key` without torch.compile's `_orig_mod.` (a compiled model's, or a compiled submodule's)."""
    return key.replace("._orig_mod.", ".").removeprefix("_orig_mod.")


def _prefixes(keys: list[str], depth: int = 2) -> list[str]:
    """The dotted prefixes of the first `depth` components that any of `keys` starts with ("model.", ...)."""
    found = {".".join(k.split(".")[:i]) + "." for k in keys for i in range(1, min(depth, k.count(".")) + 1)}
    return sorted(found, key=len)


def align_keys(state: StateDict, own: list[str]) -> tuple[StateDict, str]:
    """The checkpoint with its keys renamed to the model's by the renaming that fits best, and what was done
    ("" when the keys fit as they are). What wraps a model in training prefixes its keys: torch.compile
    (`_orig_mod.`), a Lightning module (`model.`, `net.`, beside e.g. a loss's own weights, which are then
    left out), a wrapper in the user's factory (the model's keys carry a prefix the checkpoint's lack). A
    renaming that fits exactly is taken; else the one matching the most keys (then the fewest left over), so
    that the mismatch named is the keys that differ: a checkpoint of another architecture, which no renaming
    fits, is named as it is (not by the one prefix whose few keys leave the fewest over, 'classifier.')."""
    own_keys = set(own)
    wanted = {k for k in own if not k.endswith("num_batches_tracked")}

    def score(keys: set[str]) -> tuple[bool, int, int]:
        return wanted <= keys <= own_keys, len(keys & own_keys), -len(keys - own_keys)

    candidates: list[tuple[StateDict, str]] = [(state, "")]
    if any("_orig_mod." in k for k in state):
        state = {_compiled(k): v for k, v in state.items()}
        candidates.append((state, "torch.compile's _orig_mod. removed"))
    compiled = candidates[-1][1]
    for prefix in _prefixes(list(state)):
        under = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        left = sorted(k for k in state if not k.startswith(prefix))
        note = f"the weights under {prefix!r} taken" + (f" (left out: {_list(left, 4)})" if left else "")
        candidates.append((under, "; ".join(n for n in (compiled, note) if n)))
    for prefix in _prefixes(own):
        if all(k.startswith(prefix) for k in own):
            note = f"keys prefixed with the model's {prefix!r}"
            candidates.append(({prefix + k: v for k, v in state.items()}, "; ".join(n for n in (compiled, note) if n)))
    return max(candidates, key=lambda c: score(set(c[0])))  # the first of the best: the checkpoint as it is


# Tensors a checkpoint may hold that load_state_dict cannot copy, or copies into a float parameter losing what
# they are: (test, what they are, how to save them as weights)
_UNUSABLE: tuple[tuple[Callable[[torch.Tensor, torch.Tensor], bool], str, str], ...] = (
    (lambda t, own: t.is_meta and not own.is_meta, "on the meta device (no values)",
     "save the state_dict of a model whose weights are loaded, not one built on the meta device"),
    (lambda t, _own: t.layout != torch.strided, "sparse", "save tensor.to_dense()"),
    (lambda t, _own: t.is_quantized, "quantized", "save the float model's state_dict, or tensor.dequantize()"),
    (lambda t, own: own.is_floating_point() and not t.is_floating_point(), "not floating point where the model's are",
     "save the model's float weights"),
)


def _unusable(state: StateDict, own: Mapping[str, torch.Tensor]) -> list[str]:
    """What makes tensors of the checkpoint unloadable into the model's (meta, sparse, quantized, complex or
    integer weights for float parameters), named with the fix: load_state_dict would raise its own error (a bug
    in deploykit, or blamed on the user's model) or cast them silently."""
    found: list[str] = []
    named: set[str] = set()
    for test, what, fix in _UNUSABLE:  # each tensor named once, for the first thing wrong with it
        keys = sorted(k for k, t in state.items() if k in own and k not in named and test(t, own[k]))
        named.update(keys)
        if keys:
            dtype = f" ({state[keys[0]].dtype})" if "floating" in what else ""
            found.append(f"{what}{dtype}: {_list(keys, 4)} ({fix})")
    return found


def _configuration_hint(module: nn.Module, state: StateDict, own: Mapping[str, torch.Tensor]) -> str:
    """How to build the model the checkpoint's shapes fit: with its class count when only the last conv's
    outputs differ (a checkpoint of another dataset), else with the options it was trained with."""
    convs = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if convs:
        name, last = convs[-1]
        axis = 1 if isinstance(last, nn.ConvTranspose2d) else 0
        keys = {f"{name}.weight", f"{name}.bias"} & set(state)
        misshaped = {k for k in state if k in own and state[k].shape != own[k].shape}
        weight = state.get(f"{name}.weight")
        if misshaped and misshaped <= keys and weight is not None and weight.dim() == own[f"{name}.weight"].dim():
            theirs, ours = int(weight.shape[axis]), int(own[f"{name}.weight"].shape[axis])
            if theirs != ours and all(state[k].shape[axis if k.endswith("weight") else 0] == theirs for k in keys):
                return (f"; its classifier {name} has {theirs} outputs and the model's {ours}: build the model "
                        f"with {theirs} classes (e.g. --set num_classes={theirs}) or give weights for {ours}")
    return ("; the checkpoint is of another configuration of the model: build it with the options the "
            "checkpoint was trained with (--set KEY=VALUE), or give weights of this configuration")


def load_state_dict_strict(module: nn.Module, state: StateDict, *, allow_partial: bool, source: str) -> LoadReport:
    """Load with every mismatch named; with allow_partial, only missing keys are tolerated and reported. Keys
    that differ from the model's by a wrapper's prefix are note first (`align_keys`)."""
    own = module.state_dict()
    state, note = align_keys(state, list(own))
    if note:
        source = f"{source}, {note}"
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    misshaped = sorted(
        f"{k} (checkpoint {list(state[k].shape)}, model {list(own[k].shape)})"
        for k in state
        if k in own and state[k].shape != own[k].shape
    )
    problems = _unusable(state, own)
    if misshaped:
        problems.append(f"wrongly shaped: {_list(misshaped)}")
    if unexpected:
        problems.append(f"unexpected: {_list(unexpected)}")
    if missing and not allow_partial:
        problems.append(f"missing: {_list(missing)}")
    if problems:
        hint = " (pass --allow-partial to load backbone-only weights)" if missing and not misshaped else ""
        if unexpected and not misshaped:
            hint = ("; is it this model's checkpoint? build the model with the parts the unexpected weights belong "
                    "to (--set KEY=VALUE), or save the state_dict without them")
        hint = _configuration_hint(module, state, own) if misshaped else hint
        raise CheckpointError(f"checkpoint ({source}) does not fit the model: {'; '.join(problems)}{hint}")
    module.load_state_dict(state, strict=False)
    return LoadReport(source=source, loaded=len(state), left_random=tuple(missing), note=note)
