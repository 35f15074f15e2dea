"""Building a devnet genesis with fresh keys for every role."""

from __future__ import annotations

from dataclasses import dataclass, field

from chain.crypto import PrivateKey
from genesis.format import Genesis, GenesisAccount, NamedKey


@dataclass(frozen=True)
class DevnetKeys:
    """Every private key a devnet genesis names, by role."""

    producer: PrivateKey
    faucet: PrivateKey
    operators: tuple[PrivateKey, ...]
    oracles: tuple[PrivateKey, ...]
    accounts: tuple[PrivateKey, ...] = field(default=())

    def named(self) -> dict[str, PrivateKey]:
        """File-name stem -> key, as ``genesis new`` writes them."""
        out = {"producer": self.producer, "faucet": self.faucet}
        out.update({f"operator-{i}": k for i, k in enumerate(self.operators)})
        out.update({f"oracle-{i}": k for i, k in enumerate(self.oracles)})
        out.update({f"account-{i}": k for i, k in enumerate(self.accounts)})
        return out


def build_devnet(chain_id: str, genesis_time: str, genesis_time_ms: int, *, accounts: int = 10,
                 balance: int = 10**12, operators: int = 1, threshold: int = 1,
                 oracles: int = 1) -> tuple[Genesis, DevnetKeys]:
    """A genesis with fresh keys: producer, faucet, operators, oracles and funded accounts."""
    if not 1 <= threshold <= operators:
        raise ValueError("threshold must be between 1 and the number of operators")
    keys = DevnetKeys(
        producer=PrivateKey.generate(),
        faucet=PrivateKey.generate(),
        operators=tuple(PrivateKey.generate() for _ in range(operators)),
        oracles=tuple(PrivateKey.generate() for _ in range(oracles)),
        accounts=tuple(PrivateKey.generate() for _ in range(accounts)),
    )
    g = Genesis(
        chain_id=chain_id,
        genesis_time=genesis_time,
        genesis_time_ms=genesis_time_ms,
        initial_height=1,
        producer=NamedKey("producer", keys.producer.public_key),
        faucet=NamedKey("faucet", keys.faucet.public_key),
        operators=tuple(NamedKey(f"operator-{i}", k.public_key)
                        for i, k in enumerate(keys.operators)),
        operator_threshold=threshold,
        oracles=tuple(NamedKey(f"oracle-{i}", k.public_key) for i, k in enumerate(keys.oracles)),
        accounts=tuple(GenesisAccount(k.public_key, balance) for k in keys.accounts),
        markets=(),
    )
    return g, keys
