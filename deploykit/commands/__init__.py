"""Click commands, one module per command family. Only this package and cli.py import click."""

# click context meta keys shared with cli.py: --json was given, and the command printed its JSON document.
JSON_WANTED = "deploykit.json_wanted"
JSON_PRINTED = "deploykit.json_printed"
