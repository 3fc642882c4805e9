"""The `supportbot` command line: one Typer app whose subcommands are plain typed functions."""
