"""OpenVINO on CPU: deploykit's FP32 / FP16 / INT8 Q/DQ graphs compiled to OpenVINO IR (compile.py) and run by
OpenVinoRunner (runner.py). The `openvino` package is an optional extra (`pip install 'deploykit[openvino]'`),
imported only when this backend is used.

The table entry (deploykit.backends.base.BACKENDS["openvino"]) calls backend.py, which implements the backend
protocol over compile.py and runner.py. The artifact is OUT.xml with OUT.bin beside it (the entry's
`companions`).
"""
