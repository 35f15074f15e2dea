"""The header's state root is the state tree's root: proofs at every held height verify
against that height's header, and undoing blocks restores the tree root exactly."""

from __future__ import annotations

from pathlib import Path

from chain.block import Block
from chain.stateproof import check_proof, verify
from chain.tx import Deposit, Transfer, make_tx
from genesis.initial_store import init_store
from genesis.state import genesis_state_root
from node.dev.local import make_genesis
from state.queries import query_state
from state.schema import TREE, account_key
from state.store import Store
from state.transition import import_block
from state.tree import StateTree
from tests.harness.exchange import build


def make_chain(tmp_path: Path, blocks: int = 6):  # type: ignore[no-untyped-def]
    g, keys = make_genesis(accounts=4, balance=10_000)
    store = Store(tmp_path / "db")
    genesis_head = init_store(store, g)
    a, b, c, d = keys.accounts
    roots = {genesis_head.height: genesis_head.state_root}
    dumps = {genesis_head.height: store.dump_state()}
    nonce = 0

    for i in range(blocks):
        txs = [make_tx(a, g.chain_id, nonce, Transfer(b.public_key, 10 + i))]
        nonce += 1
        if i % 2:
            # a new account appears
            txs.append(make_tx(keys.faucet, g.chain_id, i // 2, Deposit(bytes([i]) * 32, 5)))
        head = import_block(store, build(store, keys, txs))
        roots[head.height] = head.state_root
        dumps[head.height] = store.dump_state()
    return g, keys, store, roots, dumps


def test_genesis_root_is_computable_without_a_store(tmp_path: Path) -> None:
    g, _, store, roots, _ = make_chain(tmp_path, blocks=0)
    assert roots[0] == genesis_state_root(g)
    assert StateTree(store.overlay(TREE)).root == roots[0]
    store.close()


def test_proofs_at_every_held_height_verify_against_that_header(tmp_path: Path) -> None:
    g, keys, store, roots, dumps = make_chain(tmp_path)
    a, b, c, d = keys.accounts
    probe = [account_key(a.public_key), account_key(b.public_key), account_key(bytes([1]) * 32),
             account_key(bytes([3]) * 32), b"acct/" + b"\x99" * 32, b"param/chain", b"nope"]
    for h, root in roots.items():
        state_then = dict(dumps[h])
        for key in probe:
            ans = query_state(store, key, h, prove=True)
            assert ans.value == state_then.get(key)
            assert ans.proof is not None
            check_proof(root, key, ans.value, ans.proof)
            if h > 0:
                assert ans.signed_header is not None
                assert ans.signed_header.header.state_root == root
                assert ans.signed_header.header.height == h
            # A proof never verifies a different value.
            assert not verify(root, key, b"forged", ans.proof)
    store.close()


def test_undoing_blocks_restores_the_tree_root_and_state_exactly(tmp_path: Path) -> None:
    g, keys, store, roots, dumps = make_chain(tmp_path)
    head = store.head()
    assert head is not None
    tree_dumps = {}
    for h in range(head.height, 0, -1):
        assert StateTree(store.overlay(TREE)).root == roots[h]
        block = Block.decode_block(store.block_bytes(h) or b"")
        assert block.header.state_root == roots[h]
        tree_dumps[h] = list(store.db.iterator(prefix=TREE))
        # Apply block h's undo record (state and tree keys alike) in one batch.
        with store.db.write_batch(transaction=True) as wb:
            for k, prior in store.undo_record(h, keyspace=None) or []:
                if prior is None:
                    wb.delete(k)
                else:
                    wb.put(k, prior)
        assert StateTree(store.overlay(TREE)).root == roots[h - 1]
        assert store.dump_state() == dumps[h - 1]
    # Back at genesis, the tree holds exactly the nodes of a fresh genesis tree.
    fresh = Store(tmp_path / "fresh")
    init_store(fresh, g)
    assert list(store.db.iterator(prefix=TREE)) == list(fresh.db.iterator(prefix=TREE))
    fresh.close()
    store.close()
