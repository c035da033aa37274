"""The run campaign: every workload x nemesis cell for a list of seeds, and its summary table.

Owns: the order of a campaign (seed-major, so a campaign cut short still covers every cell
evenly), one `jepsen-lite run` subprocess per cell (a run that hangs or crashes cannot take the
campaign down with it), the ledger (`matrix.jsonl`, one line per finished run, appended so that
campaigns add up) and the markdown table drawn from the ledger. It judges nothing itself: the
verdict of each run is the one its `results.json` holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

WORKLOADS = ("register", "set", "collections", "hostile", "batch")
NEMESES = ("kill", "pause", "partition", "restart", "disk-full", "apply-fail", "membership")
RUN_SETUP_AND_CHECK_S = 300.0  # start, heal, recovery, final reads and checking, generously
STOP_GRACE_S = 60.0
LEDGER_NAME = "matrix.jsonl"


def parse_seeds(spec: str) -> list[int]:
    """`101,102` or `103-110` or a mix: `101,103-105`."""
    seeds: list[int] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "-" in part:
            first, last = (int(x) for x in part.split("-", 1))
            if last < first:
                raise ValueError(f"empty seed range {part!r}")
            seeds.extend(range(first, last + 1))
        else:
            seeds.append(int(part))
    return seeds


def cells(workloads: Sequence[str], nemeses: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, str, int]]:
    """Seed-major order: every cell once for the first seed, then every cell for the next."""
    return [(w, n, s) for s in seeds for w in workloads for n in nemeses]


def _stop_runner(proc: subprocess.Popen[bytes], run_dirs: Any) -> None:
    """SIGTERM lets the runner unwind and kill the nodes it started; if it does not within the
    grace time, SIGKILL it and then the nodes its run directory lists (they run in their own
    sessions, so they outlive it)."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for run_dir in run_dirs():
            _kill_listed_nodes(run_dir)


def _kill_listed_nodes(run_dir: Path) -> None:
    """The last pid of each node in `pids.json`, if it is still a raftchroma node (pids are reused)."""
    try:
        pids = json.loads((run_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return
    for node_pids in pids.values():
        pid = node_pids[-1]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"raftchroma" in cmdline and b"serve" in cmdline:
                os.killpg(pid, signal.SIGKILL)  # each node leads its own session
        except (OSError, ProcessLookupError):
            continue


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    try:
        results = json.loads((run_dir / "results.json").read_text())
        return {"verdict": results["verdict"], "verdicts": results["verdicts"], "counts": results["counts"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_one(workload: str, nemesis: str, seed: int, time_limit_s: float, concurrency: int,
             rate: float, store: Path) -> dict[str, Any]:
    before = set(store.iterdir()) if store.exists() else set()
    started = time.monotonic()
    # The same interpreter and the same jepsen_lite (installed, or on the inherited PYTHONPATH).
    argv = [sys.executable, "-m", "jepsen_lite", "run", "--workload", workload, "--nemesis", nemesis,
            "--time-limit", str(time_limit_s), "--concurrency", str(concurrency), "--rate", str(rate),
            "--seed", str(seed), "--out", str(store)]
    log_path = store / "runner-logs" / f"{workload}-{nemesis}-{seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def new_dirs() -> list[Path]:
        return sorted(d for d in set(store.iterdir()) - before if (d / "run.json").exists() or
                      (d / "pids.json").exists())

    with log_path.open("ab") as log_file:  # the runner's own output, for a run that crashes
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        exit_code: int | None = proc.wait(timeout=2 * time_limit_s + RUN_SETUP_AND_CHECK_S)
    except subprocess.TimeoutExpired:
        exit_code = None
        _stop_runner(proc, new_dirs)
    except BaseException:  # Ctrl-C or SIGTERM of the campaign: the runner must still stop its nodes
        _stop_runner(proc, new_dirs)
        raise
    dirs = new_dirs()
    record: dict[str, Any] = {
        "workload": workload, "nemesis": nemesis, "seed": seed, "time_limit_s": time_limit_s,
        "concurrency": concurrency, "rate": rate, "exit": exit_code,
        "wall_s": round(time.monotonic() - started, 1), "dir": str(dirs[-1]) if dirs else None,
        "log": str(log_path), "verdict": "unknown", "verdicts": {}, "counts": {},
    }
    results = _read_results(dirs[-1]) if dirs else None
    if results is not None:
        record.update(results)
    return record


def run_campaign(seeds: Sequence[int], time_limit_s: float, concurrency: int, rate: float, store: Path,
                 workloads: Sequence[str] = WORKLOADS, nemeses: Sequence[str] = NEMESES) -> int:
    """Runs every cell, appends each result to the ledger; returns 1 if any run was invalid,
    2 if any was unknown, else 0 (the same codes as one run)."""
    store.mkdir(parents=True, exist_ok=True)
    ledger = store / LEDGER_NAME
    worst = 0
    for workload, nemesis, seed in cells(workloads, nemeses, seeds):
        record = _run_one(workload, nemesis, seed, time_limit_s, concurrency, rate, store)
        with ledger.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{workload:12} {nemesis:10} seed {seed:<5} {record['verdict']:8} exit {record['exit']} "
              f"{record['wall_s']} s", flush=True)
        code = {"valid": 0, "invalid": 1}.get(record["verdict"], 2)
        worst = 1 if 1 in (worst, code) else max(worst, code)
    return worst


def load_ledger(path: Path) -> list[dict[str, Any]]:
    """The ledger's records; a line cut short (a campaign killed while writing) is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def table(records: Iterable[dict[str, Any]]) -> str:
    """One markdown row per workload x nemesis x time limit: runs, seeds, summed ok/fail/info, verdict counts."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[(rec["workload"], rec["nemesis"], float(rec["time_limit_s"]))].append(rec)
    settings = {(rec.get("concurrency"), rec.get("rate")) for rec in records}
    order = {w: i for i, w in enumerate(WORKLOADS)} | {n: i for i, n in enumerate(NEMESES)}
    lines = ["| workload | nemesis | runs x s | seeds | ok / fail / info (sum) | verdicts |",
             "|---|---|---|---|---|---|"]
    for (workload, nemesis, limit_s), recs in sorted(
            groups.items(), key=lambda kv: (order.get(kv[0][0], 99), order.get(kv[0][1], 99), kv[0][2])):
        sums = {k: sum(r["counts"].get(k, 0) for r in recs) for k in ("ok", "fail", "info")}
        verdicts: dict[str, int] = defaultdict(int)
        for r in recs:
            verdicts[r["verdict"]] += 1
        verdict_text = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        seeds = ",".join(str(s) for s in sorted(r["seed"] for r in recs))
        lines.append(f"| {workload} | {nemesis} | {len(recs)} x {limit_s:g} | {seeds} | "
                     f"{sums['ok']} / {sums['fail']} / {sums['info']} | {verdict_text} |")
    if len(settings) > 1:
        lines.append("")
        lines.append("(rows mix runs with different --concurrency / --rate: "
                     + ", ".join(f"{c} / {r}" for c, r in sorted(settings, key=str)) + ")")
    return "\n".join(lines)


def main_table(ledger: Path) -> int:
    if not ledger.exists():
        print(f"jepsen-lite: no ledger at {ledger}", file=sys.stderr)
        return 2
    print(table(load_ledger(ledger)))
    return 0
