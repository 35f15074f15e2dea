"""The exchange domain of the state machine: markets, the order book and matching, positions,
collateral, margin, funding, liquidations, take-profit/stop-loss triggers and the operators'
commands.
"""
