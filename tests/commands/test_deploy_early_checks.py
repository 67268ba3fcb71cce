"""deploy's checks before the export: a user factory without --task is taken as export records it (segmentation,
deploykit.zoo.sources.USER_TASK), so a budget in a segmentation metric is accepted as parity scores it; it was
refused as 'of unknown task' while the export wrote task=segmentation and parity measured pixel agreement."""

from __future__ import annotations

import pytest

from deploykit.commands.deploy import _early_checks
from deploykit.errors import InputError

USER = "tests.fixtures.user_models:tiny_segmenter"


def test_a_segmentation_budget_on_a_user_factory_without_task_is_accepted() -> None:
    _early_checks(USER, None, "pixel_agreement>=0.99", None, None)


def test_a_saliency_budget_on_a_user_factory_without_task_names_the_task_it_is_taken_as() -> None:
    with pytest.raises(InputError, match="cc is a saliency metric, but the model is a segmentation model"):
        _early_checks(USER, None, "cc>=0.9", None, None)
    _early_checks(USER, "saliency", "cc>=0.9", None, None)
