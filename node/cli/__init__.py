"""The `appchain` command line, split by command group (main.py composes them)."""

from node.cli.main import main

__all__ = ["main"]
