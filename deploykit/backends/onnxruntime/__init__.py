"""ONNX Runtime: sessions and runners (runner.py), the CPU artifact and its INT8 lowering (compile.py)."""
