"""`deploykit serve ARTIFACT...`: KServe v2 (Triton) inference endpoints for artifacts, on Triton's server."""

from __future__ import annotations

import click

from deploykit.commands._inputs import reads
from deploykit.commands._options import CpuCount, at_least, given, progress, threads_option
from deploykit.io.signals import deferred
from deploykit.package.images import why_no_images
from deploykit.package.triton import INT32_MAX, UINT64_MAX
from deploykit.serve.server import ServeOptions, Serving, run_until_signal, start


@click.command(short_help="Serve artifacts over the KServe v2 protocol (Triton's server, dynamic batching).")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--name", "names", multiple=True, help="Model name per artifact, in order (default: file stem).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1, loopback only).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="HTTP port (default 8000; 0: any free port).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
              help="Also open Triton's gRPC endpoint on this port.")
@click.option("--max-batch", "max_batch_size", type=click.IntRange(0, INT32_MAX), default=None,
              help="Largest batch the dynamic batcher forms from same-shape requests (default 8; 0: none).")
@click.option("--queue-delay-us", "max_queue_delay_us", type=click.IntRange(0, UINT64_MAX), default=None,
              help="How long the batcher waits to fill a batch (default 500 us).")
@click.option("--instances", type=CpuCount(), default=None,
              help="Model instances (default 1; at most one per CPU).")
@threads_option("Intra-op threads per instance (default: the backend's).")
@click.option("--images/--no-images", default=True, show_default=True,
              help="Also serve NAME_image: an encoded image in, the class or saliency map at its size out.")
@click.option("--max-image-mb", type=at_least(0, open_=True), default=None,
              help="Largest encoded image accepted (default 32).")
@click.option("--max-input-mb", type=at_least(0, open_=True), default=None,
              help="Largest input tensor accepted, in MB of float32 (default 256).")
@click.option("--drain", "drain_s", type=click.IntRange(1, INT32_MAX), default=None,
              help="Seconds in-flight requests get after SIGTERM / Ctrl-C (default 8).")
@reads("artifacts")
def serve(artifacts: tuple[str, ...], names: tuple[str, ...], host: str | None, port: int | None,
          grpc_port: int | None, max_batch_size: int | None, max_queue_delay_us: int | None, instances: int | None,
          threads: int | None, images: bool, max_image_mb: float | None, max_input_mb: float | None,
          drain_s: int | None) -> None:
    """Serve ARTIFACTS (.onnx files or build-engine artifacts: ONNX Runtime, OpenVINO, TensorRT) with the Triton
    server bundled in nvidia-pytriton (pip install 'deploykit[serve]'), each through its deploykit Runner.
    Speaks KServe v2: GET /v2/health/ready, GET /v2/models/NAME, POST /v2/models/NAME/infer (JSON or Triton's
    binary tensors), GET /v2/models/NAME/stats; tritonclient works against it (perf_analyzer speaks the same
    protocol; `deploykit bench --url` measures it). NAME takes the artifact's tensors; NAME_image takes an encoded
    PNG/JPEG (BYTES, shape [1]) and returns `mask`. Runs until SIGTERM or Ctrl-C (or SIGHUP, SIGQUIT), which
    drain in-flight requests."""
    options = ServeOptions(names=names, images=images, **given(
        host=host, port=port, grpc_port=grpc_port, max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us, instances=instances, threads=threads, max_image_mb=max_image_mb,
        max_input_mb=max_input_mb, drain_s=drain_s))
    serving = start(artifacts, options, progress=progress)
    try:
        _describe(serving, artifacts, images)
    except BaseException:  # SIGTERM / Ctrl-C before run_until_signal listens for them: stop what runs,
        with deferred():  # and let no second signal cut that short
            serving.stop()
        raise
    run_until_signal(serving, progress=progress)


def _describe(serving: Serving, artifacts: tuple[str, ...], images: bool) -> None:
    for artifact, packaged in zip(artifacts, serving.packaged, strict=True):
        model = packaged.model
        click.echo(f"{serving.url}/v2/models/{model.name}: {artifact}, inputs "
                   + ", ".join(f"{t.name} {t.data_type[5:]}{list(t.dims)}" for t in model.inputs)
                   + f", max batch {model.max_batch_size}")
        if packaged.images:
            click.echo(f"{serving.url}/v2/models/{packaged.images.ensemble_name}: image (encoded PNG/JPEG, "
                       f"BYTES[1]) -> mask {packaged.images.post.outputs[0].data_type[5:]}[height, width]")
        elif images:
            click.echo(f"no {model.name}_image: {why_no_images(model)}; send {model.name} tensors")
    grpc = f", gRPC on {serving.grpc_address}" if serving.grpc_address else ""
    click.echo(f"ready: {serving.url} (KServe v2{grpc}; SIGTERM or Ctrl-C drains and stops)", err=True)
