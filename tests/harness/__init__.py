"""Test harnesses shared by test modules: in-process chains with markets, recovery steps at the
store level, live nodes over RPC, and codec vectors.
"""
