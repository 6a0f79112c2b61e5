"""The sweep's Markdown report (per-level table, ratios to the baselines, targets) and PNG plot."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

REF_N = 100  # the level the per-level targets are judged at
APP_TARGETS = ("ours", "uvicorn")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rows(data: dict[str, Any], target: str) -> list[dict[str, Any]]:
    return sorted((r for r in data["rows"] if r["target"] == target), key=lambda r: r["n"])


def _at(data: dict[str, Any], target: str, n: int) -> dict[str, Any] | None:
    return next((r for r in data["rows"] if r["target"] == target and r["n"] == n), None)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.1f}x"


def held(data: dict[str, Any], target: str) -> int:
    """The largest level N held: p99 <= 100 ms, zero errors, every reply exact (and saved)."""
    return max((row["n"] for row in _rows(data, target) if row["held"]), default=0)


def ref_level(data: dict[str, Any], target: str) -> int | None:
    """REF_N if both the target and the relay ran it, else the largest common level below it."""
    mine = {r["n"] for r in _rows(data, target)}
    relay = {r["n"] for r in _rows(data, "relay")} or mine
    common = sorted(n for n in mine & relay if n <= REF_N)
    return common[-1] if common else None


def targets(data: dict[str, Any], target: str) -> list[tuple[str, str, bool | None]]:
    """(description, measured, pass) for each target of the issue, for one app target."""
    out: list[tuple[str, str, bool | None]] = []
    n = ref_level(data, target)
    row = _at(data, target, n) if n is not None else None
    relay = _at(data, "relay", n) if n is not None else None
    p99 = row["lat_p99"] if row else None
    relay_p99 = relay["lat_p99"] if relay else None
    note = "" if n == REF_N else f" (at N={n}: N={REF_N} not run)"
    out.append(
        (
            f"added p99 per delta ≤ 25 ms at {REF_N} streams{note}",
            f"{_f(p99)} ms",
            None if p99 is None else p99 <= 25.0 and row is not None and row["errors"] == 0,
        )
    )
    out.append(
        (
            f"added p99 ≤ 2x the raw relay's at {REF_N}{note}",
            f"{_f(p99)} vs {_f(relay_p99)} ms ({_ratio(p99, relay_p99)})",
            None if p99 is None or relay_p99 is None else p99 <= 2 * relay_p99,
        )
    )
    mine, theirs = held(data, target), held(data, "relay")
    relay_ran = bool(_rows(data, "relay"))
    top = max(data["meta"]["levels"])
    suffix = " (relay held every level run: its true figure may be higher)" if theirs == top else ""
    out.append(
        (
            "streams held (p99 ≤ 100 ms, 0 errors, all saved) ≥ ½ the relay's",
            f"{mine} vs {theirs}{suffix}",
            mine >= theirs / 2 if relay_ran else None,
        )
    )
    cpu = row["server_cpu_us_per_delta"] if row else None
    relay_cpu = relay["server_cpu_us_per_delta"] if relay else None
    out.append(
        (
            f"server CPU per delta ≤ 2x the relay's{note}",
            f"{_f(cpu)} vs {_f(relay_cpu)} µs ({_ratio(cpu, relay_cpu)})",
            None if cpu is None or relay_cpu is None else cpu <= 2 * relay_cpu,
        )
    )
    rows = [r for r in _rows(data, target) if r["writes_max"] is not None]
    over = sum(r["writes_over_budget"] or 0 for r in rows)
    worst = max((r["writes_max"] for r in rows), default=None)
    secs = max((r["stream_s_mean"] or 0 for r in rows), default=0)
    out.append(
        (
            "DB writes per reply ≤ 4/s of streaming + start and end",
            f"max {worst} writes for ~{secs:.1f} s replies (budget {4 * secs + 2:.0f}); {over} over budget",
            None if not rows else over == 0,
        )
    )
    big = [r for r in _rows(data, target) if r["rss_per_stream_kb"] is not None and r["errors"] == 0]
    big = [r for r in big if r["n"] >= 50] or big
    rss_row = big[-1] if big else None
    rss = rss_row["rss_per_stream_kb"] if rss_row else None
    out.append(
        (
            "RSS per stream ≤ 200 KB" + (f" (at N={rss_row['n']})" if rss_row else ""),
            f"{_f(rss)} KB",
            None if rss is None else rss <= 200.0,
        )
    )
    return out


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# chatsite streaming benchmark",
        "",
        f"{meta['date']} · {meta['cpu']} · {meta['cores']} cores · {meta['ram_gb']} GB · "
        f"Python {meta['python']} · {meta['os']} · DB {meta['db']} · "
        f"{meta['deltas']} deltas/reply at {meta['rate']:g}/s, upstream TTFT {meta['ttft']:g} s, "
        f"starts ramped over {meta['ramp']:g} s · sweep took {meta['minutes']} min · "
        f"code: {meta.get('code', 'unknown')}",
        "",
        "Latency = client receive - upstream emit per delta (exact: each delta's text carries its emit "
        "time). TTFT added = client's time to first delta - the upstream's own. CPU = server process "
        "user+sys per delta delivered. RSS/stream = (peak - idle) / N. Writes = INSERT/UPDATE rows on "
        "chat_message per reply, counted by triggers. "
        "Exact = received (and saved) text identical to what the upstream sent.",
        "",
        "| target | N | ok / err / timeout | added p50 / p95 / p99 / max ms | TTFT added p50 / p99 ms "
        "| CPU µs/delta | RSS idle → peak MB | RSS/stream KB | DB writes/reply mean / max | exact "
        "| upstream late p99 ms · CPU % | client CPU % | load avg | held |",
        "|---|---:|---|---|---|---:|---|---:|---|---|---|---:|---:|---|",
    ]
    for row in sorted(data["rows"], key=lambda r: (meta["targets"].index(r["target"]), r["n"])):
        kinds = f" ({'; '.join(row['error_kinds'])})" if row["error_kinds"] else ""
        rss = "-" if row["rss_idle_mb"] is None else f"{row['rss_idle_mb']:.0f} → {row['rss_peak_mb']:.0f}"
        writes = "-" if row["writes_mean"] is None else f"{row['writes_mean']:.1f} / {row['writes_max']}"
        exact = f"{row['exact']}/{row['n']}"
        lines.append(
            f"| {row['target']} | {row['n']} | {row['ok']} / {row['errors']} / {row['timeouts']}{kinds} | "
            f"{_f(row['lat_p50'])} / {_f(row['lat_p95'])} / {_f(row['lat_p99'])} / {_f(row['lat_max'])} | "
            f"{_f(row['ttft_p50'])} / {_f(row['ttft_p99'])} | "
            f"{_f(row['server_cpu_us_per_delta'], 0)} | {rss} | "
            f"{_f(row['rss_per_stream_kb'], 0)} | {writes} | {exact} | "
            f"{_f(row['upstream_lateness_p99'])} · {_f(row['upstream_cpu_pct'], 0)} | "
            f"{_f(row['client_cpu_pct'], 0)} | {_f(row.get('loadavg_1m'))} | "
            f"{'yes' if row['held'] else 'no'} |"
        )
    apps = [t for t in APP_TARGETS if _rows(data, t)]
    if apps and (_rows(data, "sdk") or _rows(data, "relay")):
        lines += [
            "",
            "## Ratios to the baselines (same N)",
            "",
            "| target | N | p50 ÷ sdk | p99 ÷ sdk | p50 ÷ relay | p99 ÷ relay | CPU/delta ÷ relay "
            "| RSS/stream ÷ relay |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for target in apps:
            for row in _rows(data, target):
                sdk, relay = _at(data, "sdk", row["n"]) or {}, _at(data, "relay", row["n"]) or {}
                lines.append(
                    f"| {target} | {row['n']} | {_ratio(row['lat_p50'], sdk.get('lat_p50'))} | "
                    f"{_ratio(row['lat_p99'], sdk.get('lat_p99'))} | "
                    f"{_ratio(row['lat_p50'], relay.get('lat_p50'))} | "
                    f"{_ratio(row['lat_p99'], relay.get('lat_p99'))} | "
                    f"{_ratio(row['server_cpu_us_per_delta'], relay.get('server_cpu_us_per_delta'))} | "
                    f"{_ratio(row['rss_per_stream_kb'], relay.get('rss_per_stream_kb'))} |"
                )
    if apps:
        lines += ["", "## Targets", "", "| target | " + " | ".join(apps) + " |", "|---|" + "---|" * len(apps)]
        judged = {t: targets(data, t) for t in apps}
        for i, (desc, _, _) in enumerate(judged[apps[0]]):
            cells = []
            for t in apps:
                _, measured, ok = judged[t][i]
                verdict = "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")
                cells.append(f"{verdict} {measured}")
            lines.append(f"| {desc} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Re-render ``results.md`` and ``plot.png`` from a run's ``results.json``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", help="a run's results.json")
    args = parser.parse_args(argv)
    path = Path(args.results)
    data = json.loads(path.read_text())
    text = markdown(data)
    (path.parent / "results.md").write_text(text)
    plot(data, path.parent / "plot.png")
    print(text)
    return 0


def plot(data: dict[str, Any], path: Path) -> bool:
    """Latency percentiles and server RSS against N (log-log). False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_lat, ax_rss) = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"p50": ":", "p95": "--", "p99": "-"}
    for target in data["meta"]["targets"]:
        rows = [r for r in _rows(data, target) if r["lat_p99"] is not None]
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        color = None
        for q, style in styles.items():
            (line,) = ax_lat.plot(
                ns,
                [max(r[f"lat_{q}"], 0.01) for r in rows],
                style,
                marker="o",
                markersize=3,
                color=color,
                label=f"{target} {q}",
            )
            color = line.get_color()
        rss_rows = [r for r in rows if r["rss_peak_mb"] is not None]
        if rss_rows:
            ax_rss.plot(
                [r["n"] for r in rss_rows],
                [r["rss_peak_mb"] for r in rss_rows],
                "-",
                marker="o",
                color=color,
                label=f"{target} peak RSS",
            )
    ax_lat.axhline(25, color="grey", linewidth=0.8)
    ax_lat.axhline(100, color="grey", linewidth=0.8, linestyle="--")
    for ax in (ax_lat, ax_rss):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent streams N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("added latency per delta (ms)")
    ax_lat.set_title("Added latency per delta (lines: 25 ms and 100 ms)")
    ax_rss.set_ylabel("server RSS (MB)")
    ax_rss.set_title("Server peak RSS")
    meta = data["meta"]
    fig.suptitle(
        f"chatsite bench {meta['date']} · {meta['cores']} cores · {meta['deltas']} deltas at "
        f"{meta['rate']:g}/s · DB {meta['db']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
