#!/usr/bin/env python3
"""Chroma's own client tests (the `chromadb/test/` package of the installed wheel) against
`chroma run` and against a FOLLOWER of a 3-node raftchroma cluster, on 127.0.0.1.

Owns: starting each target in a temp dir (every process in its own process group, stopped by
pid / process group when its suite ends, also on error, timeout, SIGTERM or Ctrl-C), running a
chosen subset of Chroma's tests with pytest in a subprocess against each, watching the Raft term
of every node while the suite runs, printing a table and writing
`bench/results/chroma-suite-<UTC timestamp>.json`.

How Chroma's conftest is pointed at a server (chromadb/test/conftest.py, read, not guessed):
`CHROMA_INTEGRATION_TEST_ONLY=1` makes the `system` fixture use only its `integration` and
`async_integration` fixtures, which build `Settings(allow_reset=True,
chroma_api_impl=FastAPI | AsyncFastAPI)`; Settings is a pydantic BaseSettings, so the server comes
from `CHROMA_SERVER_HOST` and `CHROMA_SERVER_HTTP_PORT`. Every test so runs twice, once with the
sync and once with the async HTTP client, and most reset the server first (`allow_reset` is on in
both targets).

This file is also the pytest plugin of that subprocess (`-p chroma_client_suite`, see the end):
it registers a bounded Hypothesis profile and stands in for `chromadb.server.fastapi`, which
Chroma's conftest imports only to start in-process servers that these tests do not use (so the
`fastapi` package is not needed). The suite needs `hypothesis` and `psutil` (Chroma's test
dependencies); `missing_test_dependencies()` names what is absent.

Must not: reach beyond 127.0.0.1 (the subprocess gets an HTTP(S) proxy on 127.0.0.1:9, where
nothing listens, for every other host, so a test that would download a model fails at once
instead of reaching the internet; such tests are deselected below), run unbounded (each suite
has a deadline), or stop processes it did not start. The cluster comes from tests/harness.py.

Run from anywhere:  python bench/chroma_client_suite.py  [--help]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.harness import ChromaRun, Cluster, make_cluster, start_cluster  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
PLUGIN_NAME = "chroma_client_suite"
NO_ROUTE_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once

LEADER_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
TERM_POLL_INTERVAL_S = 1.0
STATUS_TIMEOUT_S = 5.0
PER_TEST_TIMEOUT_S = 600
# The raftchroma target forwards every write from the follower to the leader; on 2 shared cores a
# batch of Chroma's test data can take long, so the cluster's own deadlines are generous.
CLUSTER_KEYS = "write_timeout_s = 60.0\nread_timeout_s = 60.0"

# Hypothesis: Chroma's "fast" preset draws 50 examples a test (about 13 min against `chroma run`
# here); these bounds keep a suite near 5 min against `chroma run`. Tests that set their own
# max_examples keep theirs (test_add's tiers: 1 to 20).
HYPOTHESIS_PROFILE = "raftchroma-suite"
HYPOTHESIS_MAX_EXAMPLES = 10
HYPOTHESIS_STATEFUL_STEPS = 20
HYPOTHESIS_SEED = 0

# Files under chromadb/test/, chosen for what a Chroma server must answer: the API, tenants and
# databases, records (add, get, query, update, upsert, delete, filters, limits) and collections.
# Left out: files whose every test is skipped in single-node mode (SPANN, Search API, forks,
# indexing status), that need a local store or Chroma's own server process (persistence, restarts,
# garbage collection, auth, SSL, multithreading), or that never reach a server (types, base64,
# client URL parsing, cloud client).
FULL_SUBSET = (
    "test_api.py",
    "property/test_add.py",
    "property/test_embeddings.py",
    "property/test_filtering.py",
    "property/test_collections.py",
    "property/test_collections_with_database_tenant.py",
    "api/test_collection.py",
    "api/test_delete_database.py",
    "api/test_get_database.py",
    "api/test_invalid_update.py",
    "api/test_limit_offset.py",
    "api/test_list_databases.py",
    "api/test_numpy_list_inputs.py",
    "client/test_database_tenant.py",
)

# A few minutes against a follower, with the sync client: the example-based API tests, the
# property test of large adds (5,000 to 15,000 records, sent in batches of the server's max batch
# size) and limit/offset paging.
SMALL_SUBSET = (
    "test_api.py",
    "property/test_add.py::test_add_large",
    "api/test_limit_offset.py",
)
SMALL_KEYWORDS = "not async_integration"

# Node-id prefixes (relative to chromadb/test/) deselected in every run, and why.
DESELECTED = {
    "test_api.py::test_persist_index_loading[": "an in-process PersistentClient (local_persist_api), no server",
    "test_api.py::test_persist_index_loading_embedding_function[": "an in-process PersistentClient, no server",
    "test_api.py::test_persist_index_get_or_create_embedding_function[": "an in-process PersistentClient, no server",
    "test_api.py::test_persist[": "an in-process PersistentClient, no server",
    "test_api.py::test_persist_index_loading_params[": "an in-process PersistentClient, and query_texts needs the "
                                                       "default embedding model (a download)",
    "test_api.py::test_default_embedding": "downloads the default embedding model",
    "test_api.py::test_collection_query_with_invalid_collection_throws[": "query_texts needs the default embedding "
                                                                          "model (a download)",
    "test_api.py::test_collection_update_with_invalid_collection_throws[": "documents without embeddings need the "
                                                                           "default embedding model (a download)",
    "test_api.py::test_ssl_self_signed": "starts Chroma's own in-process server with TLS",
    "api/test_delete_database.py::test_collection_was_removed": "reads the local SQLite store of an in-process client",
}

# Differences from `chroma run` that this suite found and raftchroma has not closed yet, by test id
# prefix as the JUnit report names tests. The full run still counts them (they are what differs);
# tests/test_chroma_client_suite.py accepts exactly these failures and fails once one passes, so
# that its entry is removed when raftchroma is fixed.
KNOWN_GAPS: dict[str, str] = {}  # test id prefix -> why it fails against raftchroma (none left)


def known_gap(test_id: str) -> str | None:
    return next((why for prefix, why in KNOWN_GAPS.items() if test_id.startswith(prefix)), None)


def missing_test_dependencies() -> list[str]:
    """Packages Chroma's test modules import that raftchroma's environment may lack."""
    return [name for name in ("hypothesis", "psutil") if importlib.util.find_spec(name) is None]


# ----------------------------------------------------------------------- the suite


@dataclasses.dataclass
class SuiteResult:
    passed: int
    failed: int
    errors: int
    skipped: int  # including xfail, as the JUnit report counts them
    seconds: float
    exit_code: int | None  # None: killed at the deadline
    summary_line: str
    outcomes: dict[str, str]  # test id -> passed | failed | error | skipped
    messages: dict[str, str]  # test id -> failure or error message, for those that did not pass

    def counts(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors, "skipped": self.skipped,
                "seconds": round(self.seconds, 1), "exit_code": self.exit_code, "summary_line": self.summary_line}


def chroma_test_dir() -> Path:
    spec = importlib.util.find_spec("chromadb")
    assert spec is not None and spec.origin is not None, "chromadb is not installed"
    return Path(spec.origin).parent / "test"


def suite_env(host: str, port: int) -> dict[str, str]:
    """The subprocess's environment: Chroma's conftest aimed at one server, nothing else reachable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        env.pop(key, None)
        env.pop(key.lower(), None)
    env.update(
        CHROMA_INTEGRATION_TEST_ONLY="1", CHROMA_SERVER_HOST=host, CHROMA_SERVER_HTTP_PORT=str(port),
        ANONYMIZED_TELEMETRY="False", PROPERTY_TESTING_PRESET="fast",
        HTTP_PROXY=NO_ROUTE_PROXY, HTTPS_PROXY=NO_ROUTE_PROXY, ALL_PROXY=NO_ROUTE_PROXY,
        NO_PROXY=f"{host},127.0.0.1,localhost", HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return env


def suite_command(test_dir: Path, work_dir: Path, subset: tuple[str, ...], keywords: str | None) -> list[str]:
    ini = work_dir / "pytest.ini"
    ini.write_text("[pytest]\nmarkers =\n    flaky\n    skip_single_region\n    test_with_multi_region\n")
    cmd = [sys.executable, "-m", "pytest", "-p", PLUGIN_NAME, "-p", "no:cacheprovider", "-c", str(ini),
           "--rootdir", str(test_dir), "-q", "-rfE", "--disable-warnings", "--color=no",
           f"--timeout={PER_TEST_TIMEOUT_S}", f"--hypothesis-profile={HYPOTHESIS_PROFILE}",
           f"--hypothesis-seed={HYPOTHESIS_SEED}", f"--junitxml={work_dir / 'junit.xml'}"]
    cmd += [str(test_dir / item) for item in subset]
    cmd += [f"--deselect={prefix}" for prefix in DESELECTED]  # node ids are relative to --rootdir
    if keywords:
        cmd += ["-k", keywords]
    return cmd


def run_suite(host: str, port: int, work_dir: Path, subset: tuple[str, ...] = FULL_SUBSET,
              keywords: str | None = None, deadline_s: float = 1500.0) -> SuiteResult:
    """Run the subset against host:port in a pytest subprocess (own process group, killed at the
    deadline or on any exception here); its output goes to work_dir/pytest.log."""
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = suite_command(chroma_test_dir(), work_dir, subset, keywords)
    started = time.monotonic()
    with open(work_dir / "pytest.log", "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir,
                                   env=suite_env(host, port), start_new_session=True)
    exit_code: int | None = None
    try:
        exit_code = process.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop_group(process)
    seconds = time.monotonic() - started
    outcomes, messages = parse_junit(work_dir / "junit.xml")
    summary = last_summary_line(work_dir / "pytest.log")
    if exit_code is None:
        summary = f"killed after the {deadline_s:g} s deadline; {summary}"
    tally = {k: sum(1 for o in outcomes.values() if o == k) for k in ("passed", "failed", "error", "skipped")}
    return SuiteResult(tally["passed"], tally["failed"], tally["error"], tally["skipped"], seconds, exit_code,
                       summary, outcomes, messages)


def parse_junit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Per test: its outcome, and for failures and errors the message with pytest's `E` lines."""
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    if not path.exists():
        return outcomes, messages
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag: child for child in case}
        outcome = next((name for tag, name in (("error", "error"), ("failure", "failed"), ("skipped", "skipped"))
                        if tag in tags), "passed")
        outcomes[test_id] = outcome
        if outcome in ("failed", "error"):
            element = tags[outcome if outcome == "error" else "failure"]
            e_lines = [line for line in (element.text or "").splitlines() if line.startswith("E ")]
            messages[test_id] = "\n".join([element.get("message") or "", *e_lines[:12]]).strip()
    return outcomes, messages


def last_summary_line(log_path: Path) -> str:
    lines = [line.strip("= ") for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    found = [line for line in lines if " in " in line and any(w in line for w in ("passed", "failed", "error"))]
    return found[-1] if found else (lines[-1] if lines else "")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, to the process group of a process this file started."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------- targets


def raft_status(cluster: Cluster) -> dict[str, dict[str, Any] | None]:
    """term, role, leader, leader_changes and how late the Raft tick ran, of every node (None: it
    did not answer)."""
    out: dict[str, dict[str, Any] | None] = {}
    for node_id, node in cluster.nodes.items():
        status = node.status(timeout_s=STATUS_TIMEOUT_S)
        out[node_id] = None if status is None else {k: status.get(k) for k in ("term", "role", "leader",
                                                                                "leader_changes", "commit_index",
                                                                                "late_ticks",
                                                                                "longest_tick_overrun_s")}
    return out


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class TermWatch:
    """Polls every node's status once a second while a suite runs; records each change of term,
    leader, role or leader_changes (and each node that stops answering) with a UTC timestamp."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.events: list[dict[str, Any]] = []
        self._last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="term-watch", daemon=True)

    def __enter__(self) -> TermWatch:
        self._last = {n: self.view(s) for n, s in raft_status(self.cluster).items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @staticmethod
    def view(status: dict[str, Any] | None) -> Any:
        return None if status is None else (status["term"], status["leader"], status["role"], status["leader_changes"])

    def _run(self) -> None:
        while not self._stop.wait(TERM_POLL_INTERVAL_S):
            for node_id, status in raft_status(self.cluster).items():
                view = self.view(status)
                if view != self._last.get(node_id):
                    self.events.append({"utc": utc_now(), "node": node_id, "status": status,
                                        "before": self._last.get(node_id)})
                    self._last[node_id] = view


# ----------------------------------------------------------------------- the run


def run_chroma_target(root: Path, subset: tuple[str, ...], keywords: str | None, deadline_s: float,
                      log: Any) -> dict[str, Any]:
    server = ChromaRun(root / "chroma")
    try:
        log(f"starting chroma run on 127.0.0.1:{server.port}")
        server.start(allow_reset=True)
        server.wait_ready()
        log("running the suite against chroma run")
        result = run_suite("127.0.0.1", server.port, root / "suite-chroma", subset, keywords, deadline_s)
    finally:
        server.stop()
    return {"target": "chroma run", "url": f"http://127.0.0.1:{server.port}", "result": result}


def run_raft_target(root: Path, subset: tuple[str, ...], keywords: str | None, deadline_s: float,
                    log: Any) -> dict[str, Any]:
    (root / "cluster").mkdir(parents=True, exist_ok=True)
    cluster = make_cluster(root / "cluster", cluster_keys=CLUSTER_KEYS, allow_reset=True)
    try:
        log("starting a 3-node raftchroma cluster")
        leader = start_cluster(cluster, timeout_s=LEADER_TIMEOUT_S)
        follower = next(node_id for node_id in cluster.nodes if node_id != leader)
        node = cluster.node(follower)
        start = {"utc": utc_now(), "nodes": raft_status(cluster)}
        log(f"leader {leader}; running the suite against follower {follower} ({node.url})")
        with TermWatch(cluster) as watch:
            result = run_suite("127.0.0.1", node.http_port, root / "suite-raftchroma", subset, keywords,
                               deadline_s)
        end = {"utc": utc_now(), "nodes": raft_status(cluster)}
    except BaseException:
        print(f"raftchroma node logs (tail):\n{cluster.log_tail(15)}", file=sys.stderr)
        raise
    finally:
        cluster.stop_all()
    return {"target": f"raftchroma follower {follower}", "url": node.url, "leader": leader, "follower": follower,
            "result": result, "raft_start": start, "raft_end": end, "raft_events": watch.events}


def terms_unchanged(target: dict[str, Any]) -> bool:
    start, end = target["raft_start"]["nodes"], target["raft_end"]["nodes"]
    return all(start[n] is not None and end[n] is not None and start[n]["term"] == end[n]["term"] for n in start)


def differences(chroma: SuiteResult, raft: SuiteResult) -> list[dict[str, str]]:
    """Tests that passed against chroma run but not against raftchroma, and the reverse."""
    out = []
    for test_id in sorted(set(chroma.outcomes) | set(raft.outcomes)):
        a, b = chroma.outcomes.get(test_id, "absent"), raft.outcomes.get(test_id, "absent")
        if a != b:
            out.append({"test": test_id, "chroma run": a, "raftchroma": b,
                        "message": raft.messages.get(test_id) or chroma.messages.get(test_id, "")})
    return out


def format_table(targets: list[dict[str, Any]]) -> str:
    header = ("target", "passed", "failed", "errors", "skipped", "seconds", "term start -> end", "leader_changes")
    rows = []
    for t in targets:
        r: SuiteResult = t["result"]
        terms, changes = "-", "-"
        if "raft_start" in t:
            s, e = t["raft_start"]["nodes"], t["raft_end"]["nodes"]
            terms = " ".join(f"{n}:{fmt(s[n], 'term')}->{fmt(e[n], 'term')}" for n in s)
            changes = " ".join(f"{n}:{fmt(s[n], 'leader_changes')}->{fmt(e[n], 'leader_changes')}" for n in s)
        rows.append((t["target"], r.passed, r.failed, r.errors, r.skipped, f"{r.seconds:.0f}", terms, changes))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def describe(status: Any) -> str:
    """A TermWatch view or status, as read in the printed report."""
    if status is None:
        return f"status did not answer within {STATUS_TIMEOUT_S:g} s"
    if isinstance(status, dict):
        status = TermWatch.view(status)
    term, leader, role, leader_changes = status
    return f"term {term}, {role}, leader {leader}, leader_changes {leader_changes}"


def fmt(status: dict[str, Any] | None, key: str) -> str:
    return "?" if status is None else str(status[key])


def write_results(report: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"chroma-suite-{report['started_utc']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def target_report(target: dict[str, Any]) -> dict[str, Any]:
    r: SuiteResult = target["result"]
    out = {k: v for k, v in target.items() if k != "result"}
    out.update(r.counts(), failures=r.messages, outcomes=r.outcomes)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--targets", default="chroma,raftchroma", help="comma-separated: chroma, raftchroma")
    p.add_argument("--small", action="store_true", help="the small subset of tests/test_chroma_client_suite.py")
    p.add_argument("--deadline-s", type=float, default=1500.0, help="per target: kill its suite after this long")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, data) after success too")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or set(args.targets) - {"chroma", "raftchroma"}:
        p.error("--targets takes chroma and/or raftchroma")
    return args


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    t0 = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    subset, keywords = (SMALL_SUBSET, SMALL_KEYWORDS) if args.small else (FULL_SUBSET, None)
    report: dict[str, Any] = {
        "started_utc": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), "subset": list(subset), "keywords": keywords,
        "deselected": DESELECTED, "known_gaps": KNOWN_GAPS,
        "hypothesis": {"profile": HYPOTHESIS_PROFILE, "max_examples": HYPOTHESIS_MAX_EXAMPLES,
                       "stateful_step_count": HYPOTHESIS_STATEFUL_STEPS, "seed": HYPOTHESIS_SEED},
        "environment": environment()}
    targets = []
    for name in args.targets:
        runner = run_chroma_target if name == "chroma" else run_raft_target
        targets.append(runner(root, subset, keywords, args.deadline_s, log))
        r = targets[-1]["result"]
        log(f"{targets[-1]['target']}: {r.summary_line}")
    report["environment"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["total_s"] = round(time.monotonic() - t0, 1)
    report["targets"] = [target_report(t) for t in targets]
    report["table"] = format_table(targets)
    by_name = {name: t for name, t in zip(args.targets, targets)}
    if "raftchroma" in by_name:
        report["terms_unchanged"] = terms_unchanged(by_name["raftchroma"])
    if len(by_name) == 2:
        report["same_pass_count"] = by_name["chroma"]["result"].passed == by_name["raftchroma"]["result"].passed
        report["differences"] = differences(by_name["chroma"]["result"], by_name["raftchroma"]["result"])
    return report


def environment() -> dict[str, Any]:
    import chromadb

    return {"cpu_count": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(), "chromadb": chromadb.__version__,
            "chroma_tests": str(chroma_test_dir()),
            "note": "the servers, the raftchroma nodes and the pytest client share this machine"}


def print_report(report: dict[str, Any]) -> None:
    print(report["table"])
    for target in report["targets"]:
        for test_id, message in target["failures"].items():
            print(f"\n[{target['target']}] {test_id}\n    " + message.replace("\n", "\n    "))
        for event in target.get("raft_events", []):
            print(f"[{target['target']}] {event['utc']} {event['node']}: {describe(event['before'])} -> "
                  f"{describe(event['status'])}")
    if "differences" in report:
        print(f"\nsame pass count: {report['same_pass_count']}; tests whose outcome differs: "
              f"{len(report['differences'])}")
        for d in report["differences"]:
            gap = known_gap(d["test"])
            print(f"  {d['test']}: chroma run {d['chroma run']}, raftchroma {d['raftchroma']}"
                  + (f" (known gap: {gap})" if gap else ""))
    if "terms_unchanged" in report:
        print(f"raft term unchanged on every node: {report['terms_unchanged']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_test_dependencies()
    if missing:
        print(f"Chroma's tests need: {', '.join(missing)} (pip install {' '.join(missing)})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # runs the finally blocks
    root = Path(tempfile.mkdtemp(prefix="raftchroma-chroma-suite-"))
    try:
        report = run(args, root)
    except BaseException:
        print(f"the run failed; everything it started is stopped; logs are kept in {root}", file=sys.stderr)
        raise
    print_report(report)
    ok = report.get("same_pass_count", True) and report.get("terms_unchanged", True) and not any(
        t["failed"] or t["errors"] for t in report["targets"])
    if ok and not args.keep_temp:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"logs and pytest output are kept in {root}")
    print(f"total {report['total_s']} s; results written to {write_results(report, args.results_dir)}")
    return 0 if ok else 1


# ------------------------------------------------------------------ pytest plugin
# Loaded only inside the suite's pytest subprocess (`-p chroma_client_suite`), before Chroma's
# conftest is imported. Importing this file elsewhere (the test, `python bench/...`) changes nothing.


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: list[str]) -> None:
    import types

    import chromadb.server
    import hypothesis

    stub = types.ModuleType("chromadb.server.fastapi")
    stub.__doc__ = "Stand-in: Chroma's in-process test server is not used when the tests target a running server."

    class FastAPI:  # the name conftest looks up
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("chromadb.server.fastapi is stubbed: this suite targets an external server")

    stub.FastAPI = FastAPI  # type: ignore[attr-defined]
    sys.modules["chromadb.server.fastapi"] = stub
    chromadb.server.fastapi = stub  # type: ignore[attr-defined]
    hypothesis.settings.register_profile(
        HYPOTHESIS_PROFILE, deadline=None, database=None, max_examples=HYPOTHESIS_MAX_EXAMPLES,
        stateful_step_count=HYPOTHESIS_STATEFUL_STEPS, verbosity=hypothesis.Verbosity.normal,
        suppress_health_check=[hypothesis.HealthCheck.data_too_large, hypothesis.HealthCheck.large_base_example,
                               hypothesis.HealthCheck.function_scoped_fixture, hypothesis.HealthCheck.too_slow])


if __name__ == "__main__":
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    sys.exit(main())
