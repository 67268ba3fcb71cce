"""Triton model repositories: what `package --triton` writes for NVIDIA's container (and KServe), and what
`deploykit serve` stages for the bundled server.

Per artifact: OUT/<name>/config.pbtxt and OUT/<name>/<version>/ with the artifact (deploykit.package.triton),
and, when its metadata says how to preprocess images, the image models OUT/<name>_pre, <name>_post and the
ensemble <name>_image (deploykit.package.images). Every config.pbtxt is validated with Triton's own protobuf
schema. `package` also writes a Dockerfile (NVIDIA's container plus Pillow for the image steps) and a KServe
InferenceService manifest at the repository's root, where Triton ignores files.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import ConfigConflict, InputError
from deploykit.io.disk_full import disk_size
from deploykit.io.output_checks import check_output_dir
from deploykit.io.outputs import staged
from deploykit.package.images import ImagePipeline, check_image_names, copy_step_code, image_pipeline
from deploykit.package.triton import (
    INT32_MAX,
    ROOT_FILES,
    UINT64_MAX,
    TritonModel,
    check_copy_loads,
    describe_artifact,
    validate_config,
)

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"  # any recent release; TensorRT plans need theirs


@dataclass(frozen=True)
class RepositoryOptions:
    max_batch_size: int = 8  # largest batch the dynamic batcher forms (0: no batching)
    instances: int = 1  # model instances per device
    max_queue_delay_us: int = 100  # how long the batcher waits to fill a batch
    version: int = 1
    images: bool = True  # the image ensemble beside each artifact whose metadata allows it
    max_image_bytes: int = 32 * 2**20  # larger encoded images are refused (HTTP 400)

    def check(self) -> None:
        if not (0 <= self.max_batch_size <= INT32_MAX and 1 <= self.instances <= INT32_MAX
                and 0 <= self.max_queue_delay_us <= UINT64_MAX and 1 <= self.version <= INT32_MAX):
            raise ConfigConflict(f"batching options: max batch size 0..{INT32_MAX}, instances and version "
                                 f"1..{INT32_MAX}, queue delay 0..{UINT64_MAX} us (what Triton's config holds)")
        if self.max_image_bytes < 1:
            raise ConfigConflict("the largest image must be at least 1 byte")


@dataclass(frozen=True)
class Packaged:
    model: TritonModel
    images: ImagePipeline | None

    @property
    def names(self) -> list[str]:
        """Every model this artifact put in the repository."""
        extra = [self.images.pre.name, self.images.post.name, self.images.ensemble_name] if self.images else []
        return [self.model.name, *extra]


def describe_artifacts(artifacts: Sequence[str | os.PathLike[str]], names: Sequence[str],
                       max_batch_size: int) -> list[TritonModel]:
    """The Triton model of each artifact, with distinct names (checked before anything is written)."""
    if len(names) > len(artifacts):
        raise ConfigConflict(f"{len(names)} --name values for {len(artifacts)} artifact(s); give at most one "
                             "--name per artifact, in the artifacts' order")
    models = [describe_artifact(a, name=names[i] if i < len(names) else None, max_batch_size=max_batch_size)
              for i, a in enumerate(artifacts)]
    folded = [m.name.casefold() for m in models]  # one folder on macOS and Windows, where repositories get copied
    duplicates = sorted({m.name for m in models if folded.count(m.name.casefold()) > 1})
    if duplicates:
        cased = len(duplicates) > len({d.casefold() for d in duplicates})
        raise InputError(f"two artifacts would both be named {' / '.join(duplicates)}"
                         + (" (names that differ only in case are one folder on macOS and Windows)" if cased else "")
                         + "; give --name for each")
    check_image_names(models)
    return models


def stage(models: Sequence[TritonModel], folder: Path, options: RepositoryOptions) -> list[Packaged]:
    """Write `models` (and their image models) into the empty folder `folder`."""
    packaged = []
    for model in models:
        pipeline = image_pipeline(model, max_image_bytes=options.max_image_bytes) if options.images else None
        _write_model(folder, model, options, functools.partial(_copy_files, model))
        if pipeline is not None:
            for step in pipeline.steps:
                _write_model(folder, step, options, copy_step_code)
            _write_config(folder / pipeline.ensemble_name, pipeline.ensemble_text())
            (folder / pipeline.ensemble_name / str(options.version)).mkdir()
        packaged.append(Packaged(model, pipeline))
    return packaged


def _copy_files(model: TritonModel, version: Path) -> None:
    for source, name in model.files:
        (version / name).parent.mkdir(parents=True, exist_ok=True)  # external data may sit in a subfolder
        shutil.copyfile(source, version / name)


def _write_model(folder: Path, model: TritonModel, options: RepositoryOptions,
                 fill: Callable[[Path], None]) -> None:
    version = folder / model.name / str(options.version)
    version.mkdir(parents=True)
    fill(version)
    _write_config(folder / model.name, model.config_text(options.instances, options.max_queue_delay_us))


def _write_config(model_folder: Path, text: str) -> None:
    validate_config(text)
    model_folder.mkdir(exist_ok=True)
    (model_folder / "config.pbtxt").write_text(text, encoding="utf-8")


def write_repository(artifacts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                     names: Sequence[str] = (), options: RepositoryOptions | None = None,
                     force: bool = False) -> list[Packaged]:
    """Write a model repository for `artifacts` with its Dockerfile and KServe manifest; the folder appears
    complete or not at all."""
    options = options or RepositoryOptions()
    options.check()
    target = check_output_dir(out, force=force or None)  # an existing folder only with --force
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: folder {target.parent} does not exist; create it first")
    models = describe_artifacts(artifacts, names, options.max_batch_size)
    needs = sum(disk_size(source) for m in models for source, _ in m.files)
    with staged(target.parent, force=force, needs=needs) as stage_:
        staging = stage_.path(target)
        staging.mkdir()
        packaged = stage(models, staging, options)
        for model in models:  # a repository whose copy would not load is never written
            check_copy_loads(model, staging / model.name / str(options.version))
        for name, text in zip(ROOT_FILES, (dockerfile(), inference_service(models)), strict=True):
            (staging / name).write_text(text, encoding="utf-8")
    return packaged


def dockerfile() -> str:
    return (
        "# NVIDIA's Triton container serving this model repository (written by `deploykit package --triton`).\n"
        "# docker build -t deploykit-models . && docker run --rm -p8000:8000 -p8001:8001 deploykit-models\n"
        "# The image steps (*_pre, *_post) are Python-backend models that need Pillow; the rest is in the\n"
        "# container. For TensorRT plans use the release that ships the TensorRT they were built with.\n"
        f"FROM {TRITON_IMAGE}\n"
        "RUN pip install --no-cache-dir pillow\n"
        "COPY . /models\n"
        "EXPOSE 8000 8001 8002\n"
        'CMD ["tritonserver", "--model-repository=/models"]\n'
    )


def inference_service(models: Sequence[TritonModel]) -> str:
    """A KServe InferenceService running the Dockerfile's image (KServe v2 protocol on port 8080), scaled
    by KServe between one and four replicas; a GPU per replica when an artifact needs one."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"deploykit-{models[0].name}".lower()).strip("-")[:63]
    gpu = any(m.kind == "KIND_GPU" for m in models)
    limits = '            nvidia.com/gpu: "1"\n' if gpu else '            cpu: "2"\n            memory: 4Gi\n'
    return (
        "# KServe InferenceService for this repository (written by `deploykit package --triton`): build the\n"
        "# Dockerfile beside it, push the image, set `image:` below, then `kubectl apply -f inferenceservice.yaml`.\n"
        "# Clients speak the KServe v2 protocol: POST /v2/models/<model>/infer on the service's URL.\n"
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  predictor:\n"
        "    minReplicas: 1\n"
        "    maxReplicas: 4\n"
        "    containers:\n"
        "      - name: kserve-container\n"
        f"        image: REGISTRY/{name}:latest  # the image built from the Dockerfile\n"
        '        args: ["tritonserver", "--model-repository=/models", "--http-port=8080", "--grpc-port=9000"]\n'
        "        ports:\n"
        "          - containerPort: 8080\n"
        "            protocol: TCP\n"
        "        readinessProbe:\n"
        "          httpGet:\n"
        "            path: /v2/health/ready\n"
        "            port: 8080\n"
        "        resources:\n"
        "          limits:\n"
        f"{limits}"
    )
