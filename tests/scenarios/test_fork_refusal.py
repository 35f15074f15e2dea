"""A real follower process against a FAKE producer that sends it bad fork certificates.

The fake producer is a trio TCP server on 127.0.0.1 (run in a thread of the test) speaking
the peer protocol of docs/PROTOCOL.md §13 with node/p2p/wire.py's frames. It serves the
real, producer-signed blocks of a chain a real producer made (a follower verifies the
producer's signature and re-executes every block, so nothing else would be accepted), then
"rolls back" below the follower's head and answers with a ``fork`` frame, as the real
producer does (§13.2 step 2), on the live connection and on every reconnect.

Each refused certificate (under the operators' threshold, for another chain, not
decodable) must halt the follower with ``check`` ``fork_certificate``, ``by`` ``node`` and a
reason saying why, exactly once however often it reconnects and meets the certificate
again, without rolling anything back, while it keeps serving reads. The positive control, a
properly signed certificate sent through the same fake producer, IS applied: the refusals
are the follower's judgement, not a fake producer the follower cannot understand.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from chain.admin import ForkCertificate, sign_fork
from chain.block import Block
from chain.tx import Transfer, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from node.client.rpc_client import RPCCallError, RPCClient
from node.config import Home
from node.dev.local import NodeProcess, make_genesis, make_home, running_node
from node.p2p.wire import (
    VERSION,
    BlockMsg,
    ForkMsg,
    FramedStream,
    Hello,
    ProtocolError,
    StatusMsg,
    Subscribe,
    check_hello,
)
from node.wire_json import b64
from state import meta, schema
from state.records import Account
from state.schema import account_key
from state.store import Store

TIMEOUT_S = 30.0


def wait_for(pred: Callable[[], Any], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def status(url: str) -> dict[str, Any]:
    with RPCClient(url) as c:
        return c.call("status")  # type: ignore[no-any-return]


def height(url: str) -> int:
    return int(status(url)["sync_info"]["latest_block_height"])


def account(url: str, addr: bytes) -> Account:
    with RPCClient(url) as c:
        ans = c.call("query", path="/key", data=account_key(addr).hex(), prove=False)
    value = ans["response"]["value"]
    return Account(0, 0) if value is None else Account.decode(base64.b64decode(value))


# -- the real chain the fake producer serves -------------------------------------------------


@dataclass(frozen=True)
class Chain:
    genesis: Genesis
    keys: DevnetKeys
    blocks: list[bytes]
    """The real producer's canonical block bytes, heights 1..len(blocks)."""
    tx_height: int
    """The height of the one transfer (so a rollback below it has state to undo)."""

    def block(self, h: int) -> Block:
        return Block.decode_block(self.blocks[h - 1])

    def certificate(self, to_height: int, chain_id: str | None = None) -> ForkCertificate:
        b = self.block(to_height)
        return ForkCertificate(chain_id or self.genesis.chain_id, 1, len(self.blocks),
                               to_height, b.hash, b.header.state_root, "drill")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """A real producer (3 operators, threshold 2) makes a dozen blocks with one transfer."""
    g, keys = make_genesis(accounts=2, operators=3, threshold=2)
    home = make_home(tmp_path_factory.mktemp("producer"), g, keys.producer,
                     block_interval_ms=50)
    a, b = keys.accounts
    with running_node(home) as pn, RPCClient(pn.url) as c:
        wait_for(lambda: height(pn.url) >= 3, "the producer's first blocks")
        tx = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 1000))
        res = c.call("broadcast_tx_commit", tx=b64(tx.raw))
        assert res["tx_result"]["code"] == 0, res
        at = int(res["height"])
        wait_for(lambda: height(pn.url) >= at + 3, "blocks after the transfer")
        assert pn.terminate() == 0
    with Store(home.store_dir) as s:
        blocks = [s.block_bytes(h) or b"" for h in range(1, at + 4)]
    assert all(blocks)
    return Chain(g, keys, blocks, at)


# -- the fake producer ------------------------------------------------------------------------


class FakeProducer:
    """A peer-protocol server serving ``blocks[:head]``; when ``head`` drops below what a
    follower holds it sends ``fork`` with ``certs`` (and on every later subscribe of a head
    that is not on its chain), like node/p2p/peer_server.py."""

    def __init__(self, genesis: Genesis, blocks: list[bytes]) -> None:
        self.genesis = genesis
        self.blocks = blocks
        self.hashes = [Block.decode_block(b).hash for b in blocks]
        self.head = len(blocks)
        self.certs: list[bytes] = []
        self.attach: dict[int, bytes] = {}
        """``certificate`` field to send with the block at a height (normally none: the
        real chain has one era)."""
        self.subscribes: list[Subscribe] = []
        self.forks_sent = 0
        self.dropped: list[str] = []
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.port}"

    def roll_back(self, to_height: int, certs: list[bytes]) -> None:
        """The producer's head moves below its followers': they get ``fork`` with ``certs``."""
        self.certs = certs  # (set before the head: the server reads the head first)
        self.head = to_height

    def __enter__(self) -> FakeProducer:
        self._thread.start()
        assert self._ready.wait(10), f"fake producer did not start: {self._failed!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._scope is not None:
            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)
        assert not self._thread.is_alive(), "fake producer did not stop"
        assert self._failed is None, f"fake producer crashed: {self._failed!r}"

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:  # reported by __exit__ / __enter__
            self._failed = e
            self._ready.set()

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            self._token = trio.lowlevel.current_trio_token()
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            self._ready.set()
            await trio.serve_listeners(self._handle, listeners)

    def _hello(self) -> Hello:
        g, h = self.genesis, self.head
        return Hello(VERSION, g.chain_id, g.hash, "producer", 0, h,
                     self.hashes[h - 1] if h else g.hash, "")

    def _on_chain(self, sub: Subscribe) -> bool:
        if sub.height == 0:
            return sub.head_hash == self.genesis.hash
        return sub.height <= self.head and self.hashes[sub.height - 1] == sub.head_hash

    async def _fork(self, fs: FramedStream) -> None:
        await fs.send(ForkMsg(list(self.certs)))
        self.forks_sent += 1

    async def _handle(self, stream: trio.SocketStream) -> None:
        fs = FramedStream(stream)
        try:
            async with stream:
                with trio.fail_after(10):
                    hello = await fs.receive()
                    if not isinstance(hello, Hello):
                        raise ProtocolError("the first frame must be hello")
                    check_hello(hello, self.genesis.chain_id, self.genesis.hash)
                    assert hello.role == "follower", hello
                    await fs.send(self._hello())
                    sub = await fs.receive()
                if not isinstance(sub, Subscribe):
                    raise ProtocolError(f"expected subscribe, got {sub!r}")
                self.subscribes.append(sub)
                if not self._on_chain(sub):
                    await self._fork(fs)
                    return
                sent = sub.height
                while True:
                    head = self.head
                    if head < sent:  # "a rollback on this node": the follower must follow
                        await self._fork(fs)
                        return
                    while sent < head:
                        await fs.send(BlockMsg(sent + 1, self.blocks[sent],
                                               self.attach.get(sent + 1, b"")))
                        sent += 1
                    await fs.send(StatusMsg(head, 0, False, "", "", 0))
                    await trio.sleep(0.05)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                ProtocolError, OSError) as e:
            self.dropped.append(str(e) or type(e).__name__)


# -- the cases --------------------------------------------------------------------------------


def bad_certificate(chain: Chain, case: str) -> bytes:
    ops = chain.keys.operators
    cert = chain.certificate(chain.tx_height - 1)
    if case == "under_threshold":
        return sign_fork(cert, [ops[0]], 2).encode()
    if case == "other_chain":  # properly signed by two operators, but for another chain
        return sign_fork(replace(cert, chain_id="other-chain"), ops[:2], 2).encode()
    assert case == "undecodable"
    good = sign_fork(cert, ops[:2], 2).encode()
    return good[:-7]  # a truncated certificate: the signature bytes are cut short


WHY = {
    "under_threshold": ("fork certificate of era 1 refused: 1 distinct operator signature(s), "
                        "the genesis threshold is 2"),
    "other_chain": "fork certificate of era 1 is for chain 'other-chain'",
    "undecodable": "a fork certificate from the producer does not decode: ",
}


@contextmanager
def synced_follower(chain: Chain, fake: FakeProducer, root: Path) -> Iterator[NodeProcess]:
    """A real follower process of the fake producer, synced to its head (the real blocks)."""
    home = make_home(root, chain.genesis, None)
    with running_node(home, follow=fake.peer) as fn:
        wait_for(lambda: height(fn.url) == len(chain.blocks),
                 "the follower to sync the real blocks from the fake producer")
        yield fn


def assert_chain_untouched(chain: Chain, url: str) -> None:
    """Still at the real head, era 0, every block as the producer made it."""
    st = status(url)
    n = len(chain.blocks)
    assert st["sync_info"]["latest_block_height"] == str(n), st["sync_info"]
    assert st["sync_info"]["era"] == "0" and st["sync_info"]["next_era"] == "0"
    assert st["follower"]["rollbacks"] == "0"
    with RPCClient(url) as c:
        for h in range(1, n + 1):
            assert c.call("header", height=h)["hash"] == chain.block(h).hash.hex(), h
    sender = chain.keys.accounts[0].public_key
    assert account(url, sender).nonce == 1  # the transfer is still there


def assert_store_untouched(chain: Chain, store_dir: Path) -> None:
    with Store(store_dir) as s:
        head = s.head()
        assert head is not None and head.height == len(chain.blocks) and head.era == 0
        for h, raw in enumerate(chain.blocks, start=1):
            assert s.block_bytes(h) == raw, h
        assert list(s.db.iterator(prefix=schema.ARCHIVE)) == []  # nothing archived
        assert s.db.get(schema.fork_key(1)) is None  # the certificate was not stored
        halt = meta.halt(s)
        assert halt is not None and halt.check == "fork_certificate"  # durable


@pytest.mark.parametrize("case", list(WHY))
def test_a_refused_fork_certificate_halts_the_follower_once_and_rolls_nothing_back(
        chain: Chain, tmp_path: Path, case: str) -> None:
    n = len(chain.blocks)
    with FakeProducer(chain.genesis, chain.blocks) as fake, \
            synced_follower(chain, fake, tmp_path / "f") as fn:
        assert_chain_untouched(chain, fn.url)
        assert status(fn.url)["halted"] is None
        fake.roll_back(chain.tx_height - 1, [bad_certificate(chain, case)])
        wait_for(lambda: status(fn.url)["halted"] is not None, "the follower to halt")
        halt = status(fn.url)["halted"]
        assert halt["check"] == "fork_certificate" and halt["by"] == "node", halt
        assert halt["reason"].startswith(WHY[case]), halt
        assert halt["at_height"] == str(n), halt
        ev = halt["evidence"]
        if case == "under_threshold":
            assert ev == {"era": "1", "why": "under_threshold"}, ev
        elif case == "other_chain":
            assert ev == {"era": "1"}, ev
        else:
            assert ev["error"] and halt["reason"].endswith(ev["error"]), ev
        # It reconnects and meets the same certificate on every subscribe: not a new halt.
        seen, forks = len(fake.subscribes), fake.forks_sent
        wait_for(lambda: len(fake.subscribes) >= seen + 3 and fake.forks_sent >= forks + 3,
                 "the follower to reconnect and be sent the certificate again, 3 times")
        assert all(s.height == n for s in fake.subscribes[seen:])  # still at its head
        assert status(fn.url)["halted"] == halt  # the same record: same since_ms
        assert fn.log().count("HALTED by") == 1, fn.log()
        assert "Traceback" not in fn.log()
        # Nothing was rolled back, and the halted follower goes on serving reads.
        assert_chain_untouched(chain, fn.url)
        assert fn.terminate() == 0
    assert_store_untouched(chain, tmp_path / "f" / "data" / "store")


def test_a_properly_signed_certificate_through_the_same_fake_producer_is_followed(
        chain: Chain, tmp_path: Path) -> None:
    """The positive control: threshold met (operators 1 and 2 of 3), right chain, continuing
    from the follower's own block below the transfer: the follower rolls back to it."""
    to = chain.tx_height - 1
    good = sign_fork(chain.certificate(to), chain.keys.operators[1:], 2).encode()
    sender = chain.keys.accounts[0].public_key
    with FakeProducer(chain.genesis, chain.blocks) as fake, \
            synced_follower(chain, fake, tmp_path / "f") as fn:
        assert account(fn.url, sender).nonce == 1
        fake.roll_back(to, [good])
        wait_for(lambda: height(fn.url) == to, "the follower to roll back")
        # It subscribes again from the fork point, which is on the (fake) producer's chain.
        wait_for(lambda: any(s.height == to for s in fake.subscribes)
                 and status(fn.url)["follower"]["connected"], "the follower to resubscribe")
        st = status(fn.url)
        assert st["halted"] is None, st["halted"]
        assert st["follower"]["rollbacks"] == "1"
        assert st["sync_info"]["latest_block_hash"] == chain.block(to).hash.hex()
        assert st["sync_info"]["era"] == "0"  # the head is block `to`, of era 0 ...
        assert st["sync_info"]["next_era"] == "1"  # ... and the next block opens era 1
        assert account(fn.url, sender).nonce == 0  # the transfer is undone
        assert fake.forks_sent == 1
        with RPCClient(fn.url) as c:
            assert c.call("fork_certificate", era="1")["certificate"] == good.hex()
            old = c.call("block", era="0", height=str(to + 1))  # the abandoned block
            assert old["abandoned"] is True
            assert old["block_id"]["hash"] == chain.block(to + 1).hash.hex()
        assert f"followed the producer's rollback: {len(chain.blocks)} -> {to}, era 1" \
            in fn.log()
        assert fn.log().count("HALTED by") == 0
        assert fn.terminate() == 0


def test_a_refusal_halt_survives_a_restart_and_is_lifted_by_a_valid_certificate(
        chain: Chain, tmp_path: Path) -> None:
    to = chain.tx_height - 1
    home = tmp_path / "f"
    with FakeProducer(chain.genesis, chain.blocks) as fake:
        with synced_follower(chain, fake, home) as fn:
            fake.roll_back(to, [bad_certificate(chain, "under_threshold")])
            wait_for(lambda: status(fn.url)["halted"] is not None, "the follower to halt")
            halt = status(fn.url)["halted"]
            assert fn.terminate() == 0
        # Restarted: still halted (the record is durable), the same record, not a new one,
        # although it meets the refused certificate again as soon as it subscribes.
        seen = len(fake.subscribes)
        with running_node(Home(home), follow=fake.peer) as fn:
            wait_for(lambda: len(fake.subscribes) >= seen + 2, "the follower to reconnect")
            assert status(fn.url)["halted"] == halt
            assert_chain_untouched(chain, fn.url)
            # The producer's operators fix their certificate: it lifts the halt.
            good = sign_fork(chain.certificate(to), chain.keys.operators[:2], 2).encode()
            fake.roll_back(to, [good])
            wait_for(lambda: height(fn.url) == to, "the follower to roll back")
            wait_for(lambda: status(fn.url)["halted"] is None, "the halt to be lifted")
            assert status(fn.url)["follower"]["rollbacks"] == "1"
            assert fn.log().count("HALTED by") == 1  # (the first run's, in the same log)
            assert fn.terminate() == 0



# -- certificates riding on a `block` frame ---------------------------------------------------
#
# A `block` frame carries the certificate of a new era with the era's first block (§13.1).
# A stored certificate decides the era the next block must carry, so the follower checks it
# before storing it; a bad one is the peer's protocol error (dropped, reconnected), never a
# crash and never a stored certificate.


def test_a_block_frame_with_an_undecodable_certificate_does_not_stop_the_follower(
        chain: Chain, tmp_path: Path) -> None:
    k = chain.tx_height - 1
    with FakeProducer(chain.genesis, chain.blocks) as fake:
        fake.attach[k + 1] = b"\x00 not a certificate"
        home = make_home(tmp_path / "f", chain.genesis, None)
        with running_node(home, follow=fake.peer) as fn:
            wait_for(lambda: fn.proc.poll() is not None or len(fake.subscribes) >= 3,
                     "the follower to reconnect after the bad frame (or to exit)")
            assert fn.proc.poll() is None, "the follower exited:\n" + fn.log()[-2000:]
            assert height(fn.url) == k
            fake.attach.clear()  # the peer behaves again: the follower goes on
            wait_for(lambda: height(fn.url) == len(chain.blocks), "the follower to sync")
            assert fn.terminate() == 0


def test_an_unverified_certificate_sent_with_a_block_is_not_stored(chain: Chain,
                                                                    tmp_path: Path) -> None:
    k = chain.tx_height - 1
    b = chain.block(k)
    forged = sign_fork(ForkCertificate(chain.genesis.chain_id, 1, 99, k, b.hash,
                                       b.header.state_root, "forged"),
                       chain.keys.operators[:1], 2).encode()  # 1 of 3: under threshold
    with FakeProducer(chain.genesis, chain.blocks) as fake:
        fake.attach[k + 1] = forged
        home = make_home(tmp_path / "f", chain.genesis, None)
        with running_node(home, follow=fake.peer) as fn:
            wait_for(lambda: len(fake.subscribes) >= 3, "the follower to be sent it 3 times")
            assert height(fn.url) == k
            with RPCClient(fn.url) as c, pytest.raises(RPCCallError):
                c.call("fork_certificate", era="1")  # not stored, not served
            fake.attach.clear()  # the peer behaves again: the follower goes on
            seen = len(fake.subscribes)
            wait_for(lambda: height(fn.url) == len(chain.blocks)
                     or status(fn.url)["halted"] is not None
                     or (len(fake.subscribes) > seen + 2 and "expected 1" in
                         status(fn.url)["follower"]["last_error"]),
                     "the follower to sync, or halt (or to stay stuck on era 1)")
            st = status(fn.url)
            # Either goes: the forged certificate refused as a protocol error (the follower
            # syncs on once the peer behaves) or halting on it (fork_certificate, by node).
            halted = st["halted"] is not None and st["halted"]["check"] == "fork_certificate"
            assert halted or height(fn.url) == len(chain.blocks), st["follower"]
            assert st["sync_info"]["next_era"] == "0"
            assert fn.terminate() == 0
