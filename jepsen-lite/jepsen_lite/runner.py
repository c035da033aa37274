"""The runner: one jepsen-lite run from cluster start to verdict, and the re-check of a stored run.

Owns: the order of a run (start cluster, start the status monitor, set up the workload, clients
and nemesis for the time limit, heal, wait for recovery, final reads, digests, stop the monitor,
check, report), the run directory and the exit code (0 valid, 1 invalid, 2 unknown or harness
error). Clients are threads, each rate-limited on its own.
With the membership nemesis the nodes change during a run: clients, the status monitor and heal
follow the cluster's members; after heal the leader's committed membership is the final one
(`run.json` `members`), and the final reads, digests and convergence use it.
It must not judge operations itself (checkers) nor send signals (cluster, via the nemesis).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepsen_lite.client import ClientError, NodeClient
from jepsen_lite.cluster import ClusterOptions, LocalCluster
from jepsen_lite.convergence import check_convergence
from jepsen_lite.elections_checker import check_elections
from jepsen_lite.history import dump_history, load_history, nemesis_ops, pair_ops
from jepsen_lite.nemesis import Nemesis, schedule
from jepsen_lite.recorder import Recorder
from jepsen_lite.stats import phase_stats
from jepsen_lite.status_monitor import StatusMonitor, load_samples
from jepsen_lite.workloads import Completion, Workload, make_workload, record_final

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2
LEADER_TIMEOUT_S = 60.0
RECOVERY_TIMEOUT_S = 60.0
DIGEST_TIMEOUT_S = 60.0  # all nodes together
# One digest request. raftchroma's digest of a collection of a few thousand records takes seconds
# (11-12 s for 3,000 records of the batch workload on the shared 2-core machine: it grows with
# the square of the rows), far past the clients' 5 s.
DIGEST_REQUEST_TIMEOUT_S = 30.0
CHECK_BUDGET_S = 60.0


def default_out_dir(environ: dict[str, str] | None = None) -> Path:
    """Where runs go by default: outside the source tree, in the XDG state directory
    (`$XDG_STATE_HOME/raftchroma/jepsen-lite`, else `~/.local/state/raftchroma/jepsen-lite`).
    A relative XDG_STATE_HOME is ignored, as the XDG spec says."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "raftchroma" / "jepsen-lite"


@dataclass(frozen=True)
class RunOptions:
    workload: str
    nemesis: tuple[str, ...]
    time_limit_s: float = 60.0
    concurrency: int = 8
    rate: float = 50.0
    seed: int = 42
    read_consistency: str = "linearizable"
    nodes: int = 3
    unsafe_local_reads: bool = False
    request_timeout_s: float = 5.0
    store: Path = field(default_factory=default_out_dir)  # the parent of the run directory

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["store"] = str(self.store)
        d["nemesis"] = list(self.nemesis)
        return d


class RateLimiter:
    """Hands out evenly spaced start times from `start_s` until `end_s`. Each client has its own
    (at rate / concurrency), so that clients of a dead node, failing fast, cannot take the
    slots of the others."""

    def __init__(self, rate: float, end_s: float, start_s: float | None = None) -> None:
        self.interval_s = 1.0 / rate
        self.end_s = end_s
        self._next_s = time.monotonic() if start_s is None else start_s
        self._lock = threading.Lock()

    def next_slot(self) -> float | None:
        with self._lock:
            slot = max(self._next_s, time.monotonic())
            self._next_s = slot + self.interval_s
        return slot if slot < self.end_s else None


def _client_loop(index: int, opts: RunOptions, workload: Workload, client: NodeClient,
                 nodes: Callable[[], Sequence[str]], limiter: RateLimiter, recorder: Recorder) -> None:
    """One client: bound to one node (as Jepsen binds process p to node p mod N), so that a
    paused node blocks only its own clients while the others keep the cluster busy. `nodes()`
    is the current members: when the membership changes, the client follows (p mod the new N)."""
    rng = random.Random(opts.seed * 1000 + index)
    process = index
    while (slot := limiter.next_slot()) is not None:
        time.sleep(max(0.0, slot - time.monotonic()))
        members = nodes()
        node = members[index % len(members)]
        inv = workload.generate(rng)
        recorder.record(process, node, inv.f, inv.key, inv.value, "invoke")
        try:
            done = workload.invoke(client, node, inv)
        except ClientError as exc:
            done = Completion(exc.outcome, None, exc.error)
        except Exception as exc:  # an unexpected reply shape: it may still have happened
            done = Completion("info", None, f"client: {type(exc).__name__}: {exc}")
        recorder.record(process, node, inv.f, inv.key, done.value, done.outcome, done.error)  # type: ignore[arg-type]
        if done.outcome == "info":
            process += opts.concurrency  # a process with an indefinite op never returns


def _run_clients(opts: RunOptions, workload: Workload, client: NodeClient, nodes: Callable[[], Sequence[str]],
                 recorder: Recorder, origin_s: float) -> None:
    end_s, per_client_rate = origin_s + opts.time_limit_s, opts.rate / opts.concurrency
    limiters = [RateLimiter(per_client_rate, end_s, origin_s + i / opts.rate) for i in range(opts.concurrency)]
    threads = [threading.Thread(target=_client_loop, name=f"client-{i}", daemon=True,
                                args=(i, opts, workload, client, nodes, limiters[i], recorder))
               for i in range(opts.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(opts.time_limit_s + opts.request_timeout_s * 3 + 10)


def _read_digests(client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None:
    """Every node's per-collection digests and collection names ("tenant/database/name"), read
    linearizably (so at least at the commit index)."""
    deadline_s = time.monotonic() + DIGEST_TIMEOUT_S
    for node in nodes:
        def read(node: str = node) -> dict[str, Any] | None:
            reply = client.request(node, "GET", "/raftchroma/digest", read=True, timeout_s=DIGEST_REQUEST_TIMEOUT_S)
            if not reply.ok:
                return None
            return {"collections": reply.body["collections"], "names": reply.body.get("names", {})}
        record_final(recorder, f"digest-{node}", node, "digest", None, deadline_s, read)


def _execute(opts: RunOptions, cluster: LocalCluster, recorder: Recorder, monitor: StatusMonitor,
             notes: dict[str, Any]) -> None:
    nodes = list(cluster.nodes)
    cluster.start_all()
    if cluster.wait_for_leader(LEADER_TIMEOUT_S) is None:
        raise RuntimeError(f"no leader within {LEADER_TIMEOUT_S}s of starting the cluster")
    monitor.start()  # from here on every election is counted (elections_checker)
    # Linearizable reads for setup and final reads; the workload's reads use opts.read_consistency.
    # Both see the cluster's live port map, so nodes added during the run are reachable.
    admin = NodeClient(cluster.http_ports, opts.request_timeout_s)
    client = NodeClient(admin.ports, opts.request_timeout_s, opts.read_consistency)
    workload = make_workload(opts.workload)
    workload.setup(admin, nodes)
    faults = schedule(opts.seed, opts.nemesis, opts.time_limit_s, nodes)
    notes["schedule"] = [asdict(f) for f in faults]
    nemesis = Nemesis(cluster, recorder, faults)
    origin_s = time.monotonic()
    nemesis.start(origin_s)
    _run_clients(opts, workload, client, lambda: cluster.members, recorder, origin_s)
    nemesis.heal()
    if nemesis.error is not None:
        notes["nemesis_error"] = repr(nemesis.error)
    heal_s = time.monotonic()
    if "membership" in opts.nemesis:  # the final reads and the checkers use the final membership
        nemesis.membership.settle()
    members = list(cluster.members)
    notes["members"] = members
    applied = cluster.wait_converged(RECOVERY_TIMEOUT_S)
    notes["recovery"] = {"converged": applied is not None, "applied_index": applied,
                         "seconds": round(time.monotonic() - heal_s, 3)}
    workload.final(admin, members, recorder)
    _read_digests(admin, members, recorder)


def run(opts: RunOptions) -> tuple[int, Path]:
    """One run; returns (exit code, run directory)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run_dir = opts.store / f"{stamp}-{opts.seed}"
    run_dir.mkdir(parents=True, exist_ok=False)
    recorder = Recorder()
    notes: dict[str, Any] = {"options": opts.to_dict(), "nodes": [f"n{i + 1}" for i in range(opts.nodes)]}
    cluster_opts = ClusterOptions(nodes=opts.nodes, unsafe_local_reads=opts.unsafe_local_reads)
    with LocalCluster.create(cluster_opts, pid_file=run_dir / "pids.json") as cluster:
        monitor = StatusMonitor(list(cluster.nodes), cluster.status, follow=lambda: cluster.members)
        try:
            _execute(opts, cluster, recorder, monitor, notes)
        except BaseException as exc:
            notes["harness_error"] = "".join(traceback.format_exception(exc)).strip()
            if not isinstance(exc, Exception):
                raise
        finally:
            monitor.stop()
            monitor.write(run_dir)
            notes["status_polls_unanswered"] = monitor.unanswered
            cluster.kill_all()
            cluster.copy_logs(run_dir / "logs")
            dump_history(recorder.ops(), run_dir / "history.jsonl")
            (run_dir / "run.json").write_text(json.dumps(notes, indent=2, default=str) + "\n")
    return check_run(run_dir), run_dir


def _overall(verdicts: Sequence[str]) -> str:
    if "invalid" in verdicts:
        return "invalid"
    return "unknown" if "unknown" in verdicts else "valid"


def _digest_map(output: dict[str, Any]) -> dict[str, str]:
    """One node's recorded digest as one flat map: the digest of every collection, and its name
    under `name:<id>`. Runs recorded before names were kept hold the digest map alone."""
    if "collections" not in output:
        return dict(output)
    return {**output["collections"], **{f"name:{cid}": name for cid, name in output.get("names", {}).items()}}


def _convergence(ops: Sequence[Any], nodes: Sequence[str]) -> dict[str, Any]:
    """Every one of `nodes` (the final members) must have answered the same digests; a node
    removed during the run is not compared."""
    digests = {op.node: _digest_map(op.output) for op in ops
               if op.f == "digest" and op.outcome == "ok" and op.node in nodes}
    result = check_convergence(digests)
    missing = sorted(set(nodes) - set(digests))
    if missing and result["verdict"] == "valid":
        result["verdict"] = "unknown"
    result["nodes_without_digest"] = missing
    return result


def _write_report(run_dir: Path, results: dict[str, Any]) -> None:
    """report.html, latency.png, timeline.png; a failure to draw never changes the verdict, it
    is noted in results.json and on stderr."""
    try:
        from jepsen_lite.report import write_report  # matplotlib loads only when a report is drawn

        write_report(run_dir)
    except Exception as exc:
        results["report_error"] = f"{type(exc).__name__}: {exc}"
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"jepsen-lite: no report: {results['report_error']}", file=sys.stderr)


def _elections_summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The elections a run saw, for the top of results.json (details under checkers)."""
    if result is None:
        return None
    keys = ("elections", "elections_outside_windows", "leader_changes", "leader_changes_outside_windows",
            "grace_s", "samples")
    return {k: result.get(k) for k in keys}


def check_run(run_dir: Path, budget_s: float = CHECK_BUDGET_S) -> int:
    """Checks a stored run, writes results.json and the report, returns the exit code."""
    notes = json.loads((run_dir / "run.json").read_text())
    history = load_history(run_dir / "history.jsonl")
    ops = pair_ops(history)
    workload = make_workload(notes["options"]["workload"])
    checkers = {"workload": workload.check(ops, budget_s, nemesis_ops(history)),
                "convergence": _convergence(ops, notes.get("members") or notes["nodes"])}
    samples = load_samples(run_dir)
    if samples is not None:  # runs recorded before the status monitor have no samples
        origin_ns = min((op.time_ns for op in history), default=None)
        checkers["elections"] = check_elections(samples, nemesis_ops(history), origin_ns)
    verdicts = {name: result["verdict"] for name, result in checkers.items()}
    recovery = notes.get("recovery") or {}
    if recovery and not recovery.get("converged"):
        verdicts["recovery"] = "unknown"  # a liveness failure: the cluster did not catch up after heal
    if "harness_error" in notes or "nemesis_error" in notes:
        verdicts["harness"] = "unknown"  # the run did not go as scheduled
    verdict = _overall(list(verdicts.values()))
    client_ops = [op for op in ops if not str(op.process).startswith(("final", "digest"))]
    results = {
        "verdict": verdict,
        "verdicts": verdicts,
        "checkers": checkers,
        "counts": {"history_records": len(history), "operations": len(client_ops),
                   **{o: sum(1 for op in client_ops if op.outcome == o) for o in ("ok", "fail", "info")},
                   "nemesis_records": len(nemesis_ops(history))},
        "stats": phase_stats(ops, nemesis_ops(history)),
        "recovery": notes.get("recovery"),
        "elections": _elections_summary(checkers.get("elections")),
        "harness_error": notes.get("harness_error") or notes.get("nemesis_error"),
        "options": notes["options"],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    _write_report(run_dir, results)
    return {"valid": EXIT_VALID, "invalid": EXIT_INVALID}.get(verdict, EXIT_UNKNOWN)
