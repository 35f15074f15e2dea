"""Running things on trio: producer, mempool, RPC, CLI, devnet, load generator."""

__version__ = "0.1.0"
