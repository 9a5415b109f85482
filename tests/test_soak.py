"""``make soak`` (issue 18): the verdict's arithmetic on made-up samples, including series
that must fail, and the CI version, a 2-minute soak through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airside.soak import Sample, judge, judge_process, new_photo

ROOT = Path(__file__).resolve().parents[1]


def series(
    n: int = 60, step_s: float = 5.0, rss_kb: float = 400_000.0, rss_per_sample: float = 0.0,
    fds: int = 30, fd_every: int = 0, threads: int = 15, thread_every: int = 0,
) -> list[Sample]:  # fmt: skip
    """``n`` samples ``step_s`` apart; RSS grows ``rss_per_sample`` kB a sample, one fd
    (thread) more every ``fd_every`` (``thread_every``) samples; small noise on RSS."""
    out = []
    for i in range(n):
        noise = (-1) ** i * 800  # +-0.2%: the allocator's ups and downs
        out.append(
            Sample(
                i * step_s,
                int(rss_kb + rss_per_sample * i + noise),
                fds + (i // fd_every if fd_every else 0),
                threads + (i // thread_every if thread_every else 0),
            )
        )
    return out


def steady_latencies(duration_s: float, ms: float = 100.0) -> list[tuple[float, float]]:
    return [(t / 2, ms + (t % 7) * 5) for t in range(int(duration_s * 2))]


def test_a_flat_process_passes_and_a_spike_in_one_sample_does_not_count_as_growth() -> None:
    s = series()
    spiky = [*s[:-3], Sample(s[-3].t, 520_000, 30, 15), *s[-2:]]  # one sample mid-request
    for samples in (s, spiky):
        row = judge_process("server", samples, warmup_s=60)
        assert row["ok"], row["problems"]
        assert abs(row["rss_growth_pct"]) < 1
        assert row["fds_start"] == row["fds_max"] == 30


def test_steady_rss_growth_fails() -> None:
    # 400 MB growing 0.5 MB a sample: +~24 MB (6%) after the warm-up.
    row = judge_process("server", series(rss_per_sample=512), warmup_s=60)
    assert not row["ok"]
    assert row["rss_growth_pct"] >= 5
    assert any("RSS grew" in p for p in row["problems"])
    # The same growth inside the warm-up only is not counted.
    early = [Sample(x.t, int(x.rss_kb + min(x.t, 55) * 1000), x.fds, x.threads) for x in series()]
    assert judge_process("server", early, warmup_s=60)["ok"]


def test_an_fd_leak_and_a_thread_leak_fail_small_wobbles_do_not() -> None:
    leak = judge_process("camera gate-a", series(fd_every=3), warmup_s=60)
    assert not leak["ok"] and leak["fds_max"] - leak["fds_start"] > 8
    assert any("open files" in p for p in leak["problems"])
    threads = judge_process("server", series(thread_every=5), warmup_s=60)
    assert not threads["ok"] and any("threads" in p for p in threads["problems"])
    wobble = series()
    wobble[40] = Sample(wobble[40].t, wobble[40].rss_kb, 34, 17)  # a connection, a pool thread
    assert judge_process("server", wobble, warmup_s=60)["ok"]


def test_the_whole_verdict() -> None:
    duration = 300.0
    procs = {"server": series(), "camera gate-a": series(), "camera gate-b": series()}
    ok = judge(procs, steady_latencies(duration), duration_s=duration, warmup_s=60, errors=0)
    assert ok["pass"], ok["problems"]
    assert ok["compare_window_s"] == 30 and ok["p99_ms_first"] and ok["p99_ms_last"]
    # p99 more than doubling between the first and the last window fails.
    slower = [(t, ms * (3 if t > duration - 30 else 1)) for t, ms in steady_latencies(duration)]
    bad = judge(procs, slower, duration_s=duration, warmup_s=60, errors=0)
    assert not bad["pass"] and any("p99" in p for p in bad["problems"])
    # An error, a restarted camera worker or a leaking process each fail it.
    assert not judge(procs, steady_latencies(duration), duration_s=duration, warmup_s=60,
                     errors=1)["pass"]  # fmt: skip
    restarted = judge(procs, steady_latencies(duration), duration_s=duration, warmup_s=60,
                      errors=0, restarts={"camera gate-a": 1})  # fmt: skip
    assert not restarted["pass"] and "camera gate-a: restarted 1 time(s)" in restarted["problems"]
    leaking = judge({**procs, "camera gate-b": series(fd_every=2)}, steady_latencies(duration),
                    duration_s=duration, warmup_s=60, errors=0)  # fmt: skip
    assert not leaking["pass"]
    assert [r["ok"] for r in leaking["processes"]] == [True, True, False]
    # No samples after the warm-up: nothing to judge is a failure, not a pass.
    assert not judge({"server": series(n=5)}, steady_latencies(duration), duration_s=duration,
                     warmup_s=60, errors=0)["pass"]  # fmt: skip


def test_every_enrolment_photo_is_new() -> None:
    import numpy as np

    base = np.zeros((8, 8, 3), dtype=np.uint8)
    assert len({new_photo(base, n) for n in (0, 1, 255, 256, 1 << 16, 1 << 24)}) == 6


@pytest.mark.slow  # ~2.5 minutes: a server, two camera workers and a steady load
def test_a_two_minute_soak_passes(tmp_path: Path) -> None:
    # Inside the suite other tests share the cores, and one window's p99 can triple with
    # them (seen): latency stability is `make soak`'s verdict, at 2x. Memory too: in two
    # minutes the allocator's high-water steps are not yet behind (seen in CI: the server
    # +28 MB in one step between minutes 1 and 2, +6.5%; the 30-minute run: +0.56%), so
    # this run allows 20%, which still fails a leak of ~0.35 MB a request (a decoded photo
    # kept per request is 0.8 MB), and keeps the other limits (files, threads, errors,
    # restarts) as they are.
    out = tmp_path / "soak.json"
    res = subprocess.run(
        [sys.executable, "-m", "airside.soak", "--minutes", "2", "--warmup-s", "30",
         "--p99-ratio", "10", "--rss-limit", "20", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["pass"] and r["minutes"] == 2 and r["errors"] == 0 and r["problems"] == []
    assert r["requests"] >= 120  # 2 req/s for 2 minutes, even on a busy machine
    assert {"enrol", "erase", "verify", "identify", "subjects", "events", "metrics"} <= set(
        r["requests_by_op"]
    )
    names = [p["name"] for p in r["processes"]]
    assert names == ["server", "camera gate-a", "camera gate-b"]
    for p in r["processes"]:
        assert p["ok"] and p["samples"] >= 10
        assert 50 < p["rss_start_mb"] < 4000 and abs(p["rss_growth_pct"]) < 20
        assert 0 < p["fds_start"] <= p["fds_max"] and 0 < p["threads_start"] <= p["threads_max"]
    assert all(r["cameras"][c]["state"] == "running" for c in ("gate-a", "gate-b"))
    assert r["limits"]["rss_growth_pct"] == 20
    assert r["p99_ms_first"] > 0 and r["p99_ms_last"] <= 10 * r["p99_ms_first"]
