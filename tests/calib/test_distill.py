"""Distillation (deploykit.calib.distill, wired by deploykit.precision.recovery.distill_weights): the quantized
graph reproduces the float model's output better after it, on inputs it was not trained on; the trained weights
stay on their channels' grids; a graph it cannot run is left as it was, saying why."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from deploykit.backends.base import backend_of
from deploykit.calib.distill import Distillation, distill
from deploykit.precision.recovery import distill_weights
from tests.calib.recovery_models import inputs, minmax_builder, output_error, two_layers


def test_distillation_lowers_the_quantized_graphs_error_on_unseen_inputs() -> None:
    source = two_layers()
    calibration, unseen = inputs(8, 3, (12, 12), seed=1), inputs(6, 3, (12, 12), seed=2)
    builder = minmax_builder(source, calibration)
    before = builder.build().model
    codes_before = {n: builder.weight_codes(s)[0].copy() for n, s in builder.specs(["c1", "c2"]).items()}
    record = distill_weights(builder, backend_of("tensorrt"), calibration, Distillation(steps=150),
                             threads=1, progress=lambda _m: None)
    assert record["trained"] and record["loss_after"] < record["loss_before"]
    after = builder.build().model
    assert output_error(after, source, unseen) < 0.8 * output_error(before, source, unseen)
    changed = sum(int(np.count_nonzero(builder.weight_codes(s)[0] != codes_before[n]))
                  for n, s in builder.specs(["c1", "c2"]).items())
    assert changed > 0


def test_trained_weights_round_back_to_the_trained_codes_on_unchanged_grids() -> None:
    source = two_layers(seed=3)
    calibration = inputs(6, 3, (10, 10), seed=4)
    builder = minmax_builder(source, calibration)
    specs = builder.specs(["c1", "c2"])
    scales = {n: builder.weight_codes(s)[1].copy() for n, s in specs.items()}
    qdq = builder.build().model
    weights = {n.name: numpy_helper.to_array(next(i for i in source.graph.initializer if i.name == n.input[1]))
               for n in source.graph.node if n.op_type == "Conv"}
    done = distill(qdq, source, weights, calibration, Distillation(steps=60), threads=1, progress=lambda _m: None)
    assert done.report["trained"], done.report
    for name, trained in done.nodes.items():
        scale = scales[name].reshape(-1, 1, 1, 1)
        # each channel's largest weight is untouched, so its grid is the same and every weight is within it
        np.testing.assert_allclose(np.abs(trained.weight).reshape(len(scale), -1).max(axis=1),
                                   np.abs(weights[name]).reshape(len(scale), -1).max(axis=1), rtol=1e-6)
        builder.set_float(name, trained.weight, trained.bias if trained.bias is not None else np.zeros(len(scale)))
        codes, new_scale = builder.weight_codes(specs[name])
        np.testing.assert_allclose(new_scale, scales[name], rtol=1e-6)
        np.testing.assert_array_equal(codes, np.clip(np.round(trained.weight / scale), -127, 127))


def test_a_graph_it_cannot_run_is_left_as_it_was_saying_which_operator() -> None:
    source = two_layers()
    graph = source.graph
    graph.node.insert(1, helper.make_node("Hardmax", ["h"], ["e"], name="hardmax"))
    graph.node[2].input[0] = "e"
    calibration = inputs(4, 3, (10, 10), seed=5)
    builder = minmax_builder(source, calibration)
    weights = {"c1": numpy_helper.to_array(graph.initializer[0])}
    done = distill(builder.build().model, source, weights, calibration, Distillation(steps=10), threads=1,
                   progress=lambda _m: None)
    assert done.nodes == {} and not done.report["trained"] and "Hardmax" in done.report["why"]
