"""Parity: compare outputs across backends with numeric and task metrics, and localise divergence."""
