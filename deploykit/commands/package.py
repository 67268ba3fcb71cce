"""`deploykit package --triton`: a Triton Inference Server model repository from artifacts."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.commands._inputs import reads
from deploykit.commands._options import at_least, echo_json, force_option, json_option
from deploykit.package.images import why_no_images
from deploykit.package.repository import RepositoryOptions, write_repository
from deploykit.package.triton import INT32_MAX, UINT64_MAX


@click.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--triton", "triton", is_flag=True, required=True, help="Write a Triton model repository.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The model_repository folder.")
@click.option("--name", "names", multiple=True, help="Model name per artifact, in order (default: file stem).")
@click.option("--max-batch-size", type=click.IntRange(0, INT32_MAX), default=8, show_default=True,
              help="Largest batch Triton forms (0 disables batching).")
@click.option("--instances", type=click.IntRange(1, INT32_MAX), default=1, show_default=True,
              help="Model instances per device.")
@click.option("--max-queue-delay-us", type=click.IntRange(0, UINT64_MAX), default=100, show_default=True,
              help="How long dynamic batching waits to fill a batch.")
@click.option("--images/--no-images", default=True, show_default=True,
              help="Also write NAME_image (encoded image in, class or saliency map out) for artifacts with "
                   "deploykit metadata.")
@click.option("--max-image-mb", type=at_least(0, open_=True), default=32, show_default=True,
              help="Largest encoded image the image models accept.")
@force_option
@json_option
@reads("artifacts")
def package(artifacts: tuple[str, ...], triton: bool, out: str, names: tuple[str, ...], max_batch_size: int,
            instances: int, max_queue_delay_us: int, images: bool, max_image_mb: float, force: bool,
            as_json: bool) -> None:
    """Write a Triton model repository for ARTIFACTS (.onnx files or build-engine artifacts): config.pbtxt with
    the platform (onnxruntime_onnx, tensorrt_plan) or backend (openvino) that serves it, inputs/outputs with
    dims and dynamic batch, dynamic batching, instance groups and version folders (with the artifact's
    companion files, an IR's .bin), each config validated against Triton's protobuf schema. With deploykit
    metadata, also the image ensemble NAME_image (NAME_pre -> NAME -> NAME_post: encoded image in, the class map
    or saliency map at the image's size out), and at the root a Dockerfile (NVIDIA's container) and a KServe
    InferenceService manifest."""
    options = RepositoryOptions(max_batch_size=max_batch_size, instances=instances,
                                max_queue_delay_us=max_queue_delay_us, images=images,
                                max_image_bytes=int(max_image_mb * 2**20))
    packaged = write_repository(artifacts, out, names=names, options=options, force=force)
    if as_json:
        echo_json({"models": [{"name": p.model.name, "platform": p.model.serving,
                               "max_batch_size": p.model.max_batch_size, "inputs": p.model.inputs,
                               "outputs": p.model.outputs,
                               "image_model": p.images.ensemble_name if p.images else None} for p in packaged]})
        return
    root = Path(out)  # `--out model_repository/` as the README writes it: one slash before each model
    for p in packaged:
        m = p.model
        click.echo(f"{root / m.name}: {m.serving}, max_batch_size {m.max_batch_size}, "
                   f"inputs {', '.join(f'{t.name}{list(t.dims)}' for t in m.inputs)}"
                   + (f"; images: {p.images.ensemble_name}" if p.images else
                      f"; no {m.name}_image: {why_no_images(m)}" if images else ""))
    click.echo(f"serve with: tritonserver --model-repository {root} (or docker build {root}; KServe: "
               f"{root / 'inferenceservice.yaml'})")
