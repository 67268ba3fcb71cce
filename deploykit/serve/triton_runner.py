"""model.py of an artifact's model under `deploykit serve`: Triton's Python backend running deploykit's Runner
for the artifact (ONNX Runtime, OpenVINO or TensorRT; the bundled server has no backend of its own for them).
Triton validates names, dtypes and shapes against config.pbtxt (HTTP 400 when they do not match); batching
and errors are deploykit.serve.execute's. Settings come from the config's `deploykit` parameter (JSON).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deploykit.package.triton_models import triton_settings
from deploykit.serve.execute import BatchedRunner

pb_utils: Any = None


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        global pb_utils  # Triton's Python backend provides the module: importable elsewhere, runnable only there
        pb_utils, config, settings = triton_settings(args)
        self.runner = BatchedRunner.open(settings["artifact"], batched=config["max_batch_size"] > 0,
                                         max_elements=settings["max_elements"], threads=settings["threads"])
        self.outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}

    def execute(self, requests: list[Any]) -> list[Any]:
        names = self.runner.input_names
        feeds = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in names} for r in requests]
        responses = []
        for request, answer in zip(requests, self.runner.run(feeds), strict=True):
            if isinstance(answer, Exception):
                error = pb_utils.TritonError(str(answer), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            wanted = request.requested_output_names() or list(self.outputs)
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(answer[name], dtype=self.outputs[name]))
                       for name in wanted if name in answer]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses

    def finalize(self) -> None:
        self.runner.close()
