"""Click commands, one module per command family. Only this package and cli.py import click."""

# click context meta keys shared with cli.py: --json was given, the command printed its JSON document, and the
# stream it goes to (the real stdout: with --json everything else printed to stdout, a user's model's print
# included, goes to stderr, so that stdout holds the one document).
JSON_WANTED = "deploykit.json_wanted"
JSON_PRINTED = "deploykit.json_printed"
JSON_STREAM = "deploykit.json_stream"
