"""The public JSON-RPC: transport and parameters, chain methods, exchange methods, and their
JSON views.
"""
