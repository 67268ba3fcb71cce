"""Calibration: data readers, streaming range statistics, range methods, Q/DQ insertion, accuracy budgets."""
