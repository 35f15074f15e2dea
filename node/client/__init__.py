"""Clients of a node: JSON-RPC, the operator (admin) client and the light client; importing
them loads no store and no server code.
"""
