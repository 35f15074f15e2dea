"""The worked examples in docs/PROTOCOL.md stay true.

Every constant below is copied from the document. Each test recomputes it twice where it can:
once from the definition in the document (hand-assembled bytes, hashlib, libsodium directly)
and once through the node's own code path, and checks both against the constant. The §9.5
RPC captures come from a live node (wall-clock block times), so they are checked for
consistency instead: a validly signed block whose roots follow from the examples. The last
test checks that each constant still appears verbatim in the document.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import nacl.signing
import pytest

from chain.block import (
    Attr,
    Block,
    Event,
    Header,
    ResultCommitment,
    SignedHeader,
    TxResult,
    results_root,
    sign_header,
)
from chain.codec import encode
from chain.crypto import TAG_HEADER, TAG_TX, PrivateKey, signing_bytes, verify
from chain.merkle import EMPTY_ROOT, inclusion_proof, merkle_root, verify_inclusion
from chain.stateproof import StateProof, check_proof, decode_proof
from chain.tx import Transfer, decode_tx, make_tx
from genesis.format import parse_genesis
from genesis.initial_store import init_store
from genesis.state import chain_params, genesis_state_root, genesis_writes
from state.records import Account
from state.store import Store
from state.transition import apply_body, commit, import_block
from state.tree import StateTree
from state.tree_groups import DictNodeStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"

# --- §4.5 transaction -------------------------------------------------------------------------

SEED = bytes(range(32))
CHAIN_ID = "example-1"
TO = bytes([1] * 32)
AMOUNT = 1000

SEED_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
SENDER_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
SIGNING_BYTES_HEX = (
    "617070636861696e2f74782f76310082a8636861696e5f6964a96578616d706c652d31a36d736785a863686169"
    "6e5f6964a96578616d706c652d31a56e6f6e636500a77061796c6f616482a6616d6f756e74cd03e8a2746fc420"
    "0101010101010101010101010101010101010101010101010101010101010101a673656e646572c42003a107bf"
    "f3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8a474797065a87472616e73666572"
)
SIG_HEX = (
    "3a392844214b62ff2869ec46eab9cf5f3adb60b33ea02f4950824b9fcc502a16"
    "75bdd9a1422a13bf8a52b805bdcb0a150b6b52a46f4e6433d505e0e10f9d4002"
)
TX_HEX = (
    "86a8636861696e5f6964a96578616d706c652d31a56e6f6e636500a77061796c6f616482a6616d6f756e74cd03"
    "e8a2746fc4200101010101010101010101010101010101010101010101010101010101010101a673656e646572"
    "c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8a3736967c4403a39284421"
    "4b62ff2869ec46eab9cf5f3adb60b33ea02f4950824b9fcc502a1675bdd9a1422a13bf8a52b805bdcb0a150b6b"
    "52a46f4e6433d505e0e10f9d4002a474797065a87472616e73666572"
)
TX_HASH_HEX = "33866e1b6443ae587841d567c411c9e01611bd2fd4836a4cfae6334161ea5d2a"
TX_B64 = (
    "hqhjaGFpbl9pZKlleGFtcGxlLTGlbm9uY2UAp3BheWxvYWSCpmFtb3VudM0D6KJ0b8QgAQEBAQEBAQEBAQEBAQEBAQEB"
    "AQEBAQEBAQEBAQEBAQGmc2VuZGVyxCADoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuKNzaWfEQDo5KEQhS2L/"
    "KGnsRuq5z18622CzPqAvSVCCS5/MUCoWdb3ZoUIqE7+KUrgFvcsKFQtrUqRvTmQz1QXg4Q+dQAKkdHlwZah0cmFuc2Zl"
    "cg=="
)

# --- §7.5 genesis -----------------------------------------------------------------------------

PRODUCER = PrivateKey(bytes([2] * 32))
FAUCET = PrivateKey(bytes([3] * 32))
OPERATOR = PrivateKey(bytes([4] * 32))
ORACLE = PrivateKey(bytes([5] * 32))

GENESIS_DOC = {
    "chain_id": "example-1",
    "genesis_time": "2026-01-01T00:00:00.000Z",
    "initial_height": "1",
    "app_state": {
        "producer": {"name": "producer",
                     "pub_key": "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"},
        "faucet": {"name": "faucet",
                   "pub_key": "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1"},
        "operators": {
            "keys": [{"name": "operator-0", "pub_key":
                      "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c"}],
            "threshold": 1,
        },
        "oracles": [{"name": "oracle-0", "pub_key":
                     "6e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e3ca6f2e4fbfccd80505bf1"}],
        "accounts": [{"address": SENDER_HEX, "balance": "1000000"}],
        "markets": [],
    },
}
GENESIS_TIME_MS = 1767225600000
# Other spellings of the same instant (§7.3): all normalise to GENESIS_DOC's genesis_time.
GENESIS_TIME_SPELLINGS = [
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00+01:00",
    "2025-12-31T19:00:00.000000-05:00",
]
GENESIS_CANONICAL_LEN = 605
GENESIS_CANONICAL_HEX = (
    "84a96170705f737461746586a86163636f756e74739182a761646472657373d940303361313037626666336365"
    "313062653164373064643138653734626330393936376534643633303962613530643566316464633836363431"
    "32353533316238a762616c616e6365a731303030303030a666617563657482a46e616d65a6666175636574a770"
    "75625f6b6579d94065643439323863363238643163326336656165393033333839303539393536313239353932"
    "373361356336336639333633366331343631346163383733376431a76d61726b65747390a96f70657261746f72"
    "7382a46b6579739182a46e616d65aa6f70657261746f722d30a77075625f6b6579d94063613933616331373035"
    "313837303731643637623833633766663065666538313038653865633435333035373564373732363837393333"
    "336462646162653763a97468726573686f6c6401a76f7261636c65739182a46e616d65a86f7261636c652d30a7"
    "7075625f6b6579d940366537613163646432396230623738666431336166346335353938666566663465663261"
    "39373136366533636136663265346662666363643830353035626631a870726f647563657282a46e616d65a870"
    "726f6475636572a77075625f6b6579d94038313339373730656138376431373566353661333534363663333463"
    "376563636362386438613931623465653337613235646636306635623866633962333934a8636861696e5f6964"
    "a96578616d706c652d31ac67656e657369735f74696d65b8323032362d30312d30315430303a30303a30302e30"
    "30305aae696e697469616c5f686569676874a131"
)
GENESIS_HASH_HEX = "4d27540f13a3f198e0a20268e6d672cca7e9fcd0abeffc1a34effd631771e106"
PARAMS_HEX = (
    "87a8636861696e5f6964a96578616d706c652d31a6666175636574c420ed4928c628d1c2c6eae9033890599561"
    "2959273a5c63f93636c14614ac8737d1ac67656e657369735f74696d65cf0000019b76daa800b26f7065726174"
    "6f725f7468726573686f6c6401a96f70657261746f727391c420ca93ac1705187071d67b83c7ff0efe8108e8ec"
    "4530575d7726879333dbdabe7ca76f7261636c657391c4206e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e"
    "3ca6f2e4fbfccd80505bf1a870726f6475636572c4208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37"
    "a25df60f5b8fc9b394"
)
ACCOUNT_HEX = "82a762616c616e6365ce000f4240a56e6f6e636500"
GENESIS_STATE_ROOT_HEX = "18ad7e41f4d38adbb4167bde66e63f4b2285435be5d73b947f666ce7cf41521f"

# --- §6.9 first block -------------------------------------------------------------------------

BLOCK_TIME = 1767225601000
RESULT_HEX = (
    "83a4636f646500a66576656e74739182a561747472739382a36b6579a6616d6f756e74a576616c7565a4313030"
    "3082a36b6579a9726563697069656e74a576616c7565d940303130313031303130313031303130313031303130"
    "3130313031303130313031303130313031303130313031303130313031303130313031303130313031303182a3"
    "6b6579a673656e646572a576616c7565d940303361313037626666336365313062653164373064643138653734"
    "62633039393637653464363330396261353064356631646463383636343132353533316238a474797065a87472"
    "616e73666572a36c6f67a0"
)
RESULT_LEN = 236
RESULT_COMMITMENT_HEX = (
    "82a4636f646500a66576656e74739182a561747472739382a36b6579a6616d6f756e74a576616c7565a4313030"
    "3082a36b6579a9726563697069656e74a576616c7565d940303130313031303130313031303130313031303130"
    "3130313031303130313031303130313031303130313031303130313031303130313031303130313031303182a3"
    "6b6579a673656e646572a576616c7565d940303361313037626666336365313062653164373064643138653734"
    "62633039393637653464363330396261353064356631646463383636343132353533316238a474797065a87472"
    "616e73666572"
)
RESULT_COMMITMENT_LEN = 231
TX_ROOT_HEX = "bb0f3bcf9c8084e800140b831d0cec4ab8703fb5e1873517dfb8a3182cf5536a"
RESULTS_ROOT_HEX = "5187bdb52b24265f0fcc9d17d52b7f5e63aea5455eeb2dd389430d039b8a0d07"
CHANGES_HEX = (
    "9292c425616363742f0101010101010101010101010101010101010101010101010101010101010101c41382a7"
    "62616c616e6365cd03e8a56e6f6e63650092c425616363742f03a107bff3ce10be1d70dd18e74bc09967e4d630"
    "9ba50d5f1ddc8664125531b8c41582a762616c616e6365ce000f3e58a56e6f6e636501"
)
STATE_ROOT_HEX = "ec13fb8bbb63c54736df29a4c6771d039bbfac1462a29369a89ec41dca17cf50"
HEADER_HEX = (
    "89a8636861696e5f6964a96578616d706c652d31a365726100a668656967687401a9707265765f68617368c420"
    "4d27540f13a3f198e0a20268e6d672cca7e9fcd0abeffc1a34effd631771e106a870726f6475636572c4208139"
    "770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394ac726573756c74735f726f6f74c420"
    "5187bdb52b24265f0fcc9d17d52b7f5e63aea5455eeb2dd389430d039b8a0d07aa73746174655f726f6f74c420"
    "ec13fb8bbb63c54736df29a4c6771d039bbfac1462a29369a89ec41dca17cf50a474696d65cf0000019b76daab"
    "e8a774785f726f6f74c420bb0f3bcf9c8084e800140b831d0cec4ab8703fb5e1873517dfb8a3182cf5536a"
)
BLOCK_HASH_HEX = "4f9fe3d76e99437b0b201026a2cae5ad6e72d1ef5f8188f001f7d745912c1a4f"
HEADER_SIG_HEX = (
    "150e971130c64e9b121deb0d87ec3260036ed57158138849c52ba68a3e423b9c"
    "1f4b78938f97134616821f13bc847de7e93f2866640fe337ef49a711588c360c"
)
BLOCK_BYTES_LEN = 561
BLOCK_BYTES_SHA256_HEX = "f93ad9bd255284375441040468402295defe39cf26dbd815d528bf7782776fd0"

# --- §9.5 RPC examples (captured from a node; its block 4 must be a valid block) -------------

RPC_BLOCK_HEIGHT = 4  # after three empty blocks
RPC_BLOCK_HASH_HEX = "7cfca1c347c211e070c73f026ae2ca232736c425e45ede283658e93897fed8df"
RPC_PREV_HASH_HEX = "58aa7f4695f13d40e7b890ebbb044792c980515b4073c48cbb03f4a9628bcf17"
RPC_BLOCK_TIME = 1795552377926
# Empty blocks change no key, so block 4's state root is §6.9's.
RPC_STATE_ROOT_HEX = "ec13fb8bbb63c54736df29a4c6771d039bbfac1462a29369a89ec41dca17cf50"
RPC_SIG_HEX = (
    "51874c9d72c0184b4f023a3c62ca11abe550a2a18f0744e858ed1402748023d1"
    "a6b182b9dbd62d9ba617e25a433fcee3b8becd3c0e3a92c18bf68b95b06b2a02"
)
RPC_CANONICAL_B64_PREFIX = "gqZoZWFkZXKJqGNoYWluX2lk"
# status after block 6 (block 5 empty; block 6 holds the sender's failed nonce-1 transfer)
RPC_STATUS_APP_HASH_HEX = "058d468e6e5b9ad858601f0a39a51729a3f60c05e5dee04d4b0888db913080ea"
# `query` captures: the sender's account at height 4 and at height 0 (the genesis state),
# and the absent key acct/10…10 at height 0.
RPC_QUERY_VALUE_B64 = "gqdiYWxhbmNlzgAPPlilbm9uY2UB"
RPC_QUERY_PROOF_B64 = (
    "hKZiaXRtYXDEAQylZGVwdGgGpGxlYWbAqHNpYmxpbmdzksQggQ/mFt2+a4dkX4oSayufwiCdADUMpKSck5pS21/pZD3E"
    "IJMp+l47RVt2wm/eECpTnCrxkZ7YRDEVbfq/sqSQE5q2"
)
RPC_QUERY_GENESIS_VALUE_B64 = "gqdiYWxhbmNlzgAPQkClbm9uY2UA"
RPC_QUERY_GENESIS_PROOF_B64 = (
    "hKZiaXRtYXDEAQSlZGVwdGgGpGxlYWbAqHNpYmxpbmdzkcQgkyn6XjtFW3bCb94QKlOcKvGRnthEMRVt+r+ypJATmrY="
)
RPC_QUERY_ABSENT_PROOF_B64 = (
    "hKZiaXRtYXDEAQSlZGVwdGgGpGxlYWbEQKrdKphryZJqdiQhFtO2UmFSxxBt9gESuF10ZmMHp1d2IVbuL1yk5WaKUcSv"
    "AZSeWtPR9JlvWhQMvTs2g/EeTCeoc2libGluZ3ORxCCTKfpeO0VbdsJv3hAqU5wq8ZGe2EQxFW36v7KkkBOatg=="
)

# --- §6.7 state proofs over the §7.5 genesis state -------------------------------------------

SENDER_KEY_HEX = "616363742f03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
PARAM_KEY_HEX = "706172616d2f636861696e"
SENDER_KH_HEX = "aadd2a986bc9926a76242116d3b6526152c7106df60112b85d74666307a75776"
SENDER_VH_HEX = "2156ee2f5ca4e5668a51c4af01949e5ad3d1f4996f5a140cbd3b3683f11e4c27"
SENDER_LEAF_HEX = "b05a316b25bd70cfff263088cdace5f2bae0fe8335d063f980d2e409f18727f7"
PARAM_KH_HEX = "af7a4a5785e0d413530bcd335f9c0be0a8fa6353cc23fdc3824178743af7a7c9"
PARAM_VH_HEX = "024dbd7ae646987acdfaa321cc9be4d38693e26b219b4cb2b72cb1dcbfd95c3a"
PARAM_LEAF_HEX = "9329fa5e3b455b76c26fde102a539c2af1919ed84431156dfabfb2a490139ab6"
# The inclusion proof's path, from depth 5 (inner node over both leaves) up to the root.
SENDER_PATH_HEX = [
    "39c047652d970af092dcb659e5f00ec222470d110c67b16797f71314d54fa611",
    "ebd6847418add50ce63f279e0a226401cb36abf9002fa9c1925731ab58809fb8",
    "14ce3c3220bcf14150a2227accf567235b9c6ee0a15c10868a8a95cd3cbfb20a",
    "720ccb7e408d52ed7e159f2fbc86d0ebbeadfa9a082b992c29664271d8dbfec0",
    "d80dd03c7e491ade97be6d9bcaf5052a56129b04dc59b93ecf03ab1d58f6cbd6",
    GENESIS_STATE_ROOT_HEX,
]
INCLUSION_PROOF_HEX = (
    "84a66269746d6170c40104a5646570746806a46c656166c0a87369626c696e677391c4209329fa5e3b455b76c2"
    "6fde102a539c2af1919ed84431156dfabfb2a490139ab6"
)
# Absent key 1: the §4.5 recipient, acct/01…01; its path ends at an empty subtree.
RECIPIENT_KEY_HEX = "616363742f0101010101010101010101010101010101010101010101010101010101010101"
RECIPIENT_KH_HEX = "a46d7735a450ab54de222a1b8fa4b0cf2afa358230997f650acff690fbee75f6"
ABSENCE_EMPTY_PROOF_HEX = (
    "84a66269746d6170c40108a5646570746805a46c656166c0a87369626c696e677391c42039c047652d970af092"
    "dcb659e5f00ec222470d110c67b16797f71314d54fa611"
)
# Absent key 2: acct/10…10; its path ends at the sender's leaf.
OTHER_KEY_HEX = "616363742f1010101010101010101010101010101010101010101010101010101010101010"
OTHER_KH_HEX = "aab559da44521714915cd5c038996352742cf8ebe731873e243f106c197bb3c1"
ABSENCE_LEAF_PROOF_HEX = (
    "84a66269746d6170c40104a5646570746806a46c656166c440aadd2a986bc9926a76242116d3b6526152c7106d"
    "f60112b85d74666307a757762156ee2f5ca4e5668a51c4af01949e5ad3d1f4996f5a140cbd3b3683f11e4c27a8"
    "7369626c696e677391c4209329fa5e3b455b76c26fde102a539c2af1919ed84431156dfabfb2a490139ab6"
)

# --- §6.6 / §6.7 Merkle and digest reference values -------------------------------------------

EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MERKLE_ROOTS_HEX = {
    1: "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    2: "a20bf9a7cc2dc8a08f5f415a71b19f6ac427bab54d24eec868b5d3103449953a",
    3: "3b6cccd7e3e023ff393006f030315ee7ad9eb111b022b41fba7e5b7a3973f688",
    5: "b855b42d6c30f5b087e05266783fbd6e394f7b926013ccaa67700a8b0c5a596f",
}
PATH_5_2_HEX = [
    "583c7dfb7b3055d99465544032a571e10a134b1b6f769422bbb71fd7fa167a5d",
    "a20bf9a7cc2dc8a08f5f415a71b19f6ac427bab54d24eec868b5d3103449953a",
    "4f35212d12f9ad2036492c95f1fe79baf4ec7bd9bef3dffa7579f2293ff546a4",
]


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def ms_str(s: str) -> bytes:
    """msgpack str for a short ASCII string (fixstr), written by hand."""
    assert len(s) < 32
    return bytes([0xA0 | len(s)]) + s.encode()


def ms_bin(b: bytes) -> bytes:
    assert len(b) < 256
    return b"\xc4" + bytes([len(b)]) + b


# --- §6.7 from scratch: the state tree's rules as the document states them -------------------

ZERO32 = b"\x00" * 32


def doc_bit(kh: bytes, i: int) -> int:
    """Bit i of a key hash, bit 0 = most significant bit of byte 0."""
    return (kh[i // 8] >> (7 - i % 8)) & 1


def doc_leaf(key: bytes, value: bytes) -> tuple[bytes, bytes]:
    return sha(key), sha(value)


def doc_subtree(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    """Hash of a set of (kh, vh) at ``depth``: empty, one leaf (collapsed), or a split."""
    if not items:
        return ZERO32
    if len(items) == 1:
        kh, vh = items[0]
        return sha(b"\x00" + kh + vh)
    left = [it for it in items if doc_bit(it[0], depth) == 0]
    right = [it for it in items if doc_bit(it[0], depth) == 1]
    return sha(b"\x01" + doc_subtree(left, depth + 1) + doc_subtree(right, depth + 1))


def doc_root(state: dict[bytes, bytes]) -> bytes:
    return doc_subtree([doc_leaf(k, v) for k, v in state.items()], 0)


def doc_prove(state: dict[bytes, bytes], key: bytes) -> bytes:
    """The canonical proof bytes for ``key``, assembled by hand (msgpack written out)."""
    items = [doc_leaf(k, v) for k, v in state.items()]
    kh = sha(key)
    depth, siblings, bits, leaf = 0, [], [], None
    here = items
    while True:
        if not here:
            break  # empty subtree: absence
        if len(here) == 1:
            if here[0][0] != kh:
                leaf = here[0][0] + here[0][1]  # another key's leaf: absence
            break
        b = doc_bit(kh, depth)
        same = [it for it in here if doc_bit(it[0], depth) == b]
        other = [it for it in here if doc_bit(it[0], depth) != b]
        sib = doc_subtree(other, depth + 1)
        bits.append(sib != ZERO32)
        if sib != ZERO32:
            siblings.append(sib)
        here = same
        depth += 1
    bitmap = bytearray((depth + 7) // 8)
    for i, set_ in enumerate(bits):
        if set_:
            bitmap[i // 8] |= 0x80 >> (i % 8)
    assert len(bitmap) < 32 and len(siblings) < 16
    return (b"\x84" + ms_str("bitmap") + ms_bin(bytes(bitmap)) + ms_str("depth") + bytes([depth])
            + ms_str("leaf") + (b"\xc0" if leaf is None else ms_bin(leaf))
            + ms_str("siblings") + bytes([0x90 | len(siblings)])
            + b"".join(ms_bin(x) for x in siblings))


def doc_verify(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> bool:
    """The verification algorithm of §6.7, written from the text (not chain.stateproof)."""
    d = proof.depth
    if not 0 <= d <= 256 or len(proof.bitmap) != (d + 7) // 8:
        return False
    bits = [doc_bit(proof.bitmap, i) for i in range(len(proof.bitmap) * 8)]
    if any(bits[d:]) or sum(bits[:d]) != len(proof.siblings):
        return False
    if any(len(x) != 32 or x == ZERO32 for x in proof.siblings):
        return False
    kh = sha(key)
    if value is not None:
        if proof.leaf is not None:
            return False
        node = sha(b"\x00" + kh + sha(value))
    elif proof.leaf is None:
        node = ZERO32
    else:
        other = proof.leaf[:32]
        if other == kh or any(doc_bit(other, i) != doc_bit(kh, i) for i in range(d)):
            return False
        node = sha(b"\x00" + proof.leaf)
    sibs = list(proof.siblings)
    for i in range(d - 1, -1, -1):
        sib = sibs.pop() if bits[i] else ZERO32
        node = sha(b"\x01" + (sib + node if doc_bit(kh, i) else node + sib))
    return node == root


# ---------------------------------------------------------------------------------------------


def test_transaction_example() -> None:
    key = PrivateKey(SEED)
    assert key.seed.hex() == SEED_HEX
    assert key.public_key.hex() == SENDER_HEX

    # The body and signing bytes, assembled by hand from §4.2 (no codec involved).
    body = (b"\x85" + ms_str("chain_id") + ms_str(CHAIN_ID) + ms_str("nonce") + b"\x00"
            + ms_str("payload") + b"\x82" + ms_str("amount") + b"\xcd\x03\xe8"
            + ms_str("to") + ms_bin(TO) + ms_str("sender") + ms_bin(key.public_key)
            + ms_str("type") + ms_str("transfer"))
    signed = (b"appchain/tx/v1" + b"\x00" + b"\x82" + ms_str("chain_id") + ms_str(CHAIN_ID)
              + ms_str("msg") + body)
    assert signed.hex() == SIGNING_BYTES_HEX
    assert len(signed) == 177

    # ed25519 is deterministic: libsodium directly gives the documented signature.
    sig = nacl.signing.SigningKey(SEED).sign(signed).signature
    assert sig.hex() == SIG_HEX

    envelope = (b"\x86" + body[1:body.index(ms_str("type"))] + ms_str("sig") + b"\xc4\x40" + sig
                + ms_str("type") + ms_str("transfer"))
    assert envelope.hex() == TX_HEX
    assert len(envelope) == 208
    assert sha(envelope).hex() == TX_HASH_HEX
    assert base64.b64encode(envelope).decode() == TX_B64

    # The node's own code path agrees.
    tx = make_tx(key, CHAIN_ID, 0, Transfer(TO, AMOUNT))
    assert tx.raw.hex() == TX_HEX
    assert tx.sig.hex() == SIG_HEX
    assert tx.hash.hex() == TX_HASH_HEX
    assert tx.signed_bytes().hex() == SIGNING_BYTES_HEX
    unsigned = {"chain_id": CHAIN_ID, "nonce": 0, "payload": {"amount": AMOUNT, "to": TO},
                "sender": key.public_key, "type": "transfer"}
    assert signing_bytes(TAG_TX, CHAIN_ID, unsigned).hex() == SIGNING_BYTES_HEX

    decoded = decode_tx(bytes.fromhex(TX_HEX))
    decoded.verify_signature()
    assert (decoded.chain_id, decoded.sender.hex(), decoded.nonce) == (CHAIN_ID, SENDER_HEX, 0)
    assert decoded.payload == Transfer(TO, AMOUNT)
    assert decoded.hash.hex() == TX_HASH_HEX


def _genesis_changes() -> list[tuple[bytes, bytes]]:
    return sorted([
        (b"acct/" + bytes.fromhex(SENDER_HEX), bytes.fromhex(ACCOUNT_HEX)),
        (b"param/chain", bytes.fromhex(PARAMS_HEX)),
    ])


def test_genesis_example() -> None:
    g = parse_genesis(json.loads(json.dumps(GENESIS_DOC)))
    assert g.producer.pub_key == PRODUCER.public_key
    assert g.faucet.pub_key == FAUCET.public_key
    assert g.operators[0].pub_key == OPERATOR.public_key
    assert g.oracles[0].pub_key == ORACLE.public_key
    assert g.genesis_time_ms == GENESIS_TIME_MS
    assert g.genesis_time == GENESIS_DOC["genesis_time"]
    assert g.to_json_obj() == GENESIS_DOC
    assert encode(GENESIS_DOC).hex() == GENESIS_CANONICAL_HEX
    assert len(bytes.fromhex(GENESIS_CANONICAL_HEX)) == GENESIS_CANONICAL_LEN
    assert sha(bytes.fromhex(GENESIS_CANONICAL_HEX)).hex() == GENESIS_HASH_HEX
    assert g.hash.hex() == GENESIS_HASH_HEX
    # §7.3: every spelling of the instant gives the same normalised document and hash.
    for spelling in GENESIS_TIME_SPELLINGS:
        other = parse_genesis(json.loads(json.dumps({**GENESIS_DOC, "genesis_time": spelling})))
        assert other.genesis_time_ms == GENESIS_TIME_MS
        assert other.to_json_obj() == GENESIS_DOC
        assert other.hash.hex() == GENESIS_HASH_HEX

    assert chain_params(g).encode().hex() == PARAMS_HEX
    assert Account(1_000_000, 0).encode().hex() == ACCOUNT_HEX

    # §7.4: the state tree root over the genesis writes, by the §6.7 rules and by the node.
    changes = _genesis_changes()
    assert genesis_writes(g) == changes
    assert doc_root(dict(changes)).hex() == GENESIS_STATE_ROOT_HEX
    assert genesis_state_root(g).hex() == GENESIS_STATE_ROOT_HEX
    assert StateTree(DictNodeStore()).apply(changes).hex() == GENESIS_STATE_ROOT_HEX


def test_first_block_example(tmp_path: Path) -> None:
    g = parse_genesis(json.loads(json.dumps(GENESIS_DOC)))
    tx = make_tx(PrivateKey(SEED), CHAIN_ID, 0, Transfer(TO, AMOUNT))

    # Definitions of §6.4-§6.7, computed without the state machine.
    result = TxResult(0, "", (Event("transfer", (
        Attr("amount", "1000"), Attr("recipient", TO.hex()), Attr("sender", SENDER_HEX))),),)
    assert result.encode().hex() == RESULT_HEX
    assert len(result.encode()) == RESULT_LEN
    assert sha(b"\x00" + tx.raw).hex() == TX_ROOT_HEX  # one leaf: root = leaf hash
    # The results_root leaf is the result without its log: drop the `a3 "log" a0` entry and
    # turn the map header 83 into 82 (§6.4).
    log_entry = ms_str("log") + ms_str("")
    assert bytes.fromhex(RESULT_HEX).endswith(log_entry)
    commitment = b"\x82" + bytes.fromhex(RESULT_HEX)[1:-len(log_entry)]
    assert commitment.hex() == RESULT_COMMITMENT_HEX
    assert len(commitment) == RESULT_COMMITMENT_LEN
    assert ResultCommitment(result.code, result.events).encode() == commitment
    assert encode({"code": 0, "events": [e.to_obj() for e in result.events]}) == commitment
    assert sha(b"\x00" + commitment).hex() == RESULTS_ROOT_HEX
    assert results_root([result]).hex() == RESULTS_ROOT_HEX
    # The log is not committed: rewording it leaves the root alone (§5.3).
    assert results_root([TxResult(0, "reworded", result.events)]).hex() == RESULTS_ROOT_HEX
    changes = [
        (b"acct/" + TO, Account(1000, 0).encode()),
        (b"acct/" + bytes.fromhex(SENDER_HEX), Account(999_000, 1).encode()),
    ]
    assert encode([[k, v] for k, v in changes]).hex() == CHANGES_HEX
    state_root = doc_root({**dict(_genesis_changes()), **dict(changes)})
    assert state_root.hex() == STATE_ROOT_HEX

    header = Header(
        chain_id=CHAIN_ID, era=0, height=1, prev_hash=bytes.fromhex(GENESIS_HASH_HEX),
        time=BLOCK_TIME, tx_root=bytes.fromhex(TX_ROOT_HEX),
        results_root=bytes.fromhex(RESULTS_ROOT_HEX), state_root=state_root,
        producer=PRODUCER.public_key,
    )
    assert header.encode().hex() == HEADER_HEX
    assert sha(bytes.fromhex(HEADER_HEX)).hex() == BLOCK_HASH_HEX
    signed = (b"appchain/header/v1\x00\x82" + ms_str("chain_id") + ms_str(CHAIN_ID)
              + ms_str("msg") + bytes.fromhex(HEADER_HEX))
    assert signed == signing_bytes(TAG_HEADER, CHAIN_ID, header.to_obj())
    sig = nacl.signing.SigningKey(bytes([2] * 32)).sign(signed).signature
    assert sig.hex() == HEADER_SIG_HEX
    assert sign_header(PRODUCER, header).hex() == HEADER_SIG_HEX

    block_bytes = (b"\x83" + ms_str("header") + bytes.fromhex(HEADER_HEX) + ms_str("sig")
                   + b"\xc4\x40" + sig + ms_str("txs") + b"\x91" + ms_bin(tx.raw))
    assert block_bytes == Block(header, sig, (tx.raw,)).encode()
    assert len(block_bytes) == BLOCK_BYTES_LEN
    assert sha(block_bytes).hex() == BLOCK_BYTES_SHA256_HEX

    # The producer's code path computes the same roots from the genesis state...
    with Store(tmp_path / "producer") as store:
        head = init_store(store, g)
        assert (head.height, head.hash.hex(), head.state_root.hex(), head.era, head.time) == (
            0, GENESIS_HASH_HEX, GENESIS_STATE_ROOT_HEX, 0, GENESIS_TIME_MS)
        out = apply_body(store, chain_params(g), 1, BLOCK_TIME, [tx])
        assert out.result_bytes == [bytes.fromhex(RESULT_HEX)]  # stored with the log
        assert out.overlay.changes() == changes
        assert (out.tx_root.hex(), out.results_root.hex(), out.state_root.hex()) == (
            TX_ROOT_HEX, RESULTS_ROOT_HEX, STATE_ROOT_HEX)
        new_head = commit(store, Block(header, sig, (tx.raw,)), block_bytes, [tx], out)
        assert new_head.hash.hex() == BLOCK_HASH_HEX

    # ...and a follower accepts the block bytes as valid (§6.8).
    with Store(tmp_path / "follower") as store:
        init_store(store, g)
        head = import_block(store, block_bytes)
        assert (head.height, head.hash.hex(), head.state_root.hex()) == (
            1, BLOCK_HASH_HEX, STATE_ROOT_HEX)


def test_rpc_example_block_is_valid() -> None:
    """§9.5: the captured block 4 is a well-formed, producer-signed block of this chain.

    Its roots are deterministic: tx_root and results_root are §6.9's, and state_root is the
    tree root of the genesis state with §6.9's changes (empty blocks change no key).
    """
    tree = StateTree(DictNodeStore())
    tree.apply(_genesis_changes())
    for _ in range(RPC_BLOCK_HEIGHT - 1):
        assert tree.apply([]).hex() == GENESIS_STATE_ROOT_HEX
    changes = [
        (b"acct/" + TO, Account(1000, 0).encode()),
        (b"acct/" + bytes.fromhex(SENDER_HEX), Account(999_000, 1).encode()),
    ]
    root = tree.apply(changes)
    assert root.hex() == RPC_STATE_ROOT_HEX == STATE_ROOT_HEX
    header = Header(
        chain_id=CHAIN_ID, era=0, height=RPC_BLOCK_HEIGHT,
        prev_hash=bytes.fromhex(RPC_PREV_HASH_HEX), time=RPC_BLOCK_TIME,
        tx_root=bytes.fromhex(TX_ROOT_HEX), results_root=bytes.fromhex(RESULTS_ROOT_HEX),
        state_root=root, producer=PRODUCER.public_key,
    )
    assert header.hash.hex() == RPC_BLOCK_HASH_HEX
    verify(PRODUCER.public_key, bytes.fromhex(RPC_SIG_HEX), header.signed_bytes())
    canonical = base64.b64encode(SignedHeader(header, bytes.fromhex(RPC_SIG_HEX)).encode())
    assert canonical.decode().startswith(RPC_CANONICAL_B64_PREFIX)
    # The status example's app hash: block 5 empty, block 6 only bumps the sender's nonce
    # (its transfer failed with code 3).
    tree.apply([])
    root = tree.apply([(b"acct/" + bytes.fromhex(SENDER_HEX), Account(999_000, 2).encode())])
    assert root.hex() == RPC_STATUS_APP_HASH_HEX
    state = {**dict(_genesis_changes()), **dict(changes)}
    state[b"acct/" + bytes.fromhex(SENDER_HEX)] = Account(999_000, 2).encode()
    assert doc_root(state).hex() == RPC_STATUS_APP_HASH_HEX

    # The `query` captures: values and proofs check against the roots they were served with.
    sender_key = b"acct/" + bytes.fromhex(SENDER_HEX)
    value = base64.b64decode(RPC_QUERY_VALUE_B64)
    assert value == Account(999_000, 1).encode()
    proof = decode_proof(base64.b64decode(RPC_QUERY_PROOF_B64))
    check_proof(bytes.fromhex(RPC_STATE_ROOT_HEX), sender_key, value, proof)
    assert doc_verify(bytes.fromhex(RPC_STATE_ROOT_HEX), sender_key, value, proof)
    g_value = base64.b64decode(RPC_QUERY_GENESIS_VALUE_B64)
    assert g_value.hex() == ACCOUNT_HEX
    assert base64.b64decode(RPC_QUERY_GENESIS_PROOF_B64).hex() == INCLUSION_PROOF_HEX
    assert base64.b64decode(RPC_QUERY_ABSENT_PROOF_B64).hex() == ABSENCE_LEAF_PROOF_HEX


def test_merkle_reference_values() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_ROOT_HEX == sha(b"").hex()
    assert merkle_root([]).hex() == EMPTY_ROOT_HEX
    for n, root in MERKLE_ROOTS_HEX.items():
        assert merkle_root([bytes([i]) for i in range(n)]).hex() == root
    # By the RFC 6962 definition, for three leaves: k = 2.
    leaf = [sha(b"\x00" + bytes([i])) for i in range(3)]
    assert sha(b"\x01" + sha(b"\x01" + leaf[0] + leaf[1]) + leaf[2]).hex() == MERKLE_ROOTS_HEX[3]
    items = [bytes([i]) for i in range(5)]
    path = inclusion_proof(items, 2)
    assert [p.hex() for p in path] == PATH_5_2_HEX
    assert verify_inclusion(items[2], 2, 5, path, bytes.fromhex(MERKLE_ROOTS_HEX[5]))


def test_state_proof_example() -> None:
    """§6.7: the genesis tree's hashes and three proofs, by hand and through the node's tree."""
    state = dict(_genesis_changes())
    root = bytes.fromhex(GENESIS_STATE_ROOT_HEX)
    sender_key, param_key = bytes.fromhex(SENDER_KEY_HEX), bytes.fromhex(PARAM_KEY_HEX)
    assert sender_key == b"acct/" + bytes.fromhex(SENDER_HEX)
    assert param_key == b"param/chain"
    assert sha(sender_key).hex() == SENDER_KH_HEX
    assert sha(bytes.fromhex(ACCOUNT_HEX)).hex() == SENDER_VH_HEX
    assert sha(b"\x00" + sha(sender_key) + sha(bytes.fromhex(ACCOUNT_HEX))).hex() == SENDER_LEAF_HEX
    assert sha(param_key).hex() == PARAM_KH_HEX
    assert sha(bytes.fromhex(PARAMS_HEX)).hex() == PARAM_VH_HEX
    assert sha(b"\x00" + sha(param_key) + sha(bytes.fromhex(PARAMS_HEX))).hex() == PARAM_LEAF_HEX
    # The two key hashes agree on their first 5 bits (10101) and part at bit 5.
    kh_s, kh_p = bytes.fromhex(SENDER_KH_HEX), bytes.fromhex(PARAM_KH_HEX)
    assert [doc_bit(kh_s, i) for i in range(6)] == [1, 0, 1, 0, 1, 0]
    assert [doc_bit(kh_p, i) for i in range(6)] == [1, 0, 1, 0, 1, 1]
    node = sha(b"\x01" + bytes.fromhex(SENDER_LEAF_HEX) + bytes.fromhex(PARAM_LEAF_HEX))
    path = [node]
    for i in range(4, -1, -1):
        node = sha(b"\x01" + (ZERO32 + node if doc_bit(kh_s, i) else node + ZERO32))
        path.append(node)
    assert [p.hex() for p in path] == SENDER_PATH_HEX

    tree = StateTree(DictNodeStore())
    assert tree.apply(genesis_writes(parse_genesis(json.loads(json.dumps(GENESIS_DOC))))) == root
    cases = [
        (sender_key, bytes.fromhex(ACCOUNT_HEX), INCLUSION_PROOF_HEX),
        (bytes.fromhex(RECIPIENT_KEY_HEX), None, ABSENCE_EMPTY_PROOF_HEX),
        (bytes.fromhex(OTHER_KEY_HEX), None, ABSENCE_LEAF_PROOF_HEX),
    ]
    assert sha(bytes.fromhex(RECIPIENT_KEY_HEX)).hex() == RECIPIENT_KH_HEX
    assert bytes.fromhex(RECIPIENT_KEY_HEX) == b"acct/" + TO
    assert sha(bytes.fromhex(OTHER_KEY_HEX)).hex() == OTHER_KH_HEX
    assert bytes.fromhex(OTHER_KEY_HEX) == b"acct/" + bytes([0x10] * 32)
    for key, value, proof_hex in cases:
        assert doc_prove(state, key).hex() == proof_hex
        proof = tree.prove(key)
        assert proof.encode().hex() == proof_hex
        assert decode_proof(bytes.fromhex(proof_hex)) == proof
        check_proof(root, key, value, proof)
        assert doc_verify(root, key, value, proof)
        # A proof shows one thing only: not the opposite, not under another root.
        other_value = b"\x00" if value is None else None
        assert not doc_verify(root, key, other_value, proof)
        assert not doc_verify(bytes.fromhex(STATE_ROOT_HEX), key, value, proof)
    assert tree.prove(bytes.fromhex(OTHER_KEY_HEX)).leaf == kh_s + bytes.fromhex(SENDER_VH_HEX)


CONSTANTS_IN_DOC = [
    SEED_HEX, SENDER_HEX, SIGNING_BYTES_HEX, SIG_HEX, TX_HEX, TX_HASH_HEX, TX_B64,
    GENESIS_CANONICAL_HEX, GENESIS_HASH_HEX, PARAMS_HEX, ACCOUNT_HEX, GENESIS_STATE_ROOT_HEX,
    f'"genesis_time": "{GENESIS_DOC["genesis_time"]}"', *GENESIS_TIME_SPELLINGS,
    f"({GENESIS_CANONICAL_LEN} bytes,",
    str(GENESIS_TIME_MS), str(BLOCK_TIME), RESULT_HEX, RESULT_COMMITMENT_HEX,
    f"{RESULT_LEN} bytes", f"{RESULT_COMMITMENT_LEN} bytes", TX_ROOT_HEX, RESULTS_ROOT_HEX,
    CHANGES_HEX, STATE_ROOT_HEX,
    HEADER_HEX, BLOCK_HASH_HEX, HEADER_SIG_HEX, f"({BLOCK_BYTES_LEN} bytes",
    BLOCK_BYTES_SHA256_HEX, EMPTY_ROOT_HEX,
    *MERKLE_ROOTS_HEX.values(), *PATH_5_2_HEX,
    RPC_BLOCK_HASH_HEX, RPC_PREV_HASH_HEX, str(RPC_BLOCK_TIME), RPC_STATE_ROOT_HEX, RPC_SIG_HEX,
    RPC_CANONICAL_B64_PREFIX, RPC_STATUS_APP_HASH_HEX,
    RPC_QUERY_VALUE_B64, RPC_QUERY_PROOF_B64, RPC_QUERY_GENESIS_VALUE_B64,
    RPC_QUERY_GENESIS_PROOF_B64, RPC_QUERY_ABSENT_PROOF_B64,
    SENDER_KEY_HEX, PARAM_KEY_HEX, SENDER_KH_HEX, SENDER_VH_HEX, SENDER_LEAF_HEX, PARAM_KH_HEX,
    PARAM_VH_HEX, PARAM_LEAF_HEX, *SENDER_PATH_HEX, INCLUSION_PROOF_HEX, RECIPIENT_KEY_HEX,
    RECIPIENT_KH_HEX, ABSENCE_EMPTY_PROOF_HEX, OTHER_KEY_HEX, OTHER_KH_HEX,
    ABSENCE_LEAF_PROOF_HEX,
    f'"genesis_hash": "{GENESIS_HASH_HEX}"', f'"results_root":"{RESULTS_ROOT_HEX}"',
]


@pytest.mark.parametrize("value", CONSTANTS_IN_DOC)
def test_constants_appear_in_the_document(value: str) -> None:
    assert value in DOC.read_text(encoding="utf-8"), f"{value[:40]}... missing from {DOC}"
