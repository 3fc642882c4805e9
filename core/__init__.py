"""The bottom layer: configuration and process helpers that every other package may import."""
