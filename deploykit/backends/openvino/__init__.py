"""OpenVINO on CPU: deploykit's FP32 / FP16 / INT8 Q/DQ graphs compiled to OpenVINO IR (compile.py) and run by
OpenVinoRunner (runner.py). The `openvino` package is an optional extra (`pip install 'deploykit[openvino]'`),
imported only when this backend is used.

The table entry (deploykit.backends.base.BACKENDS["openvino"]) calls backend.py, which implements the backend
protocol over compile.py and runner.py; `availability()`, `compile(graph, out, ...)` and `open_runner(artifact,
...)` are re-exported here for direct use. The artifact is OUT.xml with OUT.bin beside it (the entry's
`companions`).
"""

from __future__ import annotations

from deploykit.backends.openvino.compile import ARTIFACT_SUFFIX, availability, compile, is_available
from deploykit.backends.openvino.runner import OpenVinoRunner, metadata_from_ir, open_runner, runtime_precisions

__all__ = ["ARTIFACT_SUFFIX", "OpenVinoRunner", "availability", "compile", "is_available", "metadata_from_ir",
           "open_runner", "runtime_precisions"]
