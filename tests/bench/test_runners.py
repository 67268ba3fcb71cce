"""bench.runners.torch_madds: the PyTorch model's multiply-adds, counted on the model itself."""

from __future__ import annotations

import functools
import subprocess
import sys

from deploykit.bench.runners import torch_madds
from deploykit.zoo.flops import complexity_at
from deploykit.zoo.sources import load_model

OPTIONS = {"width_multiplier": 0.35}


def test_the_count_equals_the_meta_device_count_at_every_batch() -> None:
    loaded = load_model("deeplabv3plus_mobilenetv2", options=OPTIONS)
    at = torch_madds(loaded)
    for shape in ((1, 3, 65, 97), (3, 3, 65, 97), (2, 3, 129, 64)):
        expected = complexity_at(functools.partial(loaded.spec.build, **OPTIONS), shape).madds
        assert at(shape) == expected, shape


def test_counting_leaves_torch_dynamo_unimported() -> None:
    """The meta device imports torch._dynamo (1-4 s); deploy's bench counts without it."""
    code = ("import sys\n"
            "from deploykit.bench.runners import torch_madds\n"
            "from deploykit.zoo.sources import load_model\n"
            f"loaded = load_model('deeplabv3plus_mobilenetv2', options={OPTIONS!r})\n"
            "assert torch_madds(loaded)((2, 3, 65, 65)) > 0\n"
            "print('torch._dynamo' in sys.modules)\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False", found.stderr


def test_a_pytorch_targets_activations_are_known_at_a_large_shape_and_leave_torch_dynamo_unimported() -> None:
    """`bench tiny --input-shape 1,3,16384,16384` had no activations for its memory check and ran the model at
    that size (counting multiply-adds) into an allocation failure; the estimate imports no torch._dynamo."""
    code = ("import sys\n"
            "from deploykit.bench.runners import torch_activations\n"
            "from deploykit.zoo.sources import load_model\n"
            "at = torch_activations(load_model('tests.fixtures.user_models:tiny_segmenter'))\n"
            "assert at((1, 3, 64, 64)) is None\n"  # no larger than the probe: nothing measured
            "big = at((2, 3, 4096, 4096))\n"
            "assert big is not None and big > 2 * 8 * 2048 * 2048 * 4, big\n"  # the stem's 8-channel half-size map
            "print('torch._dynamo' in sys.modules)\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False", found.stderr
