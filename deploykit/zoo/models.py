"""Imports every architecture module so each registers its models. Add a new architecture here."""

import deploykit.zoo.deconvnet
import deploykit.zoo.dilatednet
import deploykit.zoo.fcn
import deploykit.zoo.msinet
import deploykit.zoo.unet  # noqa: F401
from deploykit.zoo import deeplabv3plus  # noqa: F401
