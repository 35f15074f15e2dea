"""Accounts: a balance of the settlement asset and the next expected transaction nonce.

Who may send (docs/PROTOCOL.md §3, includability): a transaction is includable only if its
sender has an account record in the state it runs on, or is a genesis key (the faucet, an
oracle, an operator: a fixed set, whose first transaction creates the record that holds its
nonce). A record is created only by crediting an address (a deposit or a transfer to it) or
by a genesis key's transaction: a failing transaction from a key with nothing never creates
one, and since such a transaction is not includable at all, it can neither fill blocks for
free nor be replayed (its nonce is never consumed because it never runs).
"""

from __future__ import annotations

from chain.errors import InvalidTransaction
from state.params import ChainParams
from state.records import EMPTY, Account
from state.schema import account_key
from state.state_view import StateView


class NoAccount(InvalidTransaction):
    """Block-validity rule: the sender has no account record and is not a genesis key."""

    reason = "no_account"


def get_account(view: StateView, address: bytes) -> Account:
    """The account at ``address`` (an empty one if there is no record)."""
    acct = view.get_obj(account_key(address), Account)
    return EMPTY if acct is None else acct


def account_record(view: StateView, address: bytes) -> Account | None:
    """The account record at ``address``, or None: unlike :func:`get_account`, tells an
    empty record from no record (includability depends on it)."""
    return view.get_obj(account_key(address), Account)


def put_account(view: StateView, address: bytes, account: Account) -> None:
    view.put_obj(account_key(address), account)


def is_genesis_key(params: ChainParams, address: bytes) -> bool:
    """The faucet, an oracle or an operator key: senders that need no account record."""
    return address == params.faucet or address in params.oracles or address in params.operators


def includable_account(view: StateView, params: ChainParams, sender: bytes) -> Account:
    """The sender's account if a transaction of theirs may go in a block (raises
    ``NoAccount`` otherwise); a genesis key without a record gets the empty account."""
    acct = account_record(view, sender)
    if acct is not None:
        return acct
    if is_genesis_key(params, sender):
        return EMPTY
    raise NoAccount(f"sender {sender.hex()} has no account (fund it first: a deposit or a "
                    "transfer to it)")
