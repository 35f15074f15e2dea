"""A light client: trusts only a genesis file, checks everything else a node says.

Trust root (:class:`TrustRoot`): the genesis fixes the chain id, the producer key, the genesis
hash (the ``prev_hash`` of block ``initial_height``) and the genesis state root, computed here
with :func:`genesis.state.genesis_state_root`. Nothing the node says is believed until it is
checked against that root:

* headers are fetched in JSON-RPC batches of ``header`` calls (at most :data:`MAX_BATCH` per
  request) and each is checked by :class:`HeaderVerifier` against the last trusted header:
  canonical bytes match the JSON, chain id, era, producer, producer signature, height + 1,
  ``prev_hash`` = previous hash, strictly increasing time;
* a state read (``query`` with ``prove=true``) must carry the signed header already verified
  at its height (or none at the genesis height, whose root is the genesis state root), and its
  proof must show exactly the returned value (or absence) under that header's ``state_root``.

Every refusal is a :class:`LightClientError` whose ``check`` names what failed (a stable short
name, see :data:`CHECKS`), so callers and users can tell a forged signature from a broken link.

Eras (after an operator rollback) are followed only through a fork certificate
(chain/admin.py) signed by at least the genesis threshold of genesis operators: when the node's
era is newer than the latest trusted header's, the client fetches the certificate
(``fork_certificate`` RPC), checks its signatures, checks that it continues from a header it
already trusts (height and hash), forgets the trusted headers above that point (they belong to
the abandoned fork) and then verifies the new era's headers from there. From then on a header
of an older era is refused (``abandoned_era``). Refusals: ``era_change_without_certificate``,
``certificate_signatures`` (unsigned, unknown key, bad signature, under threshold),
``certificate_mismatch`` (wrong chain, era, or fork point).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from chain.admin import SignedForkCertificate
from chain.block import SignedHeader
from chain.errors import ChainError
from chain.stateproof import InvalidProof, StateProof, check_proof, decode_proof
from genesis.format import Genesis
from node.client.rpc_client import RPCCallError
from node.client.trust import (
    ERA_CHANGE_WITHOUT_CERTIFICATE,
    AsyncRPC,
    HeaderVerifier,
    LightClientError,
    TrustedHeader,
    TrustRoot,
    Verified,
    check_certificate,
    decode_header_answer,
)
from state.records import (
    Account,
    Market,
    MarketState,
    Order,
    Position,
    market_key,
    market_state_key,
    order_key,
    position_key,
)
from state.schema import account_key

MAX_BATCH = 100
"""Header calls per JSON-RPC batch (the server's batch limit)."""


class LightClient:
    """Verifies what one node says against a genesis file (see the module doc)."""

    def __init__(self, genesis: Genesis, rpc: AsyncRPC, *,
                 verifier: HeaderVerifier | None = None) -> None:
        self.trust = TrustRoot.from_genesis(genesis)
        self.rpc = rpc
        self.verifier = verifier or HeaderVerifier(self.trust)
        anchor = self.trust.anchor()
        self.trusted: dict[int, TrustedHeader] = {anchor.height: anchor}
        self.latest = anchor
        self.pending_certificate: SignedForkCertificate | None = None
        """A checked certificate whose era's first header is still to be verified."""

    # -- headers -----------------------------------------------------------------------------

    async def node_era(self) -> int:
        st = await self.rpc.call("status")
        try:
            return int(st["sync_info"]["era"])
        except (TypeError, KeyError, ValueError) as e:
            raise LightClientError("response", "status answer is malformed") from e

    async def node_height(self) -> int:
        """The node's latest height (from ``status``; a target only, not trusted)."""
        st = await self.rpc.call("status")
        try:
            network = st["node_info"]["network"]
            height = int(st["sync_info"]["latest_block_height"])
        except (TypeError, KeyError, ValueError) as e:
            raise LightClientError("response", "status answer is malformed") from e
        if network != self.trust.chain_id:
            raise LightClientError("chain_id", f"the node serves chain {network!r}, the "
                                   f"genesis is for {self.trust.chain_id!r}")
        return height

    async def fork_certificate(self, prev: TrustedHeader, sh: SignedHeader) -> object | None:
        """The fork certificate opening ``sh``'s era, from the node (None if it has none)."""
        return await self._fetch_certificate(sh.header.era)

    async def _fetch_certificate(self, era: int) -> SignedForkCertificate | None:
        try:
            ans = await self.rpc.call("fork_certificate", era=str(era))
        except RPCCallError:
            return None
        try:
            return SignedForkCertificate.decode(bytes.fromhex(ans["certificate"]))
        except (TypeError, KeyError, ValueError, ChainError) as e:
            raise LightClientError("response", f"fork certificate of era {era} does not "
                                   f"decode ({e})") from e

    async def follow_fork(self, node_era: int) -> None:
        """The node is in a newer era than our latest header: move our trusted chain back to
        the fork point the certificate names (fetching headers up to it if needed)."""
        era = node_era
        cert = await self._fetch_certificate(era)
        if cert is None:
            raise LightClientError("era", f"the node is in era {era} but serves no fork "
                                   "certificate for it", reason=ERA_CHANGE_WITHOUT_CERTIFICATE)
        check_certificate(self.trust, cert)
        c = cert.certificate
        if c.era <= self.latest.era:
            raise LightClientError("era", f"fork certificate of era {c.era} is not newer than "
                                   f"the trusted era {self.latest.era}",
                                   reason="certificate_mismatch")
        if self.latest.height < c.to_height:
            await self.sync(c.to_height)
        fork_point = self.trusted.get(c.to_height)
        if fork_point is None or fork_point.hash != c.to_block_hash:
            raise LightClientError("era", f"the fork certificate continues from block "
                                   f"{c.to_block_hash.hex()} at height {c.to_height}, which "
                                   "is not a header this client trusts",
                                   reason="certificate_mismatch")
        for h in [h for h in self.trusted if h > c.to_height]:
            del self.trusted[h]  # the abandoned fork's headers
        self.latest = fork_point
        self.pending_certificate = cert

    async def sync(self, target: int) -> TrustedHeader:
        """Verify headers from the latest trusted one up to ``target``; return ``target``'s."""
        if target < self.trust.genesis_height:
            raise LightClientError("height", f"height {target} is before the genesis height "
                                   f"{self.trust.genesis_height}")
        if target in self.trusted:
            return self.trusted[target]
        while self.latest.height < target:
            start = self.latest.height + 1
            heights = list(range(start, min(target, start + MAX_BATCH - 1) + 1))
            answers = await self.rpc.call_batch(
                [("header", {"height": str(h)}) for h in heights])
            if len(answers) != len(heights):
                raise LightClientError("response", "the header batch answer has "
                                       f"{len(answers)} entries for {len(heights)} calls")
            for h, ans in zip(heights, answers, strict=True):
                if isinstance(ans, RPCCallError):
                    raise LightClientError("response", f"the node did not serve header {h}: "
                                           f"{ans.message} (code {ans.code})")
                sh = decode_header_answer(ans, f"header {h}")
                cert: object | None = None
                if sh.header.era != self.latest.era:
                    pending = self.pending_certificate
                    if pending is not None and pending.certificate.era == sh.header.era:
                        cert = pending
                    else:
                        cert = await self.fork_certificate(self.latest, sh)
                th = self.verifier.verify(self.latest, sh, cert)
                self.trusted[th.height] = th
                self.latest = th
        return self.trusted[target]

    async def header(self, height: int | None = None) -> TrustedHeader:
        """The verified header at ``height`` (default: the node's latest)."""
        node_era = await self.node_era()
        if node_era > self.latest.era:
            await self.follow_fork(node_era)
        elif node_era < self.latest.era:
            raise LightClientError("era", f"the node is in era {node_era}, abandoned for era "
                                   f"{self.latest.era}", reason="abandoned_era")
        if height is not None and height in self.trusted:
            return self.trusted[height]
        latest = await self.node_height()
        target = latest if height is None else height
        if target > latest:
            raise LightClientError("response", f"the node's latest height is {latest}, below "
                                   f"the requested height {target}")
        return await self.sync(target)

    # -- state -------------------------------------------------------------------------------

    async def get_verified(self, key: bytes, height: int | None = None) -> Verified:
        """Read ``key`` at ``height`` (default: the node's latest) and prove it."""
        trusted = await self.header(height)
        h = trusted.height
        ans = await self.rpc.call("query", path="/key", data=key.hex(), height=str(h),
                                  prove=True)
        if not isinstance(ans, dict) or not isinstance(ans.get("response"), dict):
            raise LightClientError("response", "query answer has no response object")
        resp = ans["response"]
        if resp.get("key") != key.hex():
            raise LightClientError("response", f"asked for key {key.hex()}, the answer is for "
                                   f"{resp.get('key')!r}")
        if resp.get("height") != str(h):
            raise LightClientError("response", f"asked for height {h}, the answer is for "
                                   f"{resp.get('height')!r}")
        self._check_answer_header(ans.get("signed_header"), trusted)
        value = self._value_of(resp)
        proof = self._proof_of(resp)
        try:
            check_proof(trusted.state_root, key, value, proof)
        except InvalidProof as e:
            shown = "absence" if value is None else "the returned value"
            raise LightClientError("proof", f"the proof does not show {shown} under the "
                                   f"state root of height {h} ({e.reason}: {e})",
                                   reason=e.reason) from e
        return Verified(key, value, trusted)

    async def get(self, key: bytes, height: int | None = None) -> tuple[bytes | None, int]:
        """The verified value of state key ``key`` (``None`` if absent) and its height."""
        v = await self.get_verified(key, height)
        return v.value, v.height

    async def account(self, address: bytes, height: int | None = None
                      ) -> tuple[Account, int]:
        """The verified account (all zero when absent) and its height."""
        v = await self.get_verified(account_key(address), height)
        return decode_account(v.value), v.height

    async def position(self, owner: bytes, symbol: str, height: int | None = None
                       ) -> tuple[Position | None, Verified]:
        """The verified position of ``owner`` in ``symbol`` (``None``: flat, no key) and the
        read it came from (``pos/<owner>/<symbol>``)."""
        v = await self.get_verified(position_key(owner, symbol), height)
        return decode_value(v.value, Position, "a position"), v

    async def market(self, symbol: str, height: int | None = None
                     ) -> tuple[Market | None, MarketState | None, Verified, Verified]:
        """The verified parameters (``mkt/<symbol>``) and state (``mks/<symbol>``: oracle
        price, funding index, open interest, mode) of a market, both proven at one height
        (``None`` for an absent key: no such market)."""
        h = (await self.header(height)).height
        vm = await self.get_verified(market_key(symbol), h)
        vs = await self.get_verified(market_state_key(symbol), h)
        m = decode_value(vm.value, Market, "market parameters")
        if m is not None and m.symbol != symbol:
            raise LightClientError("value", f"the proven market parameters under "
                                   f"{symbol!r} name the market {m.symbol!r}")
        return m, decode_value(vs.value, MarketState, "a market state"), vm, vs

    async def order(self, owner: bytes, oid: int, height: int | None = None
                    ) -> tuple[Order | None, Verified]:
        """The verified open order ``(owner, oid)`` (``ord/<owner><id>``; ``None``: not open,
        i.e. filled, cancelled or never placed) and the read it came from."""
        v = await self.get_verified(order_key(owner, oid), height)
        o = decode_value(v.value, Order, "an order")
        if o is not None and (o.owner, o.id) != (owner, oid):
            raise LightClientError("value", f"the proven order under {owner.hex()}/{oid} says "
                                   f"{o.owner.hex()}/{o.id}")
        return o, v

    def _check_answer_header(self, sh_json: Any, trusted: TrustedHeader) -> None:
        if trusted.signed is None:  # the genesis height: no block, its root is the genesis'
            if sh_json is not None:
                raise LightClientError("header_mismatch", f"the answer carries a signed "
                                       f"header for the genesis height {trusted.height}")
            return
        if sh_json is None:
            raise LightClientError("header_mismatch", "the answer carries no signed header "
                                   f"for height {trusted.height}")
        sh = decode_header_answer(sh_json, "the answer's signed header")
        if sh != trusted.signed:
            raise LightClientError("header_mismatch", "the answer's signed header differs "
                                   f"from the verified header at height {trusted.height}")

    @staticmethod
    def _value_of(resp: dict[str, Any]) -> bytes | None:
        raw, exists = resp.get("value"), resp.get("exists")
        if type(exists) is not bool:
            raise LightClientError("value", "the answer's exists flag is not true or false")
        if exists != (raw is not None):
            raise LightClientError("value", f"the answer says exists={str(exists).lower()} "
                                   f"but its value is {'null' if raw is None else 'present'}")
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise LightClientError("value", "the answer's value is not base64")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            raise LightClientError("value", "the answer's value is not base64") from e

    @staticmethod
    def _proof_of(resp: dict[str, Any]) -> StateProof:
        raw = resp.get("proof")
        if not isinstance(raw, str):
            raise LightClientError("proof", "the answer carries no proof")
        try:
            return decode_proof(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError, ChainError) as e:
            raise LightClientError("proof", f"the proof does not decode ({e})",
                                   reason="malformed_proof") from e


def decode_account(value: bytes | None) -> Account:
    """An account from its (verified) state value; absent means all zero."""
    if value is None:
        return Account(0, 0)
    try:
        return Account.decode(value)
    except ChainError as e:
        raise LightClientError("value", f"the proven value is not an account ({e})") from e


def decode_value(value: bytes | None, cls: type[Any], what: str) -> Any:
    """A struct from its (verified) state value, or None when absent; a value that does not
    decode canonically as ``cls`` is refused (check ``value``)."""
    if value is None:
        return None
    try:
        return cls.decode(value)
    except ChainError as e:
        raise LightClientError("value", f"the proven value is not {what} ({e})") from e
