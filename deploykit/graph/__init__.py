"""Pure ONNX -> ONNX passes and inspections (no torch): unpooling, FP16, TensorRT lint, graph inspection."""
