"""Imports every architecture module so each registers its models. Add a new architecture here."""

from deploykit.zoo import deeplabv3plus  # noqa: F401
