"""Cost arithmetic: pure functions over frozen values, exact decimals, no database.

Invariant: a cost is always `sum(tokens_of_kind * price_of_kind) / 1,000,000`, computed with `Decimal` and
rounded once, half-up, to `COST_PLACES` decimal places (the precision of the `cost` columns). Anthropic's
`input_tokens` excludes cached tokens, so the four kinds never overlap."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

COST_PLACES = Decimal("0.00000001")  # 8 decimal places of a US dollar, as stored
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens of each kind."""

    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Prices:
        """From `{"input": 3, "output": 15}` and optional `cache_write` / `cache_read`; missing cache prices
        follow Anthropic's pattern (a 5-minute cache write costs 1.25x input, a cache read 0.1x input)."""
        base = Decimal(str(data["input"]))
        return cls(
            input=base,
            output=Decimal(str(data["output"])),
            cache_write=Decimal(str(data.get("cache_write", base * Decimal("1.25")))),
            cache_read=Decimal(str(data.get("cache_read", base * Decimal("0.1")))),
        )

    def snapshot(self) -> dict[str, str]:
        """What a reply stores beside its cost: exact decimal strings, so history never changes."""
        return {
            "input": str(self.input),
            "output": str(self.output),
            "cache_write": str(self.cache_write),
            "cache_read": str(self.cache_read),
        }


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of each billed kind; `input` excludes the cached tokens (as the API reports it)."""

    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_creation=self.cache_creation + other.cache_creation,
            cache_read=self.cache_read + other.cache_read,
        )

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read


def cost_of(usage: TokenUsage, prices: Prices) -> Decimal:
    """The exact cost in US dollars of `usage` at `prices`, rounded half-up to 8 decimal places."""
    raw = (
        usage.input * prices.input
        + usage.output * prices.output
        + usage.cache_creation * prices.cache_write
        + usage.cache_read * prices.cache_read
    ) / MILLION
    return raw.quantize(COST_PLACES, rounding=ROUND_HALF_UP)


def prices_for(model: str, table: dict[str, Prices]) -> Prices | None:
    """The prices of `model` in `table`: an exact name, else the longest name it starts with (the API
    answers with dated ids such as `claude-sonnet-5-5-20261001` for the alias `claude-sonnet-5-5`)."""
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name)]
    return table[max(matches, key=len)] if matches else None
