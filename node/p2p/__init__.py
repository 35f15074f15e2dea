"""The peer protocol: a producer serves its blocks to followers over TCP (docs/PROTOCOL.md §13)."""
