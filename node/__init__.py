"""The node: a core (chain head, intake, producer) and wings (api, ops, client, cli, dev)."""

__version__ = "0.1.0"
