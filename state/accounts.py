"""Accounts: a balance of the settlement asset and the next expected transaction nonce."""

from __future__ import annotations

from dataclasses import dataclass

from chain.codec import U64, Struct
from state.schema import account_key
from state.view import StateView


@dataclass(frozen=True, slots=True)
class Account(Struct):
    """State value under ``acct/<address>``."""

    balance: U64
    """Settlement-asset units held (see docs/PROTOCOL.md for the scale)."""
    nonce: U64
    """Nonce the account's next transaction must carry."""


EMPTY = Account(0, 0)


def get_account(view: StateView, address: bytes) -> Account:
    acct = view.get_obj(account_key(address), Account)
    return EMPTY if acct is None else acct


def put_account(view: StateView, address: bytes, account: Account) -> None:
    view.put_obj(account_key(address), account)
