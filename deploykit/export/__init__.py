"""torch -> ONNX: the result types (results.py), the model's PyTorch outputs and their determinism
(model_outputs.py), fix-ups and checks of the exported graph (exported_graph.py), the shapes it is verified on
(verification_shapes.py), verification against PyTorch (verify.py), and the export that ties them
(onnx_from_torch.py)."""
