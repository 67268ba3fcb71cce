"""A fourth backend from outside: a package with an entry point `deploykit.backends` (here ONNX's NumPy
reference evaluator, onnx.reference) is found by every command without a line of deploykit touched:
build-engine, parity, bench, deploy, package and doctor run with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugins.install import install, run_commands

INIT = '''
    """An ONNX reference-evaluator backend for deploykit, from outside deploykit."""
    from deploykit.backends.base import Backend

    BACKEND = Backend(
        "refonnx", "deploykit_refonnx.backend", "ONNX's reference evaluator (NumPy, slow, exact)", "ONNX reference",
        suffix=".ref.onnx", suffixes=(".ref.onnx",), triton_platform="onnxruntime_onnx", triton_file="model.onnx",
        artifact="graph", bench_choices={"refonnx": ()})
'''
BACKEND = '''
    """The backend protocol (deploykit.backends.base) over onnx.reference.ReferenceEvaluator."""
    import numpy as np
    import onnx
    import onnx.version_converter
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    from deploykit.backends.base import Availability, Compiled
    from deploykit.io.outputs import atomic_output
    from deploykit.runner import Runner, TensorSpec

    Options = None


    def availability():
        return Availability("ready", onnx.__version__)


    def preflight(model, source):
        """Every ONNX operator runs in the reference evaluator."""


    def as_deployed(model, *, threads, optimize, float_source=None):
        return model


    def compile(graph, out, options, *, precision, force, threads, progress, float_source=None):
        """The graph at opset 19 at least: the reference evaluator implements Q/DQ from there."""
        model = onnx.load(str(graph))
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        progress(f"converting the {precision} graph from opset {opset} for the reference evaluator")
        converted = onnx.version_converter.convert_version(model, max(opset, 19))
        with atomic_output(out, force=force) as tmp:
            onnx.save(converted, str(tmp))
        return Compiled(backend_version=onnx.__version__, device={"cpu": "numpy"},
                        build_options={"evaluator": "onnx.reference"})


    def open(artifact, sidecar, *, providers=("cpu",), threads=None):
        return ReferenceRunner(artifact)


    def _specs(values, initializers):
        return [TensorSpec(v.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                         for d in v.type.tensor_type.shape.dim),
                           np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name)
                for v in values if v.name not in initializers]


    class ReferenceRunner(Runner):
        backend = "refonnx"

        def __init__(self, path):
            super().__init__()
            self.model = onnx.load(str(path))
            self.evaluator = None

        def _open(self):
            self.evaluator = ReferenceEvaluator(self.model)

        def input_specs(self):
            return _specs(self.model.graph.input, {i.name for i in self.model.graph.initializer})

        def output_specs(self):
            return _specs(self.model.graph.output, set())

        def _infer(self, feed):
            names = [o.name for o in self.model.graph.output]
            return dict(zip(names, self.evaluator.run(None, dict(feed)), strict=True))
'''
MODEL = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("refonnx"), "deploykit-refonnx", "deploykit.backends",
                   'refonnx = "deploykit_refonnx:BACKEND"', {"__init__": INIT, "backend": BACKEND})


def test_an_installed_backend_runs_every_command(site: Path, tmp_path: Path) -> None:
    commands = [
        ["doctor", "--json"],
        ["export", MODEL, "--input-shape", "1,3,32,32", "-o", "tiny.onnx"],
        ["build-engine", "tiny.onnx", "--backend", "refonnx", "--int8", "--calib-data", "synthetic",
         "--calib-n", "4", "-o", "tiny.int8.ref.onnx", "--json"],
        ["parity", MODEL, "tiny.int8.ref.onnx", "--random", "2", "--json"],
        ["bench", "tiny.int8.ref.onnx", "--iterations", "3", "--warmup", "0", "--no-roofline", "--json"],
        ["deploy", MODEL, "--backend", "refonnx", "--precisions", "fp32,int8", "--calib-data", "synthetic",
         "--calib-n", "4", "--input-shape", "1,3,32,32", "--bench-seconds", "0.05", "--out", "deployed", "--json"],
        ["package", "--triton", "tiny.int8.ref.onnx", "--out", "repository"],
    ]
    results = run_commands(site, tmp_path, commands)
    for result in results:
        assert result["exit_code"] == 0, f"{result['args']}: {result['log']}"
    doctor, _, build, parity, bench, deploy, _ = (r["output"] for r in results)
    assert json.loads(doctor)["backends"]["refonnx"]["state"] == "ready"
    built = json.loads(build)
    assert built["backend"] == "refonnx" and built["precision"] == "int8"
    sidecar = json.loads((tmp_path / "tiny.int8.ref.onnx.deploykit.json").read_text())
    assert sidecar["backend"] == "refonnx" and sidecar["build_options"]["evaluator"] == "onnx.reference"
    candidate = json.loads(parity)["candidates"][0]
    assert candidate["backend"] == "refonnx" and candidate["precision"] == "int8"
    assert candidate["outputs"][0]["metrics"]["cosine"] > 0.9  # the reference evaluator runs the Q/DQ graph
    assert [r["backend"] for r in json.loads(bench)["results"]] == ["refonnx"]
    summary = json.loads(deploy)
    assert summary["backend"] == "refonnx" and [b["backend"] for b in summary["builds"]] == ["refonnx"] * 2
    assert (tmp_path / "deployed" / "model.int8.ref.onnx").is_file() and (tmp_path / "deployed" / "report.md").is_file()
    configs = [c.read_text() for c in (tmp_path / "repository").glob("*/config.pbtxt")]
    assert sum('platform: "onnxruntime_onnx"' in c for c in configs) == 1  # the artifact, beside image steps
