"""Pure functions of the benchmark harness."""

from __future__ import annotations

from bench.sweep import machine_cpu_times, steal_pct


def test_steal_is_the_share_of_all_cpu_time_the_hypervisor_took() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 50, 800, 10, 0, 5, 35, 40, 0]
    after = [400, 0, 150, 1300, 10, 0, 5, 135, 90, 0]  # guest time is already inside user time
    assert steal_pct(before, after) == 100 / 1000 * 100
    assert steal_pct(before, before) is None  # no time passed
    assert steal_pct(None, after) is None and steal_pct(before, None) is None


def test_machine_cpu_times_reads_the_cpu_line() -> None:
    times = machine_cpu_times()
    if times is not None:  # Linux
        assert len(times) >= 8 and all(t >= 0 for t in times)
