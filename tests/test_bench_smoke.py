"""`python -m bench --quick` end to end: it finishes within its deadline, its JSON has every row with
numbers, and every process it started (chroma run, the nodes and their Raft processes, the bound's
stores) is gone afterwards."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
QUICK_DEADLINE_S = 420.0      # --quick takes about a minute on 2 idle cores; CI runs other suites beside it
STOP_GRACE_S = 60.0
POLL_S = 0.2
KILL_LANDS_S = 10.0           # a process SIGKILLed as the bench exits may take a moment to be gone
COMPARED = ("ingest_leader", "ingest_follower", "upserts", "query_stale", "query_linearizable", "get_stale",
            "get_linearizable", "count_stale", "count_linearizable")
RAFTCHROMA_ONLY = ("physical_bound", "leader_kill", "catch_up", "elections")
JUDGED = ("ingest_leader", "ingest_follower", "upserts", "query_stale", "query_linearizable", "leader_kill",
          "elections")


def bench_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, ANONYMIZED_TELEMETRY="False", PYTHONPATH=path)


def descendants(pid: int) -> dict[int, float]:
    """pid -> create time of every live descendant of `pid` (create time tells a reused pid apart)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for child in children:
        try:
            out[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            pass
    return out


def still_running(pid: int, created: float | None = None) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (created is None or process.create_time() == created)
    except psutil.NoSuchProcess:
        return False


def left_running(seen: dict[int, float], work: Path) -> list[int]:
    """The processes seen, or naming `work` on their command line, still running once a SIGKILL sent
    just before the bench exited has had time to land."""
    def left() -> list[int]:
        pids = [pid for pid, created in seen.items() if still_running(pid, created)]
        named = [p.pid for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
        return pids + named
    deadline = time.monotonic() + KILL_LANDS_S
    while left() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return left()


def run_watched(cmd: list[str], log: Path) -> tuple[int | None, dict[int, float]]:
    """Run `cmd`, noting its descendants as they come; past the deadline, SIGTERM it (the bench
    stops its processes on SIGTERM) and then SIGKILL it and whatever it left."""
    seen: dict[int, float] = {}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=bench_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + QUICK_DEADLINE_S
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= descendants(proc.pid)
        time.sleep(POLL_S)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid, created in seen.items():
            if still_running(pid, created):
                os.kill(pid, signal.SIGKILL)
        return None, seen
    return proc.returncode, seen


def number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.slow
@pytest.mark.timeout(QUICK_DEADLINE_S + STOP_GRACE_S + 120)
def test_quick_bench_writes_every_row_and_leaves_no_process_behind(tmp_path: Path) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    cmd = [sys.executable, "-m", "bench", "--quick", "--results-dir", str(results), "--work-dir", str(work)]
    code, seen = run_watched(cmd, tmp_path / "bench.log")
    output = (tmp_path / "bench.log").read_text(errors="replace")
    assert code is not None, f"--quick did not finish within {QUICK_DEADLINE_S} s:\n{output[-4000:]}"
    assert code == 0, output[-4000:]

    report = json.loads((results / "latest.json").read_text())
    started = report["details"]["pids_started"] + report["details"]["bound"]["pids"]
    assert len(seen) >= len(started) >= 7, f"saw {len(seen)} descendants, the report names {started}"
    left = left_running(seen, work)
    assert not left, f"processes left running: {left}"

    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == set(COMPARED) | set(RAFTCHROMA_ONLY) | {"recall"}
    assert all(number(rows["recall"][k]) for k in ("chroma_run", "raftchroma", "ratio")), rows["recall"]
    for key in COMPARED:
        fields = ("chroma_run", "raftchroma", "ratio", "chroma_run_p50_ms", "chroma_run_p99_ms", "raftchroma_p50_ms",
                  "raftchroma_p99_ms")
        assert all(number(rows[key][k]) for k in fields), rows[key]
    for key in RAFTCHROMA_ONLY:
        assert number(rows[key]["raftchroma"]), rows[key]
    for key in JUDGED:
        assert rows[key]["verdict"] in ("PASS", "MISS") and rows[key]["target"], rows[key]
    assert len(report["details"]["kills"]) == 2
    assert report["machine"]["cores"] and report["machine"]["chromadb"] and report["machine"]["git_commit"]
    assert (results / report["chart"]).stat().st_size > 0 and (results / "latest.png").exists()
    assert "| work" in output and ("PASS" in output or "MISS" in output)


def test_raftchroma_bench_passes_its_options_to_python_m_bench() -> None:
    done = subprocess.run([sys.executable, "-m", "raftchroma", "bench", "--help"], cwd=REPO, env=bench_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--records" in done.stdout
