"""`deploykit doctor`: what this machine offers deploykit."""

from __future__ import annotations

import click

from deploykit.commands._options import echo_json, json_option


@click.command(short_help="Report versions, ONNX Runtime providers, TensorRT state, GPUs and CPU.")
@json_option
def doctor(as_json: bool) -> None:
    """Report Python, torch, onnx and ONNX Runtime versions, ONNX Runtime's execution providers, TensorRT's
    state (probed by constructing a builder), CUDA devices, and the CPU."""
    from deploykit.environment import probe

    env = probe()
    if as_json:
        echo_json(env.to_dict())
        return
    trt = env.tensorrt
    trt_line = trt.state + (f" (TensorRT {trt.version})" if trt.version else "") + (f": {trt.reason}" if trt.reason else "")
    lines = [
        f"python          {env.python} on {env.platform}",
        f"cpu             {env.cpu}, {env.cores} cores",
        *(f"{name:<15} {version}" for name, version in env.versions.items() if name != "tensorrt"),
        f"ort providers   {', '.join(env.onnxruntime_providers)}",
        f"tensorrt        {trt_line}",
        f"cuda devices    {', '.join(env.cuda_devices) or 'none'}",
    ]
    click.echo("\n".join(lines))
