"""What every node and light client agrees on: encoding, keys, transactions, blocks, hashing.

Pure code: no I/O, no clock, no randomness (key generation aside, which callers ask for).
"""
