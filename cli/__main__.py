"""`python -m cli` runs the supportbot command line."""

from cli.main import app

app()
