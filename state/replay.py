"""Replay: re-execute the user transactions of abandoned blocks on the restored state.

The abandoned blocks of an era are in the archive (state/rollback.py). Replay takes them in
height order and, for each, builds ONE new block with the same block time (so funding and
liquidations see the same clock; if the restored head is already at or past that time, one
millisecond after the head), holding the block's transactions in their original order.

**A replayed block holds what the producer would have included.** Every transaction that is
block-valid on the restored state goes in, with whatever result it gets there, success or
failure, consuming its sender's nonce exactly as normal execution does, so that sender's
later transactions stay valid. (Leaving out a transaction that failed on the abandoned fork
too, as an earlier version did, left a nonce gap that made every later transaction of its
sender invalid: half of a real devnet's transactions were lost that way.) Dropped, each with
a reason (:data:`REASONS`), are only:

* ``decode`` / ``signature``: the stored bytes no longer decode, or the signature fails
  (e.g. corrupted on disk). Signatures are re-checked only for blocks that are not
  ``intact`` (header signature and ``tx_root`` no longer match the bytes): an intact
  block's transactions are the exact bytes every node verified when it was committed;
* ``excluded_tx`` / ``excluded_sender`` / ``excluded_type``: the operators excluded it;
* ``operator_command``: operator transactions are never replayed (they were decisions on the
  abandoned fork);
* ``after_excluded:<hash>`` / ``after_dropped:<hash>``: a later transaction of a sender whose
  transaction ``<hash>`` was excluded (or dropped for one of the reasons above): its nonce no
  longer follows, so it is block-invalid, and the reason names the cause;
* any other block-validity reason on the restored state (e.g. ``nonce_mismatch``), which does
  not happen in a faithful replay but is reported rather than hidden.

What the state machine generated itself (funding, triggers, liquidations) is never replayed:
the new blocks' end-of-block steps run again and do whatever the restored state calls for.
Each included transaction is ``identical`` (same result code and events as on the abandoned
fork) or ``diverged``, and every diverged one carries ``why``: a short, readable account of
the difference (``code ok -> order_not_found``, which events differ), naming the operators'
``cancel_orders`` when the order it meant was already cancelled by them.

Everything here is deterministic: the same store, archive and exclusions give the same
blocks, which is what lets an interrupted replay resume (:func:`run_replay`) and a
rehearsal in a scratch copy predict the real run exactly.
"""

from __future__ import annotations

import os
import time as _time  # progress rates only; never inside a block
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from chain.block import Block, Event, TxResult
from chain.codec import decode, encode
from chain.codes import ResultCode
from chain.crypto import sha256
from chain.errors import ChainError, InvalidBlock
from chain.merkle import merkle_root
from chain.tx import CancelOrder, OperatorCall, Transaction, decode_tx
from state import schema
from state.params import ChainParams
from state.store import Head, Store, decode_local
from state.transition import BlockOutcome, apply_body

REASONS = ("decode", "signature", "excluded_tx", "excluded_sender", "excluded_type",
           "operator_command", "after_excluded:<hash>", "after_dropped:<hash>",
           "<block-validity reason>")

FATES = ("identical", "diverged", "dropped")


@dataclass(frozen=True)
class ArchivedBlock:
    era: int
    height: int
    time: int
    txs: tuple[bytes, ...]
    results: tuple[bytes, ...]
    """The abandoned fork's TxResult bytes (transactions first, then the block's own)."""
    intact: bool = False
    """The producer's signature over the header verifies and the transactions hash to its
    ``tx_root``: the bytes are exactly what was committed, whose signatures every node
    checked then, so replay need not check them again (one header check per block instead
    of one per transaction). Any corruption of a transaction's bytes makes this False, and
    then every transaction's signature is checked."""


@dataclass(frozen=True)
class Exclusions:
    tx_hashes: frozenset[bytes] = frozenset()
    senders: frozenset[bytes] = frozenset()
    types: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[str]]:
        return {"tx": sorted(h.hex() for h in self.tx_hashes),
                "sender": sorted(s.hex() for s in self.senders), "type": sorted(self.types)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Exclusions:
        return cls(frozenset(bytes.fromhex(h) for h in doc.get("tx", [])),
                   frozenset(bytes.fromhex(s) for s in doc.get("sender", [])),
                   frozenset(doc.get("type", [])))

    @property
    def empty(self) -> bool:
        return not (self.tx_hashes or self.senders or self.types)


@dataclass(frozen=True)
class Fate:
    """What replay did with one abandoned transaction (a durable record: ``m`` + ``fate/`` +
    tx hash, written in the batch of the block that replayed it)."""

    hash: bytes
    era: int
    height: int
    """Height of the abandoned block that held it."""
    index: int
    fate: str
    """``identical``, ``diverged`` or ``dropped``."""
    reason: str = ""
    """Why it was dropped (:data:`REASONS`); empty otherwise."""
    why: str = ""
    """For ``diverged``: what differs, in a few words."""
    sender: str = ""
    type: str = ""
    new_height: int | None = None
    new_index: int | None = None
    code: int | None = None
    """Result code on the recovered chain (included transactions)."""
    original_code: int | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"hash": self.hash.hex(), "era": self.era, "height": self.height,
                "index": self.index, "fate": self.fate, "reason": self.reason,
                "why": self.why, "sender": self.sender, "type": self.type,
                "new_height": self.new_height, "new_index": self.new_index,
                "code": self.code, "original_code": self.original_code}

    @classmethod
    def from_obj(cls, doc: dict[str, Any]) -> Fate:
        return cls(bytes.fromhex(doc["hash"]), int(doc["era"]), int(doc["height"]),
                   int(doc["index"]), str(doc["fate"]), str(doc.get("reason", "")),
                   str(doc.get("why", "")), str(doc.get("sender", "")),
                   str(doc.get("type", "")), doc.get("new_height"), doc.get("new_index"),
                   doc.get("code"), doc.get("original_code"))

    def encode(self) -> bytes:
        return encode(self.to_obj())

    @classmethod
    def decode(cls, raw: bytes) -> Fate:
        return cls.from_obj(dict(decode(raw)))


@dataclass
class ReplayState:
    """What a replay carries from block to block (and rebuilds from its record on resume)."""

    exclusions: Exclusions
    blocked: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    """sender -> (``excluded`` or ``dropped``, hash of its first transaction left out): its
    later transactions' nonces no longer follow."""
    operator_cancelled: dict[tuple[bytes, int], int] = field(default_factory=dict)
    """(owner, order id) -> height of the operators' ``cancel_orders`` block that cancelled
    it on the recovered chain (explains cancels that now find no order)."""

    closed: dict[tuple[bytes, int], str] = field(default_factory=dict)
    """(owner, order id) -> how the order last left the book on the recovered chain since
    the replay began (``filled in block H``, ``cancelled (reason) in block H``, ...): what a
    cancel that now finds no order is told."""

    def note_closures(self, height: int, results: Sequence[TxResult]) -> None:
        """Record what the block at ``height`` did to orders (its transactions' results and
        its own, in order: the last word on an order wins)."""
        for r in results:
            for e in r.events:
                t = e.type
                if t == "fill":
                    d = e.as_dict()
                    self.closed[(bytes.fromhex(d["maker"]), int(d["maker_order"]))] = \
                        f"filled in block {height}"
                elif t == "order_cancelled" or t == "order_triggered":
                    d = e.as_dict()
                    if "owner" in d:
                        what = (f"cancelled ({d.get('reason')})" if t == "order_cancelled"
                                else "triggered")
                        self.closed[(bytes.fromhex(d["owner"]), int(d["order"]))] = \
                            f"{what} in block {height}"

    def blocked_json(self) -> dict[str, list[str]]:
        return {s.hex(): [k, h.hex()] for s, (k, h) in sorted(self.blocked.items())}

    @staticmethod
    def blocked_from_json(doc: dict[str, Any]) -> dict[bytes, tuple[str, bytes]]:
        return {bytes.fromhex(s): (str(v[0]), bytes.fromhex(v[1])) for s, v in doc.items()}


@dataclass
class Assembled:
    """One replayed block, applied (not committed)."""

    time: int
    outcome: BlockOutcome
    included: list[Transaction]
    fates: list[Fate] = field(default_factory=list)


def archived_blocks(store: Store, era: int, producer: bytes | None = None
                    ) -> list[ArchivedBlock]:
    """The abandoned blocks of ``era``, ascending height (``intact`` checked against
    ``producer``, the genesis producer key, when given)."""
    prefix = schema.ARCHIVE + schema.height_bytes(era)
    out: list[ArchivedBlock] = []
    results: dict[int, tuple[bytes, ...]] = {}
    blocks: dict[int, bytes] = {}
    for k, v in store.db.iterator(prefix=prefix):
        height = schema.height_from(k[len(prefix):len(prefix) + 8])
        kind = k[len(prefix) + 8:]
        if kind == b"b":
            blocks[height] = v
        elif kind == b"r":
            results[height] = tuple(decode_local(v))
    for height in sorted(blocks):
        raw = blocks[height]
        intact = False
        try:
            block = Block.decode_block(raw)
        except ChainError:
            # A corrupted archived block: its transactions cannot be recovered one by one.
            out.append(ArchivedBlock(era, height, 0, (), results.get(height, ())))
            continue
        time, txs = block.header.time, block.txs
        if producer is not None:
            try:
                block.signed_header.verify(producer)
                intact = merkle_root(txs) == block.header.tx_root
            except ChainError:
                intact = False  # check every transaction's signature instead
        out.append(ArchivedBlock(era, height, time, tuple(txs), results.get(height, ()),
                                 intact))
    return out


def classify(raw: bytes, ex: Exclusions, verify: bool = True
             ) -> tuple[Transaction | None, str]:
    """``(tx, "")`` for a transaction to try, or ``(tx or None, reason)`` for one dropped
    before execution (the decoded transaction when it decodes, so its sender is known)."""
    try:
        tx = decode_tx(raw)
    except ChainError:
        return None, "decode"
    if verify:
        try:
            tx.verify_signature()
        except ChainError:
            return tx, "signature"
    if tx.hash in ex.tx_hashes:
        return tx, "excluded_tx"
    if tx.sender in ex.senders:
        return tx, "excluded_sender"
    if tx.type in ex.types:
        return tx, "excluded_type"
    if isinstance(tx.payload, OperatorCall):
        return tx, "operator_command"
    return tx, ""


def classify_all(raws: Sequence[bytes], ex: Exclusions, verify: bool = True
                 ) -> list[tuple[Transaction | None, str]]:
    """:func:`classify` for a whole block; signatures are checked on every core (libsodium
    releases the GIL), the answers are the same as one by one."""
    if not verify or len(raws) < 32:
        return [classify(r, ex, verify) for r in raws]
    workers = os.cpu_count() or 1
    chunk = -(-len(raws) // workers)
    parts = [raws[i:i + chunk] for i in range(0, len(raws), chunk)]
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(lambda part: [classify(r, ex) for r in part], parts))
    return [c for part in done for c in part]


def code_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    try:
        return ResultCode(code).name.lower()
    except ValueError:
        return str(code)


def _decode_result(raw: bytes | None) -> TxResult | None:
    if raw is None:
        return None
    try:
        return TxResult.decode(raw)
    except ChainError:
        return None


def _short(v: str) -> str:
    """An address as its first 12 hex digits (the why stays one readable line)."""
    return v[:12] + "…" if len(v) == 64 else v


def _type_counts(events: Sequence[Event]) -> str:
    out: list[str] = []
    for e in events:
        if out and out[-1].split(" x")[0] == e.type:
            n = int(out[-1].split(" x")[1]) if " x" in out[-1] else 1
            out[-1] = f"{e.type} x{n + 1}"
        else:
            out.append(e.type)
    return ", ".join(out) or "none"


def _operator_note(tx: Transaction, old: TxResult, st: ReplayState) -> str:
    """Which orders the original result touched that the operators had cancelled."""
    hits: list[tuple[int, int]] = []  # (height, order id)
    if isinstance(tx.payload, CancelOrder):
        oid = tx.payload.order_id
        h = st.operator_cancelled.get((tx.sender, oid))
        if h is not None:
            return (f"order {oid} was already cancelled by the operators "
                    f"(cancel_orders in block {h})")
        how = st.closed.get((tx.sender, oid))
        if how is not None:
            return f"on the recovered chain order {oid} was {how}"
    for e in old.events:
        d = e.as_dict()
        if e.type == "order_cancelled" and "owner" in d:
            key = (bytes.fromhex(d["owner"]), int(d["order"]))
        elif e.type == "fill":
            key = (bytes.fromhex(d["maker"]), int(d["maker_order"]))
        else:
            continue
        h = st.operator_cancelled.get(key)
        if h is not None:
            hits.append((h, key[1]))
    if not hits:
        return ""
    blocks = sorted({h for h, _ in hits})
    return (f"{len(hits)} order(s) it met on the abandoned fork were already cancelled by the "
            f"operators (cancel_orders in block {', '.join(map(str, blocks))})")


def explain(tx: Transaction, old_raw: bytes | None, new: TxResult, st: ReplayState) -> str:
    """A short, readable account of how ``new`` differs from the abandoned fork's result."""
    old = _decode_result(old_raw)
    if old is None:
        return "no readable result on the abandoned fork"
    parts: list[str] = []
    if old.code != new.code:
        parts.append(f"code {code_name(old.code)} -> {code_name(new.code)}")
    elif [e.type for e in old.events] != [e.type for e in new.events]:
        parts.append(f"events [{_type_counts(old.events)}] -> [{_type_counts(new.events)}]")
    else:
        for i, (a, b) in enumerate(zip(old.events, new.events, strict=True)):
            if a == b:
                continue
            da, db = a.as_dict(), b.as_dict()
            diffs = [f"{k} {_short(da.get(k, '-'))} -> {_short(db.get(k, '-'))}"
                     for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
            parts.append(f"{a.type} #{i + 1}: " + ", ".join(diffs[:3]))
            break
    note = _operator_note(tx, old, st)
    if note:
        parts.append(note)
    return "; ".join(parts) or "same code and events, other bytes"


def assemble(store: Store, params: ChainParams, ab: ArchivedBlock, st: ReplayState,
             height: int, min_time: int) -> Assembled:
    """Apply the archived block's transactions that are block-valid on the restored state as
    the block at ``height`` (updates ``st.blocked``).

    Raises ``InvariantViolation`` if even these transactions break a guard (the replay
    stops; nothing is committed).
    """
    time = max(ab.time, min_time)
    fates: dict[int, Fate] = {}
    trying: list[tuple[int, Transaction]] = []
    classified = classify_all(ab.txs, st.exclusions, verify=not ab.intact)
    blocked = st.blocked
    for i, (raw, (tx, why)) in enumerate(zip(ab.txs, classified, strict=True)):
        h = sha256(raw)
        if tx is not None and not why and tx.sender in blocked:
            kind, cause = blocked[tx.sender]
            why = f"after_{kind}:{cause.hex()}"
        fates[i] = Fate(h, ab.era, ab.height, i, "dropped", why,
                        sender="" if tx is None else tx.sender.hex(),
                        type="" if tx is None else tx.type)
        if tx is None:
            continue
        if why:
            if tx.sender not in blocked:
                blocked[tx.sender] = ("excluded" if why.startswith("excluded") else "dropped",
                                      h)
            continue
        trying.append((i, tx))
    while True:
        txs = [t for _, t in trying]
        try:
            outcome = apply_body(store, params, height, time, txs)
            break
        except InvalidBlock as e:
            if e.tx_index is None:  # not one transaction's fault (a guard): stop
                raise
            i, bad = trying.pop(e.tx_index)
            fates[i] = replace(fates[i], reason=e.reason)
            blocked.setdefault(bad.sender, ("dropped", fates[i].hash))
            # its later transactions in this block cannot follow either: say why, up front
            kind, cause = blocked[bad.sender]
            keep: list[tuple[int, Transaction]] = []
            for j, t in trying:
                if t.sender == bad.sender and j > i:
                    fates[j] = replace(fates[j], reason=f"after_{kind}:{cause.hex()}")
                else:
                    keep.append((j, t))
            trying = keep
    for k, (i, tx) in enumerate(trying):
        r = outcome.results[k]
        if k:  # what the block's earlier transactions did to orders, for this one's why
            st.note_closures(height, outcome.results[k - 1:k])
        old = ab.results[i] if i < len(ab.results) else None
        orig: int | None
        if old is not None and old == outcome.result_bytes[k]:
            fate, orig, why = "identical", r.code, ""  # byte-identical: the fast path
        else:
            o = _decode_result(old)
            orig = None if o is None else o.code
            if o is not None and o.code == r.code and o.events == r.events:
                fate, why = "identical", ""
            else:
                fate, why = "diverged", explain(tx, old, r, st)
        fates[i] = replace(fates[i], fate=fate, reason="", why=why, new_height=height,
                           new_index=k, code=r.code, original_code=orig)
    st.note_closures(height, outcome.results[max(0, len(trying) - 1):])
    for i, f in fates.items():
        if f.fate == "dropped" and i < len(ab.results):
            o = _decode_result(ab.results[i])
            if o is not None:
                fates[i] = replace(f, original_code=o.code)
    return Assembled(time, outcome, [t for _, t in trying],
                     [fates[i] for i in sorted(fates)])


def reason_group(reason: str) -> str:
    """A drop reason without the hash it names (``after_excluded:<hash>`` ->
    ``after_excluded``), for counting."""
    return reason.split(":", 1)[0]


def summarize(fates: Sequence[Fate]) -> dict[str, Any]:
    counts: dict[str, int] = {"identical": 0, "diverged": 0, "dropped": 0}
    reasons: dict[str, int] = {}
    diverged: dict[str, int] = {}
    for f in fates:
        counts[f.fate] += 1
        if f.fate == "dropped":
            g = reason_group(f.reason)
            reasons[g] = reasons.get(g, 0) + 1
        elif f.fate == "diverged":
            k = f"{code_name(f.original_code)} -> {code_name(f.code)}"
            diverged[k] = diverged.get(k, 0) + 1
    return {**counts, "total": len(fates), "dropped_by_reason": dict(sorted(reasons.items())),
            "diverged_by_code": dict(sorted(diverged.items()))}


# -- running a replay ---------------------------------------------------------------------------

Commit = Callable[[list[Transaction], int, list[tuple[bytes, bytes | None]], BlockOutcome],
                  Head]
"""Sign and commit one replayed block: ``(txs, time, extra metadata, outcome) -> new head``.
The producer passes its own (node/replay.py); a rehearsal commits into its scratch store."""


@dataclass(frozen=True)
class Progress:
    """How far a replay is: what ``admin_progress`` and the log show."""

    era: int
    blocks_done: int
    blocks_total: int
    counts: dict[str, int]
    """identical / diverged / dropped so far."""
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        rate = self.blocks_done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        left = self.blocks_total - self.blocks_done
        return {"era": str(self.era), "blocks_done": self.blocks_done,
                "blocks_total": self.blocks_total, "counts": dict(self.counts),
                "blocks_per_s": round(rate, 1),
                "seconds_left": round(left / rate, 1) if rate > 0 else None}

    def line(self) -> str:
        j = self.to_json()
        c = self.counts
        eta = "?" if j["seconds_left"] is None else f"{j['seconds_left']:.0f}s"
        return (f"replay era {self.era}: block {self.blocks_done}/{self.blocks_total}; "
                f"{c['identical']} identical, {c['diverged']} diverged, {c['dropped']} "
                f"dropped; {j['blocks_per_s']} blocks/s; ~{eta} left")


def begin_record(store: Store, era: int, ex: Exclusions, by: list[str], started_ms: int
                 ) -> dict[str, Any]:
    """The replay's operation record (``m`` + ``op``), written before its first block."""
    head = store.head()
    if head is None:
        raise InvalidBlock("store has no genesis")
    return {"kind": "replay", "era": era, "next": 0, "exclusions": ex.to_json(), "by": by,
            "started_ms": started_ms, "start_height": head.height + 1, "blocked": {}}


def operator_cancellations(store: Store, lo: int, hi: int) -> dict[tuple[bytes, int], int]:
    """Orders the operators' ``cancel_orders`` cancelled in blocks ``lo..hi`` (inclusive)."""
    out: dict[tuple[bytes, int], int] = {}
    for h in range(lo, hi + 1):
        raw = store.block_bytes(h)
        if raw is None:
            continue
        ntx = len(Block.decode_block(raw).txs)
        for r_raw in (store.results(h) or [])[:ntx]:
            for e in TxResult.decode(r_raw).events:
                if e.type == "order_cancelled":
                    d = e.as_dict()
                    if d.get("reason") == "operator" and "owner" in d:
                        out[(bytes.fromhex(d["owner"]), int(d["order"]))] = h
    return out


def run_replay(store: Store, params: ChainParams, record: dict[str, Any], commit: Commit,
               *, fork_height: int,
               on_progress: Callable[[Progress], None] | None = None,
               after_block: Callable[[], None] | None = None) -> list[Fate]:
    """Replay from ``record['next']`` to the end, committing each block (with its fates, the
    advanced record and, for the last, the ``replayed`` marker, in the block's own batch);
    returns the fates of the blocks replayed now. ``fork_height`` is the height the rollback
    went to (the operators' own blocks since then explain some divergences)."""
    era = int(record["era"])
    st = ReplayState(Exclusions.from_json(record["exclusions"]),
                     ReplayState.blocked_from_json(record.get("blocked", {})))
    start = int(record.get("start_height", fork_height + 1))
    st.operator_cancelled = operator_cancellations(store, fork_height + 1, start - 1)
    head = store.head()
    assert head is not None
    for h in range(start, head.height + 1):  # blocks this replay committed before a crash
        st.note_closures(h, [TxResult.decode(r) for r in store.results(h) or []])
    blocks = archived_blocks(store, era, params.producer)
    fates: list[Fate] = []
    counts = {"identical": 0, "diverged": 0, "dropped": 0}
    t0 = _time.monotonic()
    first = int(record["next"])
    for idx in range(first, len(blocks)):
        ab = blocks[idx]
        done = idx + 1 == len(blocks)
        head = store.head()
        assert head is not None
        a = assemble(store, params, ab, st, head.height + 1, head.time + 1)
        meta: list[tuple[bytes, bytes | None]] = [
            (schema.META_FATE + f.hash, f.encode()) for f in a.fates]
        nxt = dict(record, next=idx + 1, blocked=st.blocked_json())
        meta.append((schema.META_OP, None if done else encode(nxt)))
        if done:
            meta.append((schema.META_REPLAYED + str(era).encode(),
                         str(head.height + 1).encode()))
        commit(a.included, a.time, meta, a.outcome)
        record = nxt
        fates.extend(a.fates)
        for f in a.fates:
            counts[f.fate] += 1
        if on_progress is not None:
            on_progress(Progress(era, idx + 1 - first, len(blocks) - first, dict(counts),
                                 _time.monotonic() - t0))
        if after_block is not None:
            after_block()
    return fates


def fates_of(store: Store, era: int) -> list[Fate]:
    """Every stored fate of ``era``'s abandoned transactions, in chain order."""
    out: list[Fate] = []
    for ab in archived_blocks(store, era):
        for raw in ab.txs:
            v = store.db.get(schema.META_FATE + sha256(raw))
            if v is not None:
                out.append(Fate.decode(v))
    return out


def replayed_height(store: Store, era: int) -> int | None:
    """Height of the block that replayed ``era``'s last abandoned block (None: not yet)."""
    v = store.db.get(schema.META_REPLAYED + str(era).encode())
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:  # written by an older version ("1"): unknown
        return None
