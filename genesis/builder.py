"""Building a devnet genesis with fresh keys for every role."""

from __future__ import annotations

from dataclasses import dataclass, field

from chain.crypto import PrivateKey
from genesis.format import Genesis, GenesisAccount, GenesisMarket, NamedKey
from state.records import INSURANCE_ADDRESS, Market


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


def devnet_markets(funding_interval_ms: int = 60_000) -> tuple[GenesisMarket, ...]:
    """Two markets for local trading: BTC at 60,000 USD and ETH at 3,000 USD.

    Short funding intervals (one minute by default) so a devnet shows funding payments
    quickly.
    """

    def market(symbol: str, price_usd: int, tick: int, step: int) -> GenesisMarket:
        return GenesisMarket(Market(
            symbol=symbol, tick_size=tick, step_size=step,
            initial_margin_ppm=50_000, maintenance_margin_ppm=30_000,
            funding_interval_ms=funding_interval_ms, max_funding_rate_ppb=1_000_000,
            liquidation_penalty_ppm=15_000, maker_fee_ppm=200, taker_fee_ppm=500,
            oracle_max_age_ms=60_000,
        ), price_usd * 10**6)

    return (
        market("BTC-USD-PERP", 60_000, tick=100_000, step=10_000),  # $0.10, 0.0001 BTC
        market("ETH-USD-PERP", 3_000, tick=10_000, step=100_000),  # $0.01, 0.001 ETH
    )


def build_devnet(chain_id: str, genesis_time: str, genesis_time_ms: int, *, accounts: int = 10,
                 balance: int = 10**12, operators: int = 1, threshold: int = 1,
                 oracles: int = 1, markets: tuple[GenesisMarket, ...] = (),
                 insurance_fund: int = 0) -> tuple[Genesis, DevnetKeys]:
    """A genesis with fresh keys: producer, faucet, operators, oracles and funded accounts,
    and (if ``insurance_fund`` > 0) an insurance fund seeded with that balance."""
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
        accounts=tuple(GenesisAccount(k.public_key, balance) for k in keys.accounts) + (
            (GenesisAccount(INSURANCE_ADDRESS, insurance_fund),) if insurance_fund else ()),
        markets=markets,
    )
    return g, keys
