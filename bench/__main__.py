"""`python -m bench`: every workload against a real `chroma run` and a real 3-node raftchroma cluster
on this machine, in one run; one table, bench/results/<stamp>.json (and latest.json), a PNG chart.

Owns: the order of the run, the watchdog and the signals, and the guarantee that every process
it started is stopped (by process group) when it ends: on success, on failure, on Ctrl-C, on
SIGTERM and when --deadline-s passes. Must not: reach beyond 127.0.0.1 or stop anything else.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ["ANONYMIZED_TELEMETRY"] = "False"

from bench import faults, report, workloads  # noqa: E402
from bench.bound import run_bound, vectors  # noqa: E402
from bench.measure import Sample  # noqa: E402
from bench.options import Options, parse  # noqa: E402
from bench.servers import Servers, TermLog, wait_caught_up  # noqa: E402

Log = Callable[[str], None]


class BenchTimeout(Exception):
    """The watchdog fired: the run took longer than --deadline-s."""


def run_ingests(servers: Servers, terms: TermLog, options: Options, log: Log) -> dict[str, Any]:
    data = vectors(options.records, options.dim, options.seed)
    leader = servers.leader()
    follower = servers.followers(leader)[0]
    chroma = servers.chroma_client()
    out: dict[str, Any] = {"chroma_run": []}
    for k, (via, node_id) in enumerate((("leader", leader), ("follower", follower))):
        log(f"batched ingest of {options.records} via chroma run (collection {k + 1} of 2)")
        out["chroma_run"].append(workloads.ingest(chroma, f"{workloads.INGEST}{'' if k == 0 else '_2'}", data,
                                                  options.batch_size))
        log(f"batched ingest of {options.records} via the raftchroma {via} {node_id}")
        with terms.phase(f"ingest via the {via}", fault=False):
            name = workloads.INGEST if via == "leader" else f"{workloads.INGEST}_{via}"
            out[via] = workloads.ingest(servers.node_client(node_id), name, data, options.batch_size)
    out["replicas_applied_after_s"] = round(wait_caught_up(servers), 3)
    return out


def spread(servers: Servers, consistency: str) -> workloads.ClientFactory:
    """Client k talks to node k mod 3: the clients are spread over the nodes."""
    nodes = servers.node_ids
    return lambda k: servers.node_client(nodes[k % len(nodes)], consistency)


def run_upserts(servers: Servers, terms: TermLog, options: Options, log: Log) -> dict[str, Sample]:
    log(f"{options.clients} clients upserting single records into chroma run for {options.upsert_s:g} s")
    out = {"chroma_run": workloads.upserts(lambda k: servers.chroma_client(), options)}
    log(f"{options.clients} clients upserting single records into raftchroma (spread over the nodes)")
    with terms.phase("single-record upserts", fault=False):
        out["raftchroma"] = workloads.upserts(spread(servers, "linearizable"), options)
    return out


def group_commit_counts(servers: Servers) -> dict[str, Any]:
    """Each node's group-commit counters (entries it proposed, writes in them) and applier counters
    (passes, entries, proposals, steps: one Chroma call per step); None if it does not answer."""
    out: dict[str, Any] = {}
    for node_id in servers.node_ids:
        status = servers.status(node_id) or {}
        counts = status.get("group_commit")
        out[node_id] = None if counts is None else counts | {f"applied_{k}": v
                                                             for k, v in status.get("applier", {}).items()}
    return out


def run_only(servers: Servers, options: Options, log: Log) -> dict[str, Any]:
    """`--only upserts`: the cluster and chroma run, that one workload, and the terms around it."""
    log("starting chroma run and a 3-node raftchroma cluster")
    servers.start()
    terms = TermLog(servers)
    before = group_commit_counts(servers)
    m: dict[str, Any] = {"upserts": run_upserts(servers, terms, options, log)}
    after = group_commit_counts(servers)
    m["group_commit"] = {n: None if not before[n] or not after[n] else
                         {k: after[n][k] - before[n][k] for k in after[n]} for n in servers.node_ids}
    m["leader"] = servers.leader()
    m["terms"] = terms.phases
    return m


def run_reads(servers: Servers, terms: TermLog, options: Options, log: Log) -> dict[str, dict[str, Sample]]:
    out: dict[str, dict[str, Sample]] = {}
    for kind, workload in (("query", workloads.queries), ("get", workloads.gets), ("count", workloads.counts)):
        log(f"{options.read_clients} clients: {kind} on chroma run for {options.read_s:g} s")
        out[kind] = {"chroma_run": workload(lambda k: servers.chroma_client(), options)}
        for consistency in ("stale", "linearizable"):
            log(f"{options.read_clients} clients: {kind} on raftchroma, {consistency}, spread over the nodes")
            with terms.phase(f"{kind} {consistency}", fault=False):
                out[kind][consistency] = workload(spread(servers, consistency), options)
    return out


def run_all(servers: Servers, root: Path, options: Options, log: Log) -> dict[str, Any]:
    """The measurements, in order; the bound first, while nothing else runs."""
    m: dict[str, Any] = {"bound": run_bound(root / "bound", options, log)}
    log(f"physical bound: {m['bound']['all_three_vec_per_s']} vec/s with all three at once")
    log("starting chroma run and a 3-node raftchroma cluster")
    servers.start()
    terms = TermLog(servers)
    m["ingest"] = run_ingests(servers, terms, options, log)
    m["upserts"] = run_upserts(servers, terms, options, log)
    m["reads"] = run_reads(servers, terms, options, log)
    log(f"query recall@10 against brute force, {workloads.RECALL_QUERIES} queries on chroma run and on each node")
    clients = {"chroma_run": servers.chroma_client()} | {n: servers.node_client(n, "stale") for n in servers.node_ids}
    with terms.phase("recall queries", fault=False):
        m["recall"] = workloads.recall(clients, vectors(options.records, options.dim, options.seed), options)
    log(f"catch-up: one follower stopped while {options.catchup_records} records are written")
    with terms.phase("catch-up (a follower stopped)", fault=True):
        m["catch_up"] = faults.catch_up(servers, options, vectors(options.catchup_records, options.dim,
                                                                  options.seed + 7))
    log(f"{options.kills} leader kills")
    with terms.phase("leader kills", fault=True):
        m["kills"] = faults.leader_kills(servers, options, log)
    m["terms"] = terms.phases
    return m


def details(m: dict[str, Any]) -> dict[str, Any]:
    """The measurements as JSON: every Sample summarised."""
    def plain(x: Any) -> Any:
        if isinstance(x, Sample):
            return x.summary()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list):
            return [plain(v) for v in x]
        return x
    return plain(m)


def run(options: Options, root: Path, log: Log) -> dict[str, Any]:
    started_utc = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    servers = Servers.create(root / "servers")
    try:
        m = run_only(servers, options, log) if options.only else run_all(servers, root, options, log)
    except BaseException:
        print(f"raftchroma node logs (tail):\n{servers.cluster.log_tail(15)}", file=sys.stderr)
        raise
    finally:
        signal.alarm(0)  # the watchdog must not interrupt the clean-up itself
        pids = servers.pids()
        servers.stop()
    rows = (report.only_rows(m, options.clients) if options.only else
            report.build_rows(m, options.batch_size, options.clients, options.read_clients))
    return {"started_utc": started_utc, "total_s": round(time.perf_counter() - t0, 1), "quick": options.quick,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()},
            "machine": report.machine(load_before), "rows": [dataclasses.asdict(r) for r in rows],
            "details": details(m) | {"pids_started": pids}}


def install_stop_handlers(deadline_s: float) -> None:
    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"the benchmark ran longer than --deadline-s={deadline_s:g}")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where SIGINT came ignored (a background job)
    signal.alarm(max(1, int(deadline_s)))


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    t0 = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    install_stop_handlers(options.deadline_s)
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="raftchroma-bench-", dir=options.work_dir))
    try:
        result = run(options, root, log)
    except BaseException as exc:
        print(f"benchmark stopped ({type(exc).__name__}: {exc}); every process it started is stopped; "
              f"their logs and data are kept in {root}", file=sys.stderr)
        raise
    finally:
        signal.alarm(0)
    if not options.keep_temp:
        shutil.rmtree(root, ignore_errors=True)
    publish(result, options)
    return 0


def publish(result: dict[str, Any], options: Options) -> None:
    chart = None if options.only else report.draw_chart(result, options.results_dir / f"{result['started_utc']}.png")
    if chart is not None:
        shutil.copyfile(chart, options.results_dir / "latest.png")
    result["chart"] = chart.name if chart else None
    path = report.write_results(result, options.results_dir, prefix=f"{options.only}-" if options.only else "")
    rows = [report.Row(**r) for r in result["rows"]]
    print(report.format_table(rows))
    for r in rows:
        if r.note:
            print(f"  {r.work}: {r.note}")
    m = result["machine"]
    print(f"{m['cores']} cores, Python {m['python']}, chromadb {m['chromadb']}, commit {m['git_commit']}"
          f"{' (dirty)' if m['git_dirty'] else ''}; load average before {m['load_average_1_5_15_before']}, "
          f"after {m['load_average_1_5_15_after']}")
    if options.only:
        print(f"group commit and applier counts per node during the raftchroma upserts (leader "
              f"{result['details']['leader']}): {result['details']['group_commit']}")
        print(f"total {result['total_s']} s; {path}")
        return
    print(f"total {result['total_s']} s; {path} (and latest.json)" + (f", chart {chart}" if chart else
                                                                     ", no chart: matplotlib is not installed"))


if __name__ == "__main__":
    sys.exit(main())
