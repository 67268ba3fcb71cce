"""Triton Python-backend models (`model.py` files) that `package --triton` and `serve` copy into a model
repository; they run inside Triton's Python backend stub, not in deploykit's process."""
