"""The block-level state transition: validate a block against the head, apply it, commit it.

``apply_body`` is shared by the producer (which then signs a header over the roots it
returns) and by every importer of a signed block (a follower, a replay into a fresh store),
which checks that the roots it recomputes are the roots the producer signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chain.admin import AdminRefused
from chain.block import Block, Header, TxResult, encode_results, sign_header
from chain.crypto import PrivateKey
from chain.errors import ChainError, DecodeError, InvalidBlock, InvalidSignature
from chain.merkle import merkle_root
from chain.tx import Transaction, decode_tx
from state.accounts import NoAccount
from state.block_end import end_block
from state.context import TxContext
from state.invariants import StoredStateMismatch, check_block
from state.machine import apply_tx
from state.meta import fork_certificates, next_era
from state.overlay import Overlay
from state.params import ChainParams, load_params
from state.schema import TREE
from state.store import Head, PendingBlock, Store
from state.tree import StateTree
from state.tree_groups import PriorMismatch


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """A block applied to an overlay but not yet committed."""

    overlay: Overlay
    tree_overlay: Overlay
    """The state tree's node writes for this block (committed with the state writes)."""
    results: list[TxResult]
    result_bytes: list[bytes]
    tx_root: bytes
    results_root: bytes
    state_root: bytes
    included: list[Transaction]
    """The transactions in the block, in order (all of them unless ``leave_out``)."""
    left_out: list[Transaction]
    """With ``leave_out``: the transactions left out as not includable (state/accounts.py),
    with their senders' later ones."""


def check_linkage(head: Head, header: Header, params: ChainParams, era: int) -> None:
    """Header rules that need only the previous head, the chain parameters and the era the
    next block must carry (``head.era``, or a new era after a rollback: state/meta.py
    ``next_era``)."""
    if header.chain_id != params.chain_id:
        raise InvalidBlock(f"block for chain {header.chain_id!r}, expected {params.chain_id!r}")
    if header.height != head.height + 1:
        raise InvalidBlock(f"block height {header.height}, expected {head.height + 1}")
    if header.prev_hash != head.hash:
        raise InvalidBlock("block does not link to the head (prev_hash differs)")
    if header.era != era:
        raise InvalidBlock(f"block era {header.era}, expected {era}")
    if header.time <= head.time:
        raise InvalidBlock(f"block time {header.time} is not after {head.time}")
    if header.producer != params.producer:
        raise InvalidBlock("block is not from the genesis producer")


def check_fork(store: Store, head: Head, era: int, params: ChainParams) -> None:
    """A block opening a new era: its fork certificate must carry enough genesis operator
    signatures (certificates can arrive from elsewhere; never trust one unchecked)."""

    for signed in fork_certificates(store):
        c = signed.certificate
        if c.era == era and c.to_height == head.height and c.to_block_hash == head.hash:
            try:
                signed.verify(params.operators, params.operator_threshold)
            except AdminRefused as e:
                raise InvalidBlock(f"fork certificate of era {era}: {e.message}",
                                   reason="fork_certificate") from e
            if c.chain_id != params.chain_id:
                raise InvalidBlock(f"fork certificate of era {era} is for chain "
                                   f"{c.chain_id!r}", reason="fork_certificate")
            return
    raise InvalidBlock(f"no fork certificate opens era {era} at this head",
                       reason="fork_certificate")


def apply_body(store: Store, params: ChainParams, height: int, time: int,
               txs: Sequence[Transaction], *, leave_out: bool = False) -> BlockOutcome:
    """Apply ``txs`` in order on top of the committed state; raises ``InvalidBlock``.

    ``leave_out`` (the producer building from its mempool): a transaction that is not
    includable (``NoAccount``: its sender has no account record in the state at that point
    of the block) is left out, with the sender's later ones, instead of making the block
    invalid; what is left out is deterministic given the state and ``txs``. Importers and
    replays apply strictly: a block holding such a transaction is invalid."""
    head = store.head()
    if head is None:
        raise InvalidBlock("store has no genesis")
    overlay = store.overlay()
    ctx = TxContext(params, height, time)
    results: list[TxResult] = []
    included: list[Transaction] = []
    left_out: list[Transaction] = []
    skipped: set[bytes] = set()
    for i, tx in enumerate(txs):
        if skipped and tx.sender in skipped:
            left_out.append(tx)
            continue
        ctx.tx_index = len(included)
        try:
            results.append(apply_tx(overlay, ctx, tx))
        except NoAccount as e:
            if not leave_out:
                raise InvalidBlock(f"transaction {i} ({tx.hash.hex()}): {e.message}",
                                   reason=e.reason, tx_index=i) from e
            skipped.add(tx.sender)
            left_out.append(tx)
            continue
        except ChainError as e:
            raise InvalidBlock(f"transaction {i} ({tx.hash.hex()}): {e.message}",
                               reason=e.reason, tx_index=i) from e
        included.append(tx)
    block_events = end_block(overlay, ctx)
    check_block(overlay, ctx.deposited, ctx.withdrawn)  # guards: raise before any root
    if block_events:  # the block's own events: one more result, after the transactions'
        results.append(TxResult(0, "", tuple(block_events)))
    result_bytes, res_root = encode_results(results)
    tree_overlay = store.overlay(TREE)
    try:  # also checks each changed key's stored prior against the committed tree
        state_root = StateTree(tree_overlay).apply(overlay.changes(), overlay.priors)
    except PriorMismatch as e:
        raise StoredStateMismatch(e.mismatches) from None
    return BlockOutcome(
        overlay=overlay,
        tree_overlay=tree_overlay,
        results=results,
        result_bytes=result_bytes,
        tx_root=merkle_root([tx.raw for tx in included]),
        results_root=res_root,
        state_root=state_root,
        included=included,
        left_out=left_out,
    )


def commit(store: Store, block: Block, block_bytes: bytes, txs: Sequence[Transaction],
           outcome: BlockOutcome,
           extra_meta: Sequence[tuple[bytes, bytes | None]] = ()) -> Head:
    """Write an applied block with its results and undo record in one batch (plus
    ``extra_meta``: node metadata written in the same batch, e.g. automatic pins)."""
    h = block.header
    head = Head(h.height, block.hash, h.state_root, h.era, h.time)
    store.commit_block((outcome.overlay, outcome.tree_overlay), PendingBlock(
        height=h.height,
        block_hash=block.hash,
        block_bytes=block_bytes,
        tx_hashes=[tx.hash for tx in txs],
        result_bytes=outcome.result_bytes,
        head=head,
    ), extra_meta)
    return head


def seal(store: Store, params: ChainParams, key: PrivateKey, txs: Sequence[Transaction],
         time: int, outcome: BlockOutcome,
         extra_meta: Sequence[tuple[bytes, bytes | None]] = ()) -> Head:
    """Sign an applied block with ``key`` and commit it on the head: a producer without a
    last-signed record, for stores that are never served (a rehearsal's scratch copy,
    tests). The real producer signs through node/signer.py, which records every signature
    first so that it can never sign two blocks at one height."""
    head = store.head()
    if head is None:
        raise InvalidBlock("store has no genesis")
    header = Header(params.chain_id, next_era(store, head), head.height + 1, head.hash, time,
                    outcome.tx_root, outcome.results_root, outcome.state_root,
                    key.public_key)
    block = Block(header, sign_header(key, header), tuple(t.raw for t in txs))
    return commit(store, block, block.encode(), txs, outcome, extra_meta)


def decode_block_txs(block: Block, verify: bool = True) -> list[Transaction]:
    """Decode (and by default signature-check) every transaction of a block."""
    txs: list[Transaction] = []
    for i, raw in enumerate(block.txs):
        try:
            tx = decode_tx(raw)
            if verify:
                tx.verify_signature()
        except (DecodeError, InvalidSignature) as e:
            raise InvalidBlock(f"transaction {i}: {e.message}", reason=e.reason,
                               tx_index=i) from e
        txs.append(tx)
    return txs


def import_block(store: Store, block_bytes: bytes, *, verify_txs: bool = True) -> Head:
    """Validate a signed block from elsewhere against our head, re-execute it and commit.

    Every root in the header must equal what this node recomputes, else ``InvalidBlock`` and
    nothing is written.
    """
    head = store.head()
    if head is None:
        raise InvalidBlock("store has no genesis")
    block = Block.decode_block(block_bytes)
    params = load_params(store.overlay())
    era = next_era(store, head)
    check_linkage(head, block.header, params, era)
    if era != head.era:
        check_fork(store, head, era, params)
    try:
        block.signed_header.verify(params.producer)
    except InvalidSignature as e:
        raise InvalidBlock(f"header signature: {e.message}", reason="bad_signature") from e
    txs = decode_block_txs(block, verify=verify_txs)
    outcome = apply_body(store, params, block.header.height, block.header.time, txs)
    h = block.header
    if outcome.tx_root != h.tx_root:
        raise InvalidBlock("tx_root differs from the header", reason="tx_root")
    if outcome.results_root != h.results_root:
        raise InvalidBlock("results_root differs from the header", reason="results_root")
    if outcome.state_root != h.state_root:
        raise InvalidBlock("state_root differs from the header", reason="state_root")
    return commit(store, block, block_bytes, txs, outcome)

