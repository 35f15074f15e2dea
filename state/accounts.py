"""Accounts: a balance of the settlement asset and the next expected transaction nonce."""

from __future__ import annotations

from state.records import EMPTY, Account
from state.schema import account_key
from state.state_view import StateView


def get_account(view: StateView, address: bytes) -> Account:
    acct = view.get_obj(account_key(address), Account)
    return EMPTY if acct is None else acct


def put_account(view: StateView, address: bytes, account: Account) -> None:
    view.put_obj(account_key(address), account)
