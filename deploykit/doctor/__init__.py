"""`deploykit doctor`'s library: what this machine offers (versions, CPU, GPUs, every backend's availability) and
the TensorRT self-tests."""
