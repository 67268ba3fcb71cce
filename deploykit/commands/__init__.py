"""Click commands, one module per command family. Only this package and cli.py import click."""
