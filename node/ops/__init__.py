"""The operator endpoint and its commands (chain control, snapshots, recovery), run over an ops
context.
"""
