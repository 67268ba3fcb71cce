"""The whole flow (deploy) and its resumable steps."""
