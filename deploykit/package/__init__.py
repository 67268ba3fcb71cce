"""Packaging built artifacts for serving (Triton Inference Server model repositories)."""
