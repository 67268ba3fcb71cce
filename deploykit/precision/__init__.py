"""Precision as a graph transform: FP16 and INT8 Q/DQ passes and the accuracy-budget search."""
