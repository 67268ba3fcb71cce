"""Where a model comes from: a zoo name, or a user's `package.module:factory`, plus optional weights."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import math
import os
import re
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit.environment import check_memory
from deploykit.errors import (
    CheckpointError,
    ConfigConflict,
    InputError,
    UnknownModel,
    UserCodeError,
    a_or_an,
    not_theirs,
    users_code,
)
from deploykit.io.digests import sha256_file
from deploykit.zoo._registry import ModelSpec, Task, get_model_spec
from deploykit.zoo.checkpoints import (
    Converted,
    LoadReport,
    convert_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
)
from deploykit.zoo.fitting import another_model


@dataclass
class LoadedModel:
    module: nn.Module
    spec: ModelSpec
    options: dict[str, Any] = field(default_factory=dict)
    weights: str = ""  # "file.pth sha256", or "" when the weights are the builder's initialisation
    load_report: LoadReport | None = None
    # a user model's module kinds (BatchNorm, Dropout) that its factory left in training mode, whose forward
    # eval mode changes: load_model puts the model in eval mode, and export says so
    was_training: tuple[str, ...] = ()

    def weight_notes(self) -> list[str]:
        """What every command that loads --weights says of them: what was not plain (keys renamed, EMA weights
        beside, options the checkpoint does not record) and what --allow-partial left random."""
        report = self.load_report
        if report is None:
            return []
        notes = [f"weights: {report.note}"] if report.note else []
        if report.left_random:
            notes.append(f"weights left {len(report.left_random)} tensors at their initialisation (--allow-partial): "
                         f"{', '.join(report.left_random[:6])}…")
        return notes


def parse_option_value(text: str) -> Any:
    """`--set` values: Python literals (8, 0.5, True, None, (6, 12, 18)) or else the plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False}.get(text.lower(), text)


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r} is not KEY=VALUE; write e.g. --set output_stride=8")
        options[key.strip()] = parse_option_value(value.strip())
    return options


MAX_DIM = 2**31 - 1


def parse_shape(text: str, *, rank: int = 4) -> tuple[int, ...]:
    """'1,3,512,512' or '1x3x512x512' -> (1, 3, 512, 512)."""
    parts = text.replace("x", ",").replace("X", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != rank or any(d <= 0 for d in dims):
        raise InputError(f"shape {text!r} is not {rank} positive integers; write it like 1,3,512,512 (N,C,H,W)")
    if any(d > MAX_DIM for d in dims):  # beyond what tensors index (int32 in ONNX Runtime's and TensorRT's kernels)
        raise InputError(f"shape {text!r} has a size above {MAX_DIM}; write it like 1,3,512,512 (N,C,H,W)")
    # float32; the activations need several times more
    check_memory(math.prod(dims) * 4, f"shape {text!r}", "give a smaller shape", "for the float32 input alone")
    return dims


def check_source_size(source: str, shape: tuple[int, ...] | None, options: Mapping[str, Any],
                      weights: object = None) -> None:
    """Refuse an --input-shape a zoo model's size rule refuses before the model is built (DilatedNet's 134M
    parameters take 20 s to build here): the rule's one line names sizes that work. Files, user models and
    unknown names pass (their own steps report them); so does a run with weights, whose checkpoint may imply
    options the rule depends on (U-Net's padded), checked once they are known."""
    if shape is None or len(shape) != 4 or weights is not None or is_factory_path(source):
        return
    try:
        spec = get_model_spec(source)
    except UnknownModel:
        return
    spec.check_size(shape[2], shape[3], options)


def is_factory_path(source: str) -> bool:
    return ":" in source and not os.path.exists(source) and not _is_url(source)


def _is_url(source: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source) is not None  # http://host:port/... has a colon too


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".bin", ".safetensors", ".pkl")
MODEL_FILE_SUFFIXES = (".onnx", ".xml", ".engine", ".plan", ".trt")


def _refuse_a_file(source: str) -> None:
    """A file or folder given where a PyTorch model is named: say what goes where, not "unknown model"."""
    if not source.strip():  # Path("") is the working folder: not "a folder" given
        raise UnknownModel(f"the model name {source!r} is empty; give a zoo name (see `deploykit models`) or "
                           "package.module:factory")
    path = Path(source)
    suffix = path.suffix.lower()
    if is_factory_path(source):
        return
    if suffix in CHECKPOINT_SUFFIXES:
        raise UnknownModel(f"{source} is a checkpoint file; name the model (a zoo name, see `deploykit models`, "
                           "or package.module:factory) and give the file as --weights")
    if suffix in MODEL_FILE_SUFFIXES:
        raise UnknownModel(f"{source} is a model file; export and deploy start from a PyTorch model (a zoo name "
                           "or package.module:factory); an ONNX file or built artifact goes to `deploykit "
                           "build-engine`, `deploykit parity` and `deploykit bench`")
    if path.is_dir():
        raise UnknownModel(f"{source} is a folder; name the model as a zoo name (`deploykit models`) or "
                           "package.module:factory")


def is_user_model(spec: ModelSpec) -> bool:
    """A spec made up for a user's package.module:factory (its code, not the zoo's, runs)."""
    return is_factory_path(spec.name)


def user_code_name(spec: ModelSpec) -> str | None:
    """How errors name a user's model ("your model pkg.mod:make"); None for a zoo model."""
    return f"your model {spec.name}" if is_user_model(spec) else None


def model_code(spec: ModelSpec, what: str = "") -> contextlib.AbstractContextManager[None]:
    """Run code of the model `spec` names: what a user's model raises is theirs (errors.users_code, exit 2,
    their file and line); what a zoo model raises stays a bug in deploykit. `what` adds context, e.g. the
    input shape."""
    name = user_code_name(spec)
    return users_code(f"{name}{what}") if name is not None else contextlib.nullcontext()


def _user_import_path() -> None:
    if "" not in sys.path and "." not in sys.path:  # console scripts do not put the working folder on sys.path
        sys.path.insert(0, os.getcwd())


def factory_file(source: str) -> str | None:
    """The file of a package.module:factory source's module, found without running the module itself (its
    parent packages are imported); None when it cannot be found (importing it later says why)."""
    _user_import_path()
    try:
        spec = importlib.util.find_spec(source.partition(":")[0])
    except BaseException as exc:  # a parent package's import error or exit, reported when the model is loaded
        if not_theirs(exc):
            raise
        return None
    return spec.origin if spec is not None and spec.origin and os.path.isfile(spec.origin) else None


def user_code_fingerprint(source: str, limit: int = 2000) -> str | None:
    """A hash of the code a package.module:factory source runs, found without running it, so that a rerun
    (deploy's steps) sees an edited model: the .py files of the module's top-level package, or of the folder of
    a module in none (`_code_files`); the module's own file alone when they are more than `limit`. None for a
    zoo name."""
    if not is_factory_path(source) or (file := factory_file(source)) is None:
        return None
    module = source.partition(":")[0]
    files = _code_files(module, Path(file), limit)
    # Names as imported (from the sys.path folder), not absolute: a project folder moved or copied elsewhere
    # holds the same code, and its absolute paths made every step of a deploy redo.
    base = _code_base(module, Path(file))
    digest = hashlib.sha256()
    for path in files if 0 < len(files) <= limit else [Path(file)]:
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        with contextlib.suppress(OSError):  # a file gone while listed: its name alone is hashed
            digest.update(path.read_bytes())
    return digest.hexdigest()


def user_code_base(source: str) -> Path | None:
    """The sys.path folder a package.module:factory source's module is imported from (its project folder), found
    without running it; None for a zoo name or a module that cannot be found."""
    if not is_factory_path(source) or (file := factory_file(source)) is None:
        return None
    return _code_base(source.partition(":")[0], Path(file))


def _code_base(module: str, file: Path) -> Path:
    return file.parents[module.count(".") + (file.name == "__init__.py")]


def _code_files(module: str, file: Path, limit: int) -> list[Path]:
    """The .py files a module can import beside itself: its top-level package's; for a module in no package
    (model.py run from its folder), the modules and packages of its folder. That module's own file alone was
    hashed, so an edited layers.py it imports (`from layers import Block`) left deploy's steps skipped on the old
    code. Listing stops past `limit` (a module in site-packages would list every package installed)."""
    depth = module.count(".") - (file.name != "__init__.py")  # of the top-level package's folder
    if depth >= 0:
        root = file.parents[depth]
        found: Iterable[Path] = root.rglob("*.py") if (root / "__init__.py").is_file() else ()
    else:
        packages = (p for p in file.parent.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
        found = itertools.chain(file.parent.glob("*.py"), (f for p in packages for f in p.rglob("*.py")))
    return sorted(itertools.islice(found, limit + 1))


def _import_factory(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    _user_import_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownModel(f"cannot import {module_name!r} for {path!r}: {exc}; check PYTHONPATH") from exc
    except BaseException as exc:  # a SyntaxError, a SystemExit or whatever else the module's top level raises
        if not_theirs(exc):
            raise
        raise UserCodeError.from_exception(f"your module {module_name}", exc) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UnknownModel(f"{module_name} has no callable {attr!r}; give package.module:factory")
    return factory


USER_TASK: Task = "segmentation"  # a user factory's task without --task: what export records and parity scores


def spec_for_source(source: str, *, task: Task | None = None) -> ModelSpec:
    """The zoo's spec for a name, or a spec made up for a user factory (ImageNet preprocessing by default)."""
    if _is_url(source):
        raise UnknownModel(f"{source} is a URL; models are a zoo name, package.module:factory, an .onnx file or a "
                           "built artifact (a served model is measured with `deploykit bench run --url URL --model "
                           "NAME`)")
    _refuse_a_file(source)
    if not is_factory_path(source):
        spec = get_model_spec(source)
        if task is not None and task != spec.task:
            raise ConfigConflict(f"model {spec.name} is a {spec.task} model; drop --task {task}")
        return spec
    factory = _import_factory(source)
    return ModelSpec(name=source, task=task or USER_TASK, builder=factory, input_size=(512, 512),
                     num_classes=0, description=f"user model {source}")


def zoo_spec(name: str) -> ModelSpec:
    """The zoo's spec for `name`, for what shows the zoo (`deploykit models NAME`): a user model, a file or a URL
    is named as what it is, not as an unknown model."""
    if is_factory_path(name):
        raise UnknownModel(f"{name} is a user model (package.module:factory) and `deploykit models` shows the zoo's; "
                           "its options are its factory's keyword arguments: pass them to export with --set KEY=VALUE")
    return spec_for_source(name)


def load_model(
    source: str,
    *,
    options: Mapping[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    allow_partial: bool = False,
    task: Task | None = None,
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """Build the model and load its weights; checkpoint-implied options must agree with the user's.
    trust_checkpoint: unpickle a checkpoint in full when it needs more than weights_only allows
    (see read_checkpoint)."""
    spec = spec_for_source(source, task=task)
    options = given = dict(options or {})
    converted, checkpoint = None, None
    if weights is not None:
        checkpoint = read_checkpoint(weights, trust=trust_checkpoint)
        converted = convert_checkpoint(checkpoint, spec.checkpoint_formats)
        for key, value in converted.options.items():
            if key in options and options[key] != value:
                raise ConfigConflict(
                    f"--set {key}={options[key]!r} contradicts the checkpoint ({converted.source} implies "
                    f"{key}={value!r}); drop the --set"
                )
        options = {**converted.options, **options}
    # Seeded, so a model without weights is the same in every process (export, then parity, agree).
    with _global_torch_state_kept():
        torch.manual_seed(0)
        module = spec.build(**options) if not is_factory_path(source) else _build_user(spec, options)
    report = None
    weights_id = ""
    # A user's module may override load_state_dict, its hooks or train(): what they raise is theirs too.
    with model_code(spec):
        if converted is not None and weights is not None:
            report = _load_weights(module, converted, spec, checkpoint, given, allow_partial=allow_partial)
            notes = (converted.note, report.note, _unrecorded(converted, spec, options))
            report = replace(report, note="; ".join(n for n in notes if n))
            weights_id = f"{Path(weights).name} sha256:{sha256_file(weights)}"
        was_training = _training_modules(module) if is_factory_path(source) else ()  # zoo builders: by design
        module.eval()
    # The built model is the truth: a checkpoint or --set may change the class count (e.g. 19 for Cityscapes).
    classes = options.get("num_classes", spec.num_classes) or _guess_classes(module)
    if classes != spec.num_classes:
        spec = replace(spec, num_classes=int(classes))
    return LoadedModel(module=module, spec=spec, options=options, weights=weights_id, load_report=report,
                       was_training=was_training)


def _unrecorded(converted: Converted, spec: ModelSpec, options: Mapping[str, Any]) -> str:
    """The options the checkpoint's layout does not record, taken at their default (unless given): a VainF
    checkpoint trained at output_stride 8 loads as well at 16 and then computes another model, silently."""
    builder = spec.options()
    unknown = [key for key in converted.unrecorded if key in builder and key not in options]
    if not unknown:
        return ""
    taken = ", ".join(f"{key}={builder[key].default!r}" for key in unknown)
    return (f"{converted.source} checkpoints do not record {', '.join(unknown)}: built with {taken}; if it was "
            f"trained with another value, pass --set {unknown[0]}=VALUE")


def _load_weights(module: nn.Module, converted: Converted, spec: ModelSpec, checkpoint: Any,
                  given: Mapping[str, Any], *, allow_partial: bool) -> LoadReport:
    """Load strictly; a zoo model's checkpoint that does not fit is checked against the other zoo models (with
    the options the user gave), so that one of another backbone names the model it is of, not only the keys
    that differ."""
    try:
        return load_state_dict_strict(module, converted.state_dict, allow_partial=allow_partial,
                                      source=converted.source)
    except CheckpointError as error:
        if is_user_model(spec):
            raise
        other = another_model(checkpoint, given, asked=spec.name)
        if not other:
            raise
        raise CheckpointError(f"checkpoint ({converted.source}) does not fit {spec.name}: {other}") from error


def _training_modules(module: nn.Module) -> tuple[str, ...]:
    """The kinds of module in training mode whose forward eval mode changes: batch statistics, dropout."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return tuple(dict.fromkeys(type(m).__name__ for m in module.modules() if m.training and isinstance(m, kinds)))


@contextlib.contextmanager
def _global_torch_state_kept() -> Iterator[None]:
    """The process-wide torch settings a factory may change as its training script's setup does (a seed,
    torch.set_default_dtype(torch.float64), set_grad_enabled(False), set_num_threads(1), deterministic
    algorithms), restored after it: they are the factory's setup, not the model's computation, and left set
    they change deploykit's own tensors (a float64 default makes its float32 sample input float64, which the
    exporter then feeds a float32 copy of the model) and its timings."""
    dtype, grad, threads = torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads()
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        if (deterministic, warn_only) != (torch.are_deterministic_algorithms_enabled(),
                                          torch.is_deterministic_algorithms_warn_only_enabled()):
            # only when changed: the call imports torch._inductor and torch._dynamo (4.5 s) every time
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _build_user(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    """Call the user's factory; whatever it raises is theirs (exit 2 with their file and line), except a
    TypeError from the call itself (one traceback frame: ours), which means options it does not take."""
    try:
        module = spec.builder(**options)
    except TypeError as exc:
        if len(traceback.extract_tb(exc.__traceback__)) > 1:
            raise UserCodeError.from_exception(f"your factory {spec.name}", exc) from exc
        raise ConfigConflict(f"{spec.name} rejected options {dict(options)}: {exc}; give the factory's arguments "
                             "with --set NAME=VALUE (Python literals), and only the ones it takes") from exc
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        if not_theirs(exc):
            raise
        raise UserCodeError.from_exception(f"your factory {spec.name}", exc) from exc
    if not isinstance(module, nn.Module):
        raise UnknownModel(f"{spec.name} returned {_what_it_is(module)}, not a torch.nn.Module; "
                           f"{_how_to_return_a_module(module)}")
    module = _uncompiled(module)
    _check_has_values(spec.name, module)
    _check_one_input(spec.name, module)
    return module


def _check_has_values(name: str, module: nn.Module) -> None:
    """Refuse a model built without values for its weights (torch.device("meta"), accelerate's
    init_empty_weights): its forward cannot run, and loading weights into it with copy_ (load_state_dict's
    default) keeps none of them."""
    empty = next((n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta), None)
    if empty is not None:
        raise UnknownModel(f"{name} returned a model whose weights have no values ({empty} is on the meta device, "
                           "as a model built under torch.device('meta') or init_empty_weights is): build it on the "
                           "CPU (deploykit loads --weights into it), or load its weights in the factory with "
                           "load_state_dict(state, assign=True)")


def _what_it_is(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, (tuple, list)):
        kinds = ", ".join(type(v).__name__ for v in value[:4]) + ", ..." * (len(value) > 4)
        return f"{a_or_an(type(value).__name__)} ({kinds})"
    return "None" if value is None else a_or_an(type(value).__name__)


def _how_to_return_a_module(value: object) -> str:
    """The fix for a factory's result that is not a module, by what it is."""
    if isinstance(value, type) and issubclass(value, nn.Module):
        return f"return an instance, {value.__name__}(...)"
    if isinstance(value, (tuple, list, Mapping)) and any(
            isinstance(v, nn.Module) for v in (value.values() if isinstance(value, Mapping) else value)):
        return ("return the model alone (a factory that also makes a transform or an optimizer can return "
                "just the model, or point deploykit at a second factory that does)")
    if value is None:
        return "end the factory with `return model`"
    return "return the torch.nn.Module to export (a function's computation goes in a module's forward)"


def _uncompiled(module: nn.Module) -> nn.Module:
    """The module torch.compile wrapped (its OptimizedModule computes what the module does, through code the
    exporters cannot trace); the module itself otherwise."""
    inner = getattr(module, "_orig_mod", None)
    return inner if type(module).__name__ == "OptimizedModule" and isinstance(inner, nn.Module) else module


def _check_one_input(name: str, module: nn.Module) -> None:
    """deploykit feeds a model one image tensor: a forward that needs more is refused now, by its parameters,
    not by the TypeError of the first call."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):  # a forward without a readable signature (a C extension): the call will tell
        return
    required = [p for p in parameters if p.default is inspect.Parameter.empty]
    needed = [p.name for p in required
              if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    keywords = [p.name for p in required if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if keywords:
        raise UnknownModel(f"{name}'s forward needs keyword argument{'s' * (len(keywords) > 1)} "
                           f"{', '.join(keywords)}; deploykit feeds one image tensor N,C,H,W: give "
                           f"{'them defaults' if len(keywords) > 1 else 'it a default'}, or wrap the model in a "
                           "module whose forward takes the image alone and passes the value it needs")
    if len(needed) > 1:
        raise UnknownModel(f"{name}'s forward takes {len(needed)} inputs ({', '.join(needed)}); deploykit feeds one "
                           "image tensor N,C,H,W: wrap the model in a module whose forward takes one (e.g. x alone, "
                           "the others fixed or derived from it)")


def _guess_classes(module: nn.Module) -> int:
    """A user model's class count: out_channels of its last conv (0 when there is none)."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return int(convs[-1].out_channels) if convs else 0
