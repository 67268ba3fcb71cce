"""I/O primitives: atomic outputs, ONNX metadata, the artifact sidecar, images."""
