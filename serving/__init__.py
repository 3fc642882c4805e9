"""HTTP side of supportbot: the customer API, the managed vLLM process and the CLI."""
