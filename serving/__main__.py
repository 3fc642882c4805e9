"""`python -m serving` runs the supportbot CLI."""

from serving.cli import app

app()
