"""One module per CLI command; `autoscaler.cli` wires them into one Typer app."""
