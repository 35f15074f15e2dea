"""The ``ex`` fixture: a fresh chain with the devnet markets (tests/state/test_exchange.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.exchange import Exchange


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Exchange]:
    e = Exchange(tmp_path)
    yield e
    e.store.close()
