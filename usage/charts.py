"""A stacked bar chart as plain geometry, drawn by the template as inline SVG: no chart library, no
JavaScript. Pure functions, unit-tested."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

# Colour-blind-safe palette (Okabe-Ito), one colour per model in order of first appearance.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # the tooltip: day, model and amount


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class LegendItem:
    color: str
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_left: int
    plot_bottom: int
    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    legend: tuple[LegendItem, ...]
    empty: bool
    description: str  # a text alternative for screen readers


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 times 10^k at or above `value` (a round axis maximum)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)  # pragma: no cover - the loop always returns


def stacked_bars(
    *,
    days: list[date],
    values: dict[tuple[date, str], Decimal],
    unit: str = "$",
    width: int = 720,
    height: int = 240,
) -> Chart:
    """One bar per day, stacked by model (bottom to top in order of first appearance). `values` maps
    (day, model) to an amount; missing pairs are zero. Heights are proportional to the amounts."""
    left, right, top, bottom = 56, 8, 8, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    models: list[str] = []
    for _, model in sorted(values, key=lambda key: (key[0], key[1])):
        if model not in models:
            models.append(model)
    colors = {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(models)}
    totals = {day: sum((values.get((day, m), Decimal(0)) for m in models), Decimal(0)) for day in days}
    peak = max(totals.values(), default=Decimal(0))
    axis_max = _nice_ceiling(peak)
    slot = plot_w / max(1, len(days))
    bar_w = max(1.0, slot * 0.7)
    bars: list[Bar] = []
    for i, day in enumerate(days):
        y = float(top + plot_h)
        for model in models:
            amount = values.get((day, model), Decimal(0))
            if amount <= 0:
                continue
            h = float(amount / axis_max) * plot_h
            y -= h
            bars.append(
                Bar(
                    x=round(left + i * slot + (slot - bar_w) / 2, 2),
                    y=round(y, 2),
                    width=round(bar_w, 2),
                    height=round(h, 2),
                    color=colors[model],
                    title=f"{day:%-d %b}: {model} {_amount(amount, unit)}",
                )
            )
    y_ticks = tuple(
        Tick(round(top + plot_h - plot_h * k / 4, 2), _tick(axis_max * k / 4, unit)) for k in range(5)
    )
    every = max(1, len(days) // 10)
    x_ticks = tuple(
        Tick(round(left + i * slot + slot / 2, 2), f"{day:%-d}")
        for i, day in enumerate(days)
        if i % every == 0
    )
    total = sum(totals.values(), Decimal(0))
    busiest = max(totals, key=lambda d: totals[d]) if total > 0 else None
    description = (
        f"{_amount(total, unit)} over {len(days)} days"
        + (f"; highest on {busiest:%-d %B}: {_amount(totals[busiest], unit)}" if busiest else "")
        + (f"; models: {', '.join(models)}" if models else "")
    )
    return Chart(
        width=width,
        height=height,
        plot_left=left,
        plot_bottom=top + plot_h,
        bars=tuple(bars),
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=tuple(LegendItem(colors[m], m) for m in models),
        empty=total <= 0,
        description=description,
    )


def _amount(value: Decimal, unit: str) -> str:
    if unit == "$":
        if value and value < Decimal("0.01"):
            return f"${value.quantize(Decimal('0.0001'))}"
        return f"${value.quantize(Decimal('0.01')):,}"
    return f"{int(value):,} {unit}"


def _tick(value: Decimal, unit: str) -> str:
    """An axis label, exact: "$0.0125", "$0.25", "$5.00" (at least cents, more places only if needed)."""
    if unit != "$":
        return _amount(value, unit)
    exponent = value.normalize().as_tuple().exponent
    places = max(2, -exponent if isinstance(exponent, int) else 2)
    return f"${value:,.{places}f}"
