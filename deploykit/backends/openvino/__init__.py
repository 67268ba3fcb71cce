"""OpenVINO on CPU: deploykit's FP32 / FP16 / INT8 Q/DQ graphs compiled to OpenVINO IR (compile.py) and run by
OpenVinoRunner (runner.py). The `openvino` package is an optional extra (`pip install 'deploykit[openvino]'`),
imported only when this backend is used.

The backend's seams, for the one backend table: `availability()`, `compile(graph, out, ...)` and
`open_runner(artifact, ...)`, re-exported here; the artifact is OUT.xml with OUT.bin beside it.
"""

from __future__ import annotations

from deploykit.backends.openvino.compile import ARTIFACT_SUFFIX, availability, compile, is_available
from deploykit.backends.openvino.runner import OpenVinoRunner, metadata_from_ir, open_runner, runtime_precisions

__all__ = ["ARTIFACT_SUFFIX", "OpenVinoRunner", "availability", "compile", "is_available", "metadata_from_ir",
           "open_runner", "runtime_precisions"]
