"""Genesis JSON: round trip, stable hash, and a named field for every validation failure."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from chain.errors import InvalidGenesis
from genesis.format import Genesis, format_time_ms, load_genesis, parse_genesis, parse_time
from node.dev.local import GENESIS_TIME, make_genesis

HEX_A = "aa" * 32
HEX_B = "bb" * 32


@pytest.fixture(scope="module")
def devnet() -> Genesis:
    g, _ = make_genesis(accounts=4, operators=3, threshold=2)
    return g


@pytest.fixture
def doc(devnet: Genesis) -> dict[str, Any]:
    return copy.deepcopy(devnet.to_json_obj())


def invalid(doc: Any) -> InvalidGenesis:
    with pytest.raises(InvalidGenesis) as ei:
        parse_genesis(doc)
    return ei.value


def field_of(doc: Any) -> str:
    e = invalid(doc)
    assert e.field in str(e)
    return e.field


# ---------------------------------------------------------------------------------------------
# Round trip and hash


def test_devnet_roundtrip(devnet: Genesis) -> None:
    text = devnet.to_json()
    back = parse_genesis(json.loads(text))
    assert back == devnet
    assert back.to_json() == text
    assert back.hash == devnet.hash
    assert len(devnet.hash) == 32
    assert back.genesis_time_ms == 1_767_225_600_000
    assert back.initial_height == 1
    assert len(back.operators) == 3 and back.operator_threshold == 2
    assert len(back.accounts) == 4 and all(a.balance == 10**9 for a in back.accounts)


def test_load_genesis_roundtrip(devnet: Genesis, tmp_path: Path) -> None:
    p = tmp_path / "genesis.json"
    p.write_text(devnet.to_json())
    assert load_genesis(p) == devnet
    assert load_genesis(str(p)).hash == devnet.hash


def _reorder(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _reorder(x[k]) for k in reversed(list(x))}
    if isinstance(x, list):
        return [_reorder(v) for v in x]
    return x


def test_hash_stable_under_whitespace_and_key_order(devnet: Genesis, doc: dict) -> None:
    variants = [
        json.dumps(doc),
        json.dumps(doc, separators=(",", ":")),
        json.dumps(doc, indent=7, sort_keys=True),
        json.dumps(_reorder(doc), indent="\t"),
        "\n\n  " + json.dumps(_reorder(doc), separators=(" ,\r\n", " :\n\t ")) + "  \n",
    ]
    for text in variants:
        assert parse_genesis(json.loads(text)).hash == devnet.hash


def test_hash_stable_under_equivalent_number_spellings(devnet: Genesis, doc: dict) -> None:
    # Integers may be given as JSON numbers or decimal strings; hex keys in either case.
    doc["initial_height"] = 1
    doc["app_state"]["accounts"][0]["balance"] = 10**9
    doc["app_state"]["producer"]["pub_key"] = doc["app_state"]["producer"]["pub_key"].upper()
    assert parse_genesis(doc).hash == devnet.hash


def _mutations() -> list[tuple[str, Any]]:
    return [
        ("chain_id", lambda d: d.__setitem__("chain_id", "test-chaim")),
        ("genesis_time", lambda d: d.__setitem__("genesis_time", "2026-01-01T00:00:00.001Z")),
        ("initial_height", lambda d: d.__setitem__("initial_height", "2")),
        ("producer.pub_key", lambda d: d["app_state"]["producer"].__setitem__("pub_key", HEX_A)),
        ("producer.name", lambda d: d["app_state"]["producer"].__setitem__("name", "prod")),
        ("faucet.pub_key", lambda d: d["app_state"]["faucet"].__setitem__("pub_key", HEX_A)),
        ("operators.threshold",
         lambda d: d["app_state"]["operators"].__setitem__("threshold", 3)),
        ("operators.keys[1].pub_key",
         lambda d: d["app_state"]["operators"]["keys"][1].__setitem__("pub_key", HEX_A)),
        ("operators order",
         lambda d: d["app_state"]["operators"]["keys"].reverse()),
        ("oracles[0].name", lambda d: d["app_state"]["oracles"][0].__setitem__("name", "o")),
        ("oracles removed", lambda d: d["app_state"].__setitem__("oracles", [])),
        ("accounts[2].balance",
         lambda d: d["app_state"]["accounts"][2].__setitem__("balance", "1000000001")),
        ("accounts[3].address",
         lambda d: d["app_state"]["accounts"][3].__setitem__("address", HEX_B)),
        ("account removed", lambda d: d["app_state"]["accounts"].pop()),
        ("account order", lambda d: d["app_state"]["accounts"].reverse()),
    ]


def test_hash_changes_with_any_value(devnet: Genesis, doc: dict) -> None:
    seen = {devnet.hash}
    for name, mutate in _mutations():
        d = copy.deepcopy(doc)
        mutate(d)
        h = parse_genesis(d).hash
        assert h != devnet.hash, name
        assert h not in seen, name
        seen.add(h)


# ---------------------------------------------------------------------------------------------
# Validation failures name the field


def test_not_an_object() -> None:
    assert field_of([]) == "(top level)"
    assert field_of("x") == "(top level)"


def test_missing_chain_id(doc: dict) -> None:
    del doc["chain_id"]
    assert field_of(doc) == "chain_id"


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "-leading-dash", ".dot", "é", "a\n",
                                 "abc\n", "a" * 51, 5, None, ["a"]])
def test_bad_chain_id(doc: dict, bad: Any) -> None:
    doc["chain_id"] = bad
    assert field_of(doc) == "chain_id"


@pytest.mark.parametrize("good", ["a", "A.b_c-9", "9", "x" * 50])
def test_good_chain_id(doc: dict, good: str) -> None:
    doc["chain_id"] = good
    assert parse_genesis(doc).chain_id == good


def test_missing_genesis_time(doc: dict) -> None:
    del doc["genesis_time"]
    assert field_of(doc) == "genesis_time"


@pytest.mark.parametrize("bad", ["2026-01-01T00:00:00", "2026-01-01T00:00:00.123", "2026-01-01"])
def test_genesis_time_without_zone(doc: dict, bad: str) -> None:
    doc["genesis_time"] = bad
    e = invalid(doc)
    assert e.field == "genesis_time"


def test_genesis_time_without_zone_message(doc: dict) -> None:
    doc["genesis_time"] = "2026-01-01T00:00:00"
    assert "zone" in invalid(doc).problem


@pytest.mark.parametrize("bad", [
    "yesterday", "", "2026-13-01T00:00:00Z", "2026-01-32T00:00:00Z", "2026-01-01T25:00:00Z",
    "01/01/2026 00:00:00Z", "2026-01-01T00:00:00 Z", 1767225600, None,
    # ISO 8601 forms that are not RFC 3339 date-times:
    "20260101T000000Z", "2026-W01-4T00:00:00Z", "2026-01-01T00:00Z", "2026-01-01T00Z",
    "2026-001T00:00:00Z", "2026-01-01T00:00:00+0100", "2026-01-01T00:00:00+01",
    "2026-01-01T00:00:00.Z",
])
def test_genesis_time_not_rfc3339(doc: dict, bad: Any) -> None:
    doc["genesis_time"] = bad
    assert field_of(doc) == "genesis_time"


@pytest.mark.parametrize("bad", ["2026-01-01T00:00:00.0001Z", "2026-01-01T00:00:00.123456Z",
                                 "2026-01-01T00:00:00.1234Z", "2026-01-01T00:00:00.0000001Z",
                                 "2026-01-01T00:00:00.000000001+00:00"])
def test_genesis_time_sub_millisecond(doc: dict, bad: str) -> None:
    doc["genesis_time"] = bad
    e = invalid(doc)
    assert e.field == "genesis_time"
    assert "millisecond" in e.problem


@pytest.mark.parametrize("good, ms", [
    ("2026-01-01T00:00:00Z", 1_767_225_600_000),
    ("2026-01-01T00:00:00.5Z", 1_767_225_600_500),
    ("2026-01-01T00:00:00.123Z", 1_767_225_600_123),
    ("2026-01-01T00:00:00.123000Z", 1_767_225_600_123),
    ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
    ("2025-12-31T19:00:00-05:00", 1_767_225_600_000),
    ("1970-01-01T00:00:00.001Z", 1),
])
def test_genesis_time_accepted(doc: dict, good: str, ms: int) -> None:
    doc["genesis_time"] = good
    g = parse_genesis(doc)
    assert g.genesis_time_ms == ms
    # Every spelling of the instant normalises to one (so one genesis hash).
    assert g.genesis_time == format_time_ms(ms)
    assert parse_time(good) == (format_time_ms(ms), ms)
    assert parse_time(format_time_ms(ms)) == (format_time_ms(ms), ms)


def test_spellings_of_one_instant_give_one_genesis_hash(doc: dict) -> None:
    hashes = set()
    for spelling in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000Z",
                     "2026-01-01T01:00:00+01:00"):
        doc["genesis_time"] = spelling
        hashes.add(parse_genesis(doc).hash)
    assert len(hashes) == 1


@pytest.mark.parametrize("bad", ["1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z"])
def test_genesis_time_not_after_epoch(doc: dict, bad: str) -> None:
    doc["genesis_time"] = bad
    assert field_of(doc) == "genesis_time"


def test_helpers_genesis_time_parses() -> None:
    assert parse_time(GENESIS_TIME) == ("2026-01-01T00:00:00.000Z", 1_767_225_600_000)


@pytest.mark.parametrize("bad", [0, "0", "abc", "", "-1", -1, "01", "1.0", 1.0, True, None,
                                 2**62 + 1, str(2**62 + 1), "1" * 5000, " 1"])
def test_bad_initial_height(doc: dict, bad: Any) -> None:
    doc["initial_height"] = bad
    assert field_of(doc) == "initial_height"


@pytest.mark.parametrize("good, value", [(1, 1), ("7", 7), (2**62, 2**62), (str(2**62), 2**62)])
def test_good_initial_height(doc: dict, good: Any, value: int) -> None:
    doc["initial_height"] = good
    assert parse_genesis(doc).initial_height == value


def test_initial_height_defaults_to_one(doc: dict) -> None:
    del doc["initial_height"]
    assert parse_genesis(doc).initial_height == 1


def test_missing_app_state(doc: dict) -> None:
    del doc["app_state"]
    assert field_of(doc) == "app_state"
    doc["app_state"] = []
    assert field_of(doc) == "app_state"


@pytest.mark.parametrize("role", ["producer", "faucet"])
def test_missing_role_key(doc: dict, role: str) -> None:
    del doc["app_state"][role]
    assert field_of(doc) == f"app_state.{role}"


@pytest.mark.parametrize("bad", ["zz" * 32, "aa" * 31, "aa" * 33, "", "0x" + "aa" * 31,
                                 " " + "a" * 63, "aa" * 32 + "\n", 5, None])
def test_producer_pub_key_bad(doc: dict, bad: Any) -> None:
    doc["app_state"]["producer"]["pub_key"] = bad
    assert field_of(doc) == "app_state.producer.pub_key"


def test_producer_pub_key_missing(doc: dict) -> None:
    del doc["app_state"]["producer"]["pub_key"]
    assert field_of(doc) == "app_state.producer.pub_key"


def test_producer_not_an_object(doc: dict) -> None:
    doc["app_state"]["producer"] = HEX_A
    assert field_of(doc) == "app_state.producer"


def test_named_key_bad_name_and_unknown_field(doc: dict) -> None:
    d = copy.deepcopy(doc)
    d["app_state"]["faucet"]["name"] = "n" * 65
    assert field_of(d) == "app_state.faucet.name"
    d = copy.deepcopy(doc)
    d["app_state"]["faucet"]["name"] = 3
    assert field_of(d) == "app_state.faucet.name"
    d = copy.deepcopy(doc)
    d["app_state"]["faucet"]["role"] = "x"
    assert field_of(d) == "app_state.faucet.role"


def test_operators_empty(doc: dict) -> None:
    doc["app_state"]["operators"]["keys"] = []
    doc["app_state"]["operators"]["threshold"] = 1
    assert field_of(doc) == "app_state.operators.keys"


def test_operators_not_an_object_or_missing_parts(doc: dict) -> None:
    d = copy.deepcopy(doc)
    d["app_state"]["operators"] = [HEX_A]
    assert field_of(d) == "app_state.operators"
    d = copy.deepcopy(doc)
    del d["app_state"]["operators"]
    assert field_of(d) == "app_state.operators"
    d = copy.deepcopy(doc)
    del d["app_state"]["operators"]["keys"]
    assert field_of(d) == "app_state.operators.keys"
    d = copy.deepcopy(doc)
    del d["app_state"]["operators"]["threshold"]
    assert field_of(d) == "app_state.operators.threshold"
    d = copy.deepcopy(doc)
    d["app_state"]["operators"]["keys"] = HEX_A
    assert field_of(d) == "app_state.operators.keys"


def test_operators_unknown_field(doc: dict) -> None:
    # An ignored field would silently drop out of the normalised document and its hash.
    doc["app_state"]["operators"]["quorum"] = 2
    assert field_of(doc) == "app_state.operators.quorum"


@pytest.mark.parametrize("bad", [0, "0", 4, "4", -1, True, "two", 2.0])
def test_bad_threshold(doc: dict, bad: Any) -> None:
    doc["app_state"]["operators"]["threshold"] = bad  # 3 operators
    assert field_of(doc) == "app_state.operators.threshold"


@pytest.mark.parametrize("t", [1, 3, "3"])
def test_good_threshold(doc: dict, t: Any) -> None:
    doc["app_state"]["operators"]["threshold"] = t
    assert parse_genesis(doc).operator_threshold == int(t)


def test_duplicate_operator_key(doc: dict) -> None:
    keys = doc["app_state"]["operators"]["keys"]
    keys[2]["pub_key"] = keys[0]["pub_key"].upper()  # same key, different spelling
    assert field_of(doc) == "app_state.operators.keys[2].pub_key"


def test_bad_operator_key(doc: dict) -> None:
    doc["app_state"]["operators"]["keys"][1]["pub_key"] = "xyz"
    assert field_of(doc) == "app_state.operators.keys[1].pub_key"


def test_too_many_operators(doc: dict) -> None:
    doc["app_state"]["operators"]["keys"] = [
        {"name": f"op{i}", "pub_key": f"{i:064x}"} for i in range(65)]
    assert field_of(doc) == "app_state.operators.keys"


def test_duplicate_oracle_key(doc: dict) -> None:
    doc["app_state"]["oracles"] = [{"name": "a", "pub_key": HEX_A},
                                   {"name": "b", "pub_key": HEX_A}]
    assert field_of(doc) == "app_state.oracles[1].pub_key"
    doc["app_state"]["oracles"] = {"name": "a", "pub_key": HEX_A}
    assert field_of(doc) == "app_state.oracles"


@pytest.mark.parametrize("bad", [-1, "-1", 2**64, str(2**64), True, False, 1.5, "1e3", "",
                                 None, "0x10", "1" * 5000, "1" * 21])
def test_bad_account_balance(doc: dict, bad: Any) -> None:
    doc["app_state"]["accounts"][2]["balance"] = bad
    assert field_of(doc) == "app_state.accounts[2].balance"


@pytest.mark.parametrize("good", [0, "0", 2**64 - 1, str(2**64 - 1)])
def test_good_account_balance(doc: dict, good: Any) -> None:
    doc["app_state"]["accounts"][2]["balance"] = good
    assert parse_genesis(doc).accounts[2].balance == int(good)


def test_account_balance_missing(doc: dict) -> None:
    del doc["app_state"]["accounts"][2]["balance"]
    assert field_of(doc) == "app_state.accounts[2].balance"


def test_duplicate_account_address(doc: dict) -> None:
    accts = doc["app_state"]["accounts"]
    accts[3]["address"] = accts[1]["address"]
    assert field_of(doc) == "app_state.accounts[3].address"


def test_bad_account_entries(doc: dict) -> None:
    d = copy.deepcopy(doc)
    d["app_state"]["accounts"][0]["address"] = "nothex"
    assert field_of(d) == "app_state.accounts[0].address"
    d = copy.deepcopy(doc)
    d["app_state"]["accounts"][1]["nonce"] = 0
    assert field_of(d) == "app_state.accounts[1].nonce"
    d = copy.deepcopy(doc)
    d["app_state"]["accounts"][1] = [HEX_A, 1]
    assert field_of(d) == "app_state.accounts[1]"
    d = copy.deepcopy(doc)
    d["app_state"]["accounts"] = {}
    assert field_of(d) == "app_state.accounts"


def test_unknown_top_level_field(doc: dict) -> None:
    doc["consensus_params"] = {}
    assert field_of(doc) == "consensus_params"


def test_unknown_app_state_field(doc: dict) -> None:
    doc["app_state"]["validators"] = []
    assert field_of(doc) == "app_state.validators"


def _btc() -> dict:
    from genesis.builder import devnet_markets
    from genesis.format import market_json

    return market_json(devnet_markets()[0])


def test_markets_round_trip_and_enter_the_hash(doc: dict) -> None:
    doc["app_state"]["markets"] = [_btc()]
    g = parse_genesis(doc)
    assert g.markets[0].market.symbol == "BTC-USD-PERP"
    assert g.markets[0].oracle_price == 60_000 * 10**6
    assert parse_genesis(json.loads(g.to_json())) == g
    other = _btc()
    other["taker_fee_ppm"] = 600
    doc["app_state"]["markets"] = [other]
    assert parse_genesis(doc).hash != g.hash


@pytest.mark.parametrize("change,field", [
    ({"symbol": "btc-usd"}, "app_state.markets[0].symbol"),
    ({"symbol": ""}, "app_state.markets[0].symbol"),
    ({"tick_size": "0"}, "app_state.markets[0]"),
    ({"step_size": -1}, "app_state.markets[0].step_size"),
    ({"maintenance_margin_ppm": 60_000}, "app_state.markets[0]"),  # above initial
    ({"initial_margin_ppm": 2_000_000}, "app_state.markets[0]"),
    ({"liquidation_penalty_ppm": 40_000}, "app_state.markets[0]"),  # above maintenance
    ({"funding_interval_ms": "10"}, "app_state.markets[0]"),
    ({"taker_fee_ppm": 200_000}, "app_state.markets[0]"),
    ({"oracle_price": "0"}, "app_state.markets[0].oracle_price"),
    ({"oracle_price": 1.5}, "app_state.markets[0].oracle_price"),
    ({"leverage": 10}, "app_state.markets[0].leverage"),
])
def test_bad_market_names_the_field(doc: dict, change: dict, field: str) -> None:
    m = _btc()
    m.update(change)
    doc["app_state"]["markets"] = [m]
    assert field_of(doc) == field


def test_market_missing_field_and_duplicates(doc: dict) -> None:
    m = _btc()
    del m["tick_size"]
    doc["app_state"]["markets"] = [m]
    assert field_of(doc) == "app_state.markets[0].tick_size"
    doc["app_state"]["markets"] = [_btc(), _btc()]
    assert field_of(doc) == "app_state.markets[1].symbol"
    doc["app_state"]["markets"] = {}
    assert field_of(doc) == "app_state.markets"
    doc["app_state"]["markets"] = ["BTC"]
    assert field_of(doc) == "app_state.markets[0]"


def test_optional_app_sections_default_empty(doc: dict) -> None:
    for k in ("oracles", "accounts", "markets"):
        del doc["app_state"][k]
    g = parse_genesis(doc)
    assert g.oracles == () and g.accounts == () and g.markets == ()


# ---------------------------------------------------------------------------------------------
# load_genesis errors


def test_load_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope" / "genesis.json"
    with pytest.raises(InvalidGenesis) as ei:
        load_genesis(p)
    assert ei.value.field == "(file)"
    assert str(p) in str(ei.value)
    assert "No such file" in str(ei.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidGenesis) as ei:
        load_genesis(tmp_path)
    assert ei.value.field == "(file)"
    assert str(tmp_path) in str(ei.value)


@pytest.mark.parametrize("text", ["", "{", "{'chain_id': 'x'}", "not json", '{"a": 1,}',
                                  "{}\n{}", "[" * 100_000, '{"chain_id": ' + "1" * 5000 + "}"])
def test_load_invalid_json(tmp_path: Path, text: str) -> None:
    p = tmp_path / "genesis.json"
    p.write_text(text)
    with pytest.raises(InvalidGenesis) as ei:
        load_genesis(p)
    assert ei.value.field == "(file)"
    assert str(p) in str(ei.value) and "JSON" in str(ei.value)


def test_load_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "genesis.json"
    p.write_bytes(b'{"chain_id": "\xff"}')
    with pytest.raises(InvalidGenesis) as ei:
        load_genesis(p)
    assert ei.value.field == "(file)"
    assert str(p) in str(ei.value)


def test_load_valid_json_invalid_genesis_names_field(doc: dict, tmp_path: Path) -> None:
    doc["app_state"]["accounts"][2]["balance"] = -5
    p = tmp_path / "genesis.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InvalidGenesis) as ei:
        load_genesis(p)
    assert ei.value.field == "app_state.accounts[2].balance"
    assert "app_state.accounts[2].balance" in str(ei.value)


def test_genesis_time_after_year_9999_is_refused_cleanly(doc: dict) -> None:
    doc["genesis_time"] = "9999-12-31T23:59:59-23:59"  # 10000-01-01 in UTC
    with pytest.raises(InvalidGenesis) as e:
        parse_genesis(doc)
    assert e.value.field == "genesis_time"
    doc["genesis_time"] = "9999-12-31T23:59:59.999Z"
    assert parse_genesis(doc).genesis_time == "9999-12-31T23:59:59.999Z"
