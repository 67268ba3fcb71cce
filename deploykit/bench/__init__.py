"""Benchmarks: latency statistics (stats.py), the timing harness (harness.py), measured machine peaks
(roofline.py), multiply-add counts of ONNX graphs (macs.py), kernel sweeps (kernels.py) and plots (plots.py)."""
