"""The shapes an export is verified on: the export shape and, for a dynamic export, a second one the model takes."""

from __future__ import annotations

from deploykit.errors import ExportError, InputError, UserCodeError
from deploykit.export.results import shape_text
from deploykit.exporters import rejects
from deploykit.types import Progress
from deploykit.zoo.sources import LoadedModel, is_user_model


def verification_shapes(shape: tuple[int, ...], dynamic: bool, multiple: int) -> list[tuple[int, ...]]:
    """The export shape, and for dynamic models a second one that differs in batch, height and width by
    multiples of `multiple` (at least 8 and 16 pixels), so a model needing sizes divisible by it gets them."""
    if not dynamic:
        return [shape, shape]
    step = multiple * -(-8 // multiple)
    n, c, h, w = shape
    return [shape, (n + 1, c, h + step, w + 2 * step)]


def size_checked_shapes(loaded: LoadedModel, shape: tuple[int, ...], dynamic: bool, given: int | None,
                        say: Progress) -> tuple[list[tuple[int, ...]], int]:
    """Verification shapes the model accepts, and the size multiple they keep.

    The second shape changes height and width by multiples of the model's size multiple (the zoo's, or
    --size-multiple). A model without one that rejects it (segmentation_models_pytorch's DeepLabV3Plus raises
    for sizes not divisible by 16) is retried once with multiples of 32, the common encoder stride, when the
    export shape allows; otherwise the message names --size-multiple and --static.
    """
    multiple = given or loaded.spec.size_multiple
    shapes = verification_shapes(shape, dynamic, multiple)
    _check_second_shape(loaded, shapes[1], given)
    # Zoo models declare their multiple (and are tested); only a user's model costs this extra forward pass.
    if not dynamic or not is_user_model(loaded.spec) or (error := rejects(loaded, shapes[1])) is None:
        return shapes, multiple
    rejected = UserCodeError.from_exception(f"{loaded.spec.name} on {shape_text(shapes[1])}", error)
    if not given and multiple < 32 and shape[2] % 32 == 0 and shape[3] % 32 == 0:
        retry = verification_shapes(shape, dynamic, 32)
        say(f"the model rejects input {shape_text(shapes[1])} ({rejected}); retrying with a height and width "
            f"that are multiples of 32: {shape_text(retry[1])} (--size-multiple N chooses the multiple)")
        if rejects(loaded, retry[1]) is None:
            return retry, 32
    raise ExportError(f"{rejected}. The export shape worked: if the model needs sizes divisible by N, pass "
                      "--size-multiple N (with an --input-shape divisible by N) to verify on such sizes, or "
                      "--static to export the one shape")


def _check_second_shape(loaded: LoadedModel, second: tuple[int, ...], given: int | None) -> None:
    """A --size-multiple that makes the second verification shape one the zoo model's rule refuses (4 for
    U-Net, whose sides step by 16) is the option's fault: say so, not the shape the user never gave."""
    if given is None or len(second) != 4:
        return
    try:
        loaded.spec.check_size(second[2], second[3], loaded.options)
    except InputError as exc:
        raise InputError(f"--size-multiple {given} makes the second verification shape {shape_text(second)}, which "
                         f"{loaded.spec.name} cannot take ({exc}); drop --size-multiple to keep the zoo's "
                         f"{loaded.spec.size_multiple}") from exc


def check_multiple(shape: tuple[int, ...], given: int | None) -> None:
    if given is not None and given < 1:
        raise InputError(f"--size-multiple must be a positive integer, got {given}")
    if given and (shape[2] % given or shape[3] % given):
        raise InputError(f"--input-shape {shape_text(shape)} has a height or width that is not a multiple of "
                         f"--size-multiple {given}; use e.g. {shape_text(_round_up(shape, given))}")


def _round_up(shape: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    n, c, h, w = shape
    return (n, c, -(-h // multiple) * multiple, -(-w // multiple) * multiple)
