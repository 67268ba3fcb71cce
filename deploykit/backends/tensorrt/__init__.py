"""TensorRT: engine build (build.py), runner (runner.py), device buffers (device.py), shapes and compatibility."""
