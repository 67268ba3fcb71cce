"""Benchmarks: latency statistics (stats.py), the timing harness (harness.py), measured machine peaks
(roofline.py), what bench times (runners.py), a run and its report (run.py) and kernel sweeps (kernels.py)."""
