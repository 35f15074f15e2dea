"""Local development: the devnet and its load generator."""
