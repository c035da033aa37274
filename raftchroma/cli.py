"""The `raftchroma` command line (click): serve one node, bring up a local cluster, show status,
hash a client token, and run the benchmark of a source checkout.

Owns: process-level concerns (logging setup, signals, child processes of `up`), the environment
variables `serve` reads (each an option's `envvar`, so `--help` lists them), and turning
configuration errors into one-line messages with exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from raftchroma import logs
from raftchroma.config import (SECRET_ENV, SECRET_FILE_NAME, ClusterConfig, ConfigError, FaultKnobs, NodeConfig,
                               check_token_text, load_config, token_sha256, with_data_dir_secret,
                               with_node_overrides)
from raftchroma.errors import EXIT_CORRUPT, EXIT_CORRUPT_LOG, EXIT_USAGE

STATUS_TIMEOUT_S = 1.0


def _load(config_path: str) -> ClusterConfig:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(f"raftchroma: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@click.group()
def main() -> None:
    """raftchroma: ChromaDB replicated by Raft."""


@main.command()
@click.option("--config", "config_path", default="cluster.toml", show_default=True, envvar="RAFTCHROMA_CONFIG",
              show_envvar=True, help="Cluster file.")
@click.option("--node", "node_id", default=None, envvar="RAFTCHROMA_NODE", show_envvar=True,
              help="Id of the node to run (from the cluster file).")
@click.option("--raft-listen", default=None, envvar="RAFTCHROMA_RAFT_LISTEN", show_envvar=True,
              help="host:port the Raft port binds (e.g. 0.0.0.0:7000); overrides the node's raft_listen.")
@click.option("--http-listen", default=None, envvar="RAFTCHROMA_HTTP_LISTEN", show_envvar=True,
              help="host:port the API binds (e.g. 0.0.0.0:8000); overrides the node's http_listen.")
@click.option("--data-dir", default=None, envvar="RAFTCHROMA_DATA_DIR", show_envvar=True,
              help="Absolute path; overrides the node's data_dir.")
@click.option("--log-level", default="INFO", show_default=True, envvar="RAFTCHROMA_LOG_LEVEL", show_envvar=True)
@click.option("--log-format", type=click.Choice(logs.LOG_FORMATS), default="text", show_default=True,
              envvar="RAFTCHROMA_LOG_FORMAT", show_envvar=True, help="json: one JSON object per line.")
@click.option("--join", is_flag=True, envvar="RAFTCHROMA_JOIN", show_envvar=True,
              help="A new node for a running cluster: on its first start it is not a member; it waits to be "
                   "added (raftchroma cluster add) and follows without voting until promoted.")
@click.option("--unsafe-local-reads", is_flag=True, hidden=True,
              help="TEST ONLY: serve linearizable reads without a barrier (jepsen-lite proves this is unsafe).")
@click.option("--fault-injection", is_flag=True, hidden=True,
              help="TEST ONLY: enable POST /raftchroma/test/partition (jepsen-lite's partition nemesis).")
@click.option("--test-snapshot-chunk-delay-s", type=click.FloatRange(min=0.0), default=0.0, hidden=True,
              help="TEST ONLY (needs --fault-injection): sleep this long before sending each snapshot chunk.")
@click.option("--test-no-snapshot-keepalive", is_flag=True, hidden=True,
              help="TEST ONLY (needs --fault-injection): send no keepalive while receiving a snapshot.")
@click.option("--test-snapshot-write-delay-s", type=click.FloatRange(min=0.0), default=0.0, hidden=True,
              help="TEST ONLY (needs --fault-injection): writing a snapshot takes this much longer.")
@click.option("--test-snapshot-in-tick-thread", is_flag=True, hidden=True,
              help="TEST ONLY (needs --fault-injection): the Raft tick thread waits while a snapshot is written.")
def serve(config_path: str, node_id: str | None, raft_listen: str | None, http_listen: str | None,
          data_dir: str | None, log_level: str, log_format: str, join: bool, unsafe_local_reads: bool,
          fault_injection: bool, test_snapshot_chunk_delay_s: float, test_no_snapshot_keepalive: bool,
          test_snapshot_write_delay_s: float, test_snapshot_in_tick_thread: bool) -> None:
    """Run one node in the foreground until SIGTERM or SIGINT."""
    config = _load(config_path)
    if node_id is None:
        click.echo("raftchroma: --node is required (one of: " + ", ".join(n.id for n in config.nodes) + ")", err=True)
        sys.exit(EXIT_USAGE)
    try:
        config = with_node_overrides(config, node_id, raft_listen, http_listen, data_dir)
        node_config = config.node(node_id)
    except ConfigError as exc:
        click.echo(f"raftchroma: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    faults = FaultKnobs(snapshot_chunk_delay_s=test_snapshot_chunk_delay_s,
                        snapshot_keepalive=not test_no_snapshot_keepalive,
                        snapshot_write_delay_s=test_snapshot_write_delay_s,
                        snapshot_in_tick_thread=test_snapshot_in_tick_thread)
    if faults.any and not fault_injection:
        click.echo("raftchroma: the --test-* options need --fault-injection", err=True)
        sys.exit(EXIT_USAGE)
    config = _with_secret(config, node_config)
    logs.configure(log_level, node_id, log_format)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from raftchroma.journal import JournalCorrupt
    from raftchroma.snapshot import SnapshotCorrupt
    try:
        asyncio.run(_serve(config, node_config, unsafe_local_reads, fault_injection, faults, join))
    except JournalCorrupt as exc:
        _refuse(log_format, f"refusing to start node {node_id}: corrupt Raft journal: {exc}")
    except SnapshotCorrupt as exc:
        _refuse(log_format, f"refusing to start node {node_id}: corrupt snapshot: {exc}")


def _with_secret(config: ClusterConfig, node_config: NodeConfig) -> ClusterConfig:
    """The config with its cluster secret; exits 2 when there is none and Raft is reachable
    beyond loopback (anyone who reached the port could then act as a member)."""
    try:
        config = with_data_dir_secret(config, node_config)
    except ConfigError as exc:
        click.echo(f"raftchroma: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if config.secret is None and not config.raft_is_loopback_only:
        click.echo(f"raftchroma: refusing to start node {node_config.id}: Raft listens beyond loopback and no "
                   f"cluster secret is set; give every node the same one with {SECRET_ENV}, "
                   "[cluster] secret_file or [cluster] secret", err=True)
        sys.exit(EXIT_USAGE)
    return config


def ensure_local_secret(config: ClusterConfig) -> None:
    """`raftchroma up`: when the config sets no secret, give every node the same random one in
    `<data_dir>/raft-secret` (mode 0600), reusing one a node already has."""
    if config.secret is not None:
        return
    paths = [node.data_dir / SECRET_FILE_NAME for node in config.nodes]
    existing = [path for path in paths if path.exists()]
    secret = existing[0].read_text().strip() if existing else secrets.token_hex(32)
    for path in paths:
        if path.exists() and path.read_text().strip() == secret:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        os.chmod(path, 0o600)


def _refuse(log_format: str, message: str) -> None:
    """Exit 3 with one line: a log record in JSON mode (every stderr line parses), else plain."""
    if log_format == "json":
        logging.getLogger(__name__).critical(message)
    else:
        click.echo(f"raftchroma: {message}", err=True)
    sys.exit(EXIT_CORRUPT)


async def _serve(config: ClusterConfig, node_config: Any, unsafe_local_reads: bool, fault_injection: bool,
                 faults: FaultKnobs, join: bool = False) -> None:
    from raftchroma.http import run_server
    from raftchroma.node import Node

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config, node_config, unsafe_local_reads=unsafe_local_reads, fault_injection=fault_injection,
                faults=faults, join=join)
    await run_server(node, stop)
    logging.getLogger(__name__).info("node %s stopped", node_config.id)


# ------------------------------------------------------------------ status


def fetch_status(url: str, timeout_s: float = STATUS_TIMEOUT_S,
                 context: ssl.SSLContext | None = None) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/raftchroma/status", timeout=timeout_s, context=context) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def client_ssl(config: ClusterConfig, cacert: str | None = None, cert: str | None = None,
               key: str | None = None) -> ssl.SSLContext | None:
    """How this CLI reaches nodes served over TLS: their CA (`--cacert`, else `[tls] ca_file`, else
    the system's), and a client certificate (`--cert`/`--key`) when nodes require one."""
    if config.tls is None:
        return None
    cafile = cacert or (str(config.tls.ca_file) if config.tls.ca_file is not None else None)
    context = ssl.create_default_context(cafile=cafile)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def tls_options(command: Any) -> Any:
    for option in reversed((
        click.option("--cacert", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CA that signed the nodes' certificates (default: [tls] ca_file, else the system's)."),
        click.option("--cert", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Client certificate, when nodes require one ([tls] client_ca_file)."),
        click.option("--key", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Private key of --cert."),
    )):
        command = option(command)
    return command


def cluster_status(config: ClusterConfig, context: ssl.SSLContext | None = None) -> list[dict[str, Any]]:
    """One row per node: cluster.toml's nodes, then members the reachable nodes know of that
    cluster.toml does not list (added at runtime). `voting` says what the membership in force on the
    leader (else on any reachable node) says of it: voter, non-voter or not-member (not yet added, or removed)."""
    scheme = "https" if config.tls is not None else "http"
    urls = {node.id: node.http_url for node in config.nodes}
    statuses = {node_id: fetch_status(url, context=context) for node_id, url in urls.items()}
    for known in [s for s in statuses.values() if s]:
        for member in known.get("members") or []:
            if member["id"] not in urls:
                urls[member["id"]] = f"{scheme}://{member['http']}"
                statuses[member["id"]] = fetch_status(urls[member["id"]], context=context)
    members = _membership_in_force(list(statuses.values()))
    rows = []
    for node_id, url in urls.items():
        status = statuses[node_id]
        row = {"id": node_id, "url": url, "reachable": status is not None, "voting": _voting(members, node_id)}
        row.update(status or {})
        rows.append(row)
    return rows


def _membership_in_force(statuses: list[dict[str, Any] | None]) -> list[dict[str, Any]] | None:
    answering = [s for s in statuses if s and s.get("members")]
    if not answering:
        return None
    best = max(answering, key=lambda s: (s.get("role") == "leader", s.get("membership_index", 0), s.get("term", 0)))
    return list(best["members"])


def _voting(members: list[dict[str, Any]] | None, node_id: str) -> str | None:
    if members is None:
        return None
    member = next((m for m in members if m["id"] == node_id), None)
    return "not-member" if member is None else "voter" if member["voter"] else "non-voter"


STATUS_COLUMNS = ("id", "url", "reachable", "voting", "role", "term", "leader", "commit_index", "applied_index",
                  "lag", "match_index", "snapshot_index", "log_len", "journal_bytes")


def with_lag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row plus `lag` (the leader's commit index minus the node's applied index) and, for a
    follower, `leader_match_index` (the leader's view of how far its log is replicated); None
    where no reachable node is the leader they name."""
    leaders = [r for r in rows if r.get("reachable") and r.get("role") == "leader" and r.get("leader") == r["id"]]
    leader = max(leaders, key=lambda r: r.get("term", 0)) if leaders else None
    out = []
    for row in rows:
        lag = match = None
        if leader is not None and row.get("reachable"):
            lag = max(0, leader["commit_index"] - row["applied_index"])
            match = (leader.get("match_index") or {}).get(row["id"])
        out.append({**row, "lag": lag, "leader_match_index": match})
    return out


def status_table(rows: list[dict[str, Any]]) -> list[str]:
    """`raftchroma status` as aligned text lines: a header, then one line per node."""
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get("leader_match_index" if column == "match_index" else column)
        return "-" if value is None else str(value)
    table = [list(STATUS_COLUMNS)] + [[cell(row, c) for c in STATUS_COLUMNS] for row in with_lag(rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(STATUS_COLUMNS))]
    return ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in table]


@main.command()
@click.option("--config", "config_path", default="cluster.toml", show_default=True, envvar="RAFTCHROMA_CONFIG",
              show_envvar=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@tls_options
def status(config_path: str, as_json: bool, cacert: str | None, cert: str | None, key: str | None) -> None:
    """Show each node: reachable, role, term, leader, commit and applied index, lag behind the
    leader's commit index, the leader's match index for it, snapshot index and log size."""
    config = _load(config_path)
    rows = with_lag(cluster_status(config, client_ssl(config, cacert, cert, key)))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for line in status_table(rows):
        click.echo(line)


# ------------------------------------------------------------------- token


@main.group()
def token() -> None:
    """Client tokens for cluster.toml's [[token]] tables."""


@token.command("hash")
def token_hash() -> None:
    """Read a token from stdin; print its SHA-256, the `sha256` of a [[token]] table."""
    text = sys.stdin.read().strip()
    try:
        check_token_text(text, "the token")
    except ConfigError as exc:
        click.echo(f"raftchroma: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(token_sha256(text).hex())


# ------------------------------------------------------------------- bench


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
def bench(bench_args: tuple[str, ...]) -> None:
    """Benchmark against `chroma run` on this machine: `python -m bench` of the source checkout this
    package was installed from (bench/ and tests/ are not part of the package). Options are
    passed through; `raftchroma bench --help` lists them."""
    checkout = Path(__file__).resolve().parent.parent
    if not ((checkout / "bench" / "__main__.py").is_file() and (checkout / "tests" / "harness.py").is_file()):
        click.echo(f"raftchroma: bench needs a source checkout (with bench/ and tests/) beside the package; "
                   f"{checkout} is not one. Clone the repository and run `python -m bench` there.", err=True)
        sys.exit(EXIT_USAGE)
    sys.path.insert(0, str(checkout))
    from bench.__main__ import main as bench_main

    sys.exit(bench_main(list(bench_args)))


# ---------------------------------------------------------------------- up


def _spawn(config_path: str, node_id: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "raftchroma", "serve", "--config", config_path, "--node", node_id]
    return subprocess.Popen(cmd, start_new_session=True)


def _stop_children(children: dict[str, subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    for child in children.values():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _wait_for_leader(config: ClusterConfig, timeout_s: float, should_stop: Any = lambda: False,
                     running: Any = lambda node_id: True, context: ssl.SSLContext | None = None) -> str | None:
    """The leader once every node still `running` answers and they all name the same one;
    None at the deadline, when `should_stop()`, or when no node is running any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not should_stop():
        if not any(running(n.id) for n in config.nodes):
            return None
        rows = [r for r in cluster_status(config, context) if running(r["id"])]
        leaders = {r.get("leader") for r in rows if r["reachable"]}
        if rows and len(leaders) == 1 and None not in leaders and all(r["reachable"] for r in rows):
            return leaders.pop()
        time.sleep(0.2)
    return None


@main.command()
@click.option("--config", "config_path", default="cluster.toml", show_default=True)
@click.option("--leader-timeout-s", default=60.0, show_default=True)
@tls_options
def up(config_path: str, leader_timeout_s: float, cacert: str | None, cert: str | None, key: str | None) -> None:
    """Start every node of the cluster file and keep them running; Ctrl-C stops them all.

    A node that dies (a crash, a SIGKILL) is started again, after 1 s, then 2, 4... up to 30 s
    if it keeps dying; one that refuses to start (bad config, exit 2; damaged data, exit 3 or 70)
    is not."""
    config = _load(config_path)
    ensure_local_secret(config)
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)  # before any node exists, so none can be left behind
    signal.signal(signal.SIGINT, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for node in config.nodes:
            children[node.id] = _spawn(config_path, node.id)
        leader = _wait_for_leader(config, leader_timeout_s, lambda: stopping,
                                  lambda node_id: children[node_id].poll() is None,
                                  client_ssl(config, cacert, cert, key))
        if stopping:
            return
        if any(child.poll() is None for child in children.values()):
            _print_banner(config, leader)
        _supervise(config_path, children, lambda: stopping)
    finally:
        _stop_children(children)
    refused = [child.returncode for child in children.values() if child.returncode in REFUSED_EXITS]
    if refused:
        sys.exit(max(refused))


def _print_banner(config: ClusterConfig, leader: str | None) -> None:
    for node in config.nodes:
        mark = "  (leader)" if node.id == leader else ""
        click.echo(f"{node.id}  {node.http_url}{mark}")
    if leader is None:
        click.echo("raftchroma: no leader elected yet; see `raftchroma status`", err=True)
    click.echo("cluster is up; Ctrl-C stops it", nl=True)
    sys.stdout.flush()


REFUSED_EXITS = (EXIT_USAGE, EXIT_CORRUPT, EXIT_CORRUPT_LOG)  # restarting cannot help
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_AFTER_S = 60.0  # a node up this long starts again from the shortest backoff


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-code}"


def _supervise(config_path: str, children: dict[str, subprocess.Popen[bytes]],
               should_stop: Any) -> None:
    """Restart dead nodes with backoff until `should_stop()`, or until no node is left to run."""
    failures = {node_id: 0 for node_id in children}
    started_at = {node_id: time.monotonic() for node_id in children}
    restart_at: dict[str, float] = {}
    given_up: set[str] = set()
    while not should_stop() and len(given_up) < len(children):
        now = time.monotonic()
        for node_id, child in children.items():
            code = child.poll()
            if code is None or node_id in given_up:
                continue
            if code in REFUSED_EXITS:
                click.echo(f"raftchroma: node {node_id} refused to start (exit {code}); not restarting it, "
                           "see its log above", err=True)
                given_up.add(node_id)
            elif node_id not in restart_at:
                if now - started_at[node_id] >= STABLE_AFTER_S:
                    failures[node_id] = 0
                delay_s = RESTART_BACKOFF_S[min(failures[node_id], len(RESTART_BACKOFF_S) - 1)]
                failures[node_id] += 1
                restart_at[node_id] = now + delay_s
                click.echo(f"raftchroma: node {node_id} {_exit_text(code)}; starting it again in {delay_s:g} s",
                           err=True)
            elif now >= restart_at[node_id]:
                del restart_at[node_id]
                children[node_id] = _spawn(config_path, node_id)
                started_at[node_id] = now
        time.sleep(0.2)


# ------------------------------------------------------------ backup, restore


EXIT_FAILED = 1  # the server refused or the network failed: retrying may help


def _fail(message: str, code: int) -> None:
    click.echo(f"raftchroma: {message}", err=True)
    sys.exit(code)


def _pick_node_url(config: ClusterConfig) -> str:
    """A reachable follower if there is one (the backup then pauses no leader), else any reachable node."""
    rows = [r for r in cluster_status(config) if r["reachable"]]
    if not rows:
        _fail("no node of the cluster answers; pass --url", EXIT_FAILED)
    followers = [r for r in rows if r.get("role") == "follower"]
    return (followers or rows)[0]["url"]


@main.command()
@click.option("--to", "dest", required=True, type=click.Path(dir_okay=False), help="Archive file to write.")
@click.option("--url", default=None, help="Node to take it from (default: a follower of --config's cluster).")
@click.option("--config", "config_path", default="cluster.toml", show_default=True)
@click.option("--token", envvar="RAFTCHROMA_TOKEN", default=None,
              help="Client token to send (env RAFTCHROMA_TOKEN); needed when the cluster has [[token]] tables.")
@tls_options
def backup(dest: str, url: str | None, config_path: str, token: str | None, cacert: str | None, cert: str | None,
           key: str | None) -> None:
    """Write one consistent, checksummed archive of the whole cluster to FILE.

    It holds every write acknowledged before the command started (it goes through the Raft log
    first); only the answering node's applier pauses, while it copies its store locally."""
    from pathlib import Path

    from raftchroma import backup as backups

    config = _load(config_path) if url is None or Path(config_path).exists() else None
    url = url or _pick_node_url(config)
    if config is not None:
        context = client_ssl(config, cacert, cert, key)
    else:  # --url without a cluster file: TLS only from the options
        context = ssl.create_default_context(cafile=cacert) if cacert or cert else None
        if context is not None and cert is not None:
            context.load_cert_chain(cert, key)
    bar: Any = None

    def on_start(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=total, label="backup", file=sys.stderr)
        bar.__enter__()

    try:
        info = backups.download(url, Path(dest), on_start, lambda n: bar.update(n), token=token,
                                ssl_context=context)
    except backups.DownloadFailed as exc:
        _fail(str(exc), EXIT_FAILED)
    except backups.BackupCorrupt as exc:
        _fail(f"the backup received is damaged, nothing was written: {exc}", EXIT_FAILED)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    meta = info.metadata
    click.echo(f"backup at index {meta['index']} (term {meta['term']}) written to {dest}: "
               f"{Path(dest).stat().st_size} bytes, sha256 {info.sha256}; the applier of {meta['source_node']} "
               f"paused {meta['applier_pause_s']:.3f} s")


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", default="cluster.toml", show_default=True, help="The NEW cluster's file.")
@click.option("--node", "node_ids", multiple=True, help="Restore only this node (repeatable; default: all but `join = true` nodes, which join the restored cluster later).")
@click.option("--force", is_flag=True, help="Replace the raftchroma data already in a node's data_dir.")
def restore(archive: str, config_path: str, node_ids: tuple[str, ...], force: bool) -> None:
    """Lay out ARCHIVE as the data of a new cluster: start its nodes afterwards.

    The checksum is verified first; nothing is changed if it fails or a data_dir is not empty."""
    from pathlib import Path

    from raftchroma import backup as backups

    config = _load(config_path)
    try:
        done = backups.restore(Path(archive), config, node_ids, force)
    except (backups.BackupCorrupt, backups.RestoreRefused, ConfigError) as exc:
        _fail(f"restore refused, nothing was changed: {exc}", EXIT_USAGE)
    meta = done.archive.metadata
    if meta.get("settings_fingerprint") != config.settings_fingerprint:
        click.echo("raftchroma: note: the backup was taken with other cluster-wide settings ([cluster] "
                   "max_batch_size, max_body_bytes...) than this cluster file's", err=True)
    for node_id, path in done.snapshots.items():
        click.echo(f"{node_id}: {path}")
    click.echo(f"restored index {meta['index']} (term {meta['term']}, sha256 {done.archive.sha256}) for "
               f"{len(done.snapshots)} node(s); start them, e.g. raftchroma up --config {config_path}")


# ------------------------------------------------------------ export, import


def _records_bar(label: str) -> Any:
    """on_start/on_progress callbacks drawing a progress bar over records, and a closer."""
    state: dict[str, Any] = {}

    def on_start(total: int) -> None:
        state["bar"] = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
        state["bar"].__enter__()

    def close() -> None:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)
    return on_start, lambda n: state["bar"].update(n), close


@main.command(name="export")
@click.option("--url", required=True, help="Any Chroma server: a raftchroma node or `chroma run`.")
@click.option("--collection", "name", required=True)
@click.option("--tenant", default="default_tenant", show_default=True)
@click.option("--database", default="default_database", show_default=True)
@click.option("--to", "dest", required=True, type=click.Path(dir_okay=False), help="File to write (JSON Lines).")
@click.option("--token", envvar="RAFTCHROMA_TOKEN", default=None,
              help="Client token to send (env RAFTCHROMA_TOKEN); needed when the cluster has [[token]] tables.")
def export_command(url: str, name: str, tenant: str, database: str, dest: str, token: str | None) -> None:
    """Write one collection (records, metadata, configuration) to a file; see docs/OPERATIONS.md."""
    from pathlib import Path

    from raftchroma import transfer

    on_start, on_progress, close = _records_bar("export")
    try:
        client = transfer.connect(url, tenant, database, token)
        summary = transfer.export_collection(client, name, Path(dest), tenant, database, on_start, on_progress)
    except transfer.TransferError as exc:
        _fail(str(exc), EXIT_USAGE)
    except Exception as exc:  # the server's or the network's, as chromadb's client raises them
        _fail(f"export failed: {exc}", EXIT_FAILED)
    finally:
        close()
    click.echo(f"exported {summary.records} records of {summary.name!r} to {dest}")


@main.command(name="import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", required=True, help="Any Chroma server: a raftchroma node or `chroma run`.")
@click.option("--collection", "new_name", default=None, help="Name to create (default: the exported name).")
@click.option("--tenant", default="default_tenant", show_default=True)
@click.option("--database", default="default_database", show_default=True)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Records per request (never above the server's max batch size).")
@click.option("--token", envvar="RAFTCHROMA_TOKEN", default=None,
              help="Client token to send (env RAFTCHROMA_TOKEN); needed when the cluster has [[token]] tables.")
def import_command(source: str, url: str, new_name: str | None, tenant: str, database: str, batch_size: int,
                   token: str | None) -> None:
    """Create a collection from an export file and add its records."""
    from pathlib import Path

    from raftchroma import transfer

    on_start, on_progress, close = _records_bar("import")
    try:
        client = transfer.connect(url, tenant, database, token)
        summary = transfer.import_collection(client, Path(source), new_name, batch_size, on_start, on_progress)
    except transfer.TransferError as exc:
        _fail(str(exc), EXIT_USAGE)
    except Exception as exc:
        _fail(f"import failed: {exc}", EXIT_FAILED)
    finally:
        close()
    click.echo(f"imported {summary.records} records into {summary.name!r}")


# ------------------------------------------------------------------ cluster


@main.group()
def cluster() -> None:
    """Change the running cluster's membership and who leads it (against any node: the leader is found)."""


def _admin_options(command: Any) -> Any:
    for option in reversed((
        click.option("--config", "config_path", default="cluster.toml", show_default=True, envvar="RAFTCHROMA_CONFIG",
                     show_envvar=True),
        click.option("--token", envvar="RAFTCHROMA_TOKEN", default=None,
                     help="A cluster admin's client token (env RAFTCHROMA_TOKEN); needed when the cluster has "
                          "[[token]] tables."),
    )):
        command = option(command)
    return tls_options(command)


class _Refused(Exception):
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.code, self.body = code, body


NO_LEADER = "no node answers as the leader now; see `raftchroma status`"


def _leader_or_none(config: ClusterConfig, context: ssl.SSLContext | None) -> dict[str, Any] | None:
    """The status row of the one node that answers as leader; None if none (or several) do."""
    leaders = [r for r in cluster_status(config, context) if r.get("role") == "leader"]
    return leaders[0] if len(leaders) == 1 else None


def _leader_row(config: ClusterConfig, context: ssl.SSLContext | None) -> dict[str, Any]:
    leader = _leader_or_none(config, context)
    if leader is None:
        _fail(NO_LEADER, EXIT_FAILED)
    return leader


def _call(url: str, method: str, path: str, body: Any, token: str | None, context: ssl.SSLContext | None,
          timeout_s: float = 30.0) -> dict[str, Any]:
    """One admin request; _Refused for an HTTP error with a JSON body, exit on no answer."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            raise _Refused(exc.code, json.loads(text)) from None
        except ValueError:
            raise _Refused(exc.code, {"error": "HTTPError", "message": text}) from None
    except (urllib.error.URLError, OSError) as exc:
        _fail(f"{url} did not answer: {getattr(exc, 'reason', exc)}", EXIT_FAILED)
        raise  # unreachable: _fail exits


def _change_membership(config: ClusterConfig, context: ssl.SSLContext | None, token: str | None, method: str,
                       path: str, body: Any = None) -> dict[str, Any]:
    """Send a membership change to the leader (found again once if leadership moved meanwhile)."""
    for attempt in range(2):
        leader = _leader_row(config, context)
        try:
            return _call(leader["url"], method, path, body, token, context)
        except _Refused as exc:
            if exc.body.get("error") == "NotLeader" and attempt == 0:
                continue
            _fail(_refusal(leader["id"], exc), EXIT_FAILED)
    raise AssertionError("unreachable")


def _refusal(node_id: str, exc: _Refused) -> str:
    """A refusal is definite; a 504 is not (the change may still commit: look before retrying)."""
    verb = "could not confirm the change (it may still commit; see `raftchroma status`)" if exc.code == 504 \
        else "refused"
    return f"{node_id} {verb}: {exc.code} {exc.body.get('error')}: {exc.body.get('message')}"


def _describe_members(members: list[dict[str, Any]]) -> str:
    return ", ".join(m["id"] + ("" if m["voter"] else " (non-voter)") for m in members)


@cluster.command(name="add")
@click.argument("node_id")
@click.option("--raft", "raft_address", required=True, help="The new node's advertised Raft address, host:port.")
@click.option("--http", "http_address", required=True, help="The new node's advertised API address, host:port.")
@click.option("--promote", is_flag=True, help="Then wait until it has caught up and make it a voter.")
@click.option("--wait-s", default=600.0, show_default=True, type=click.FloatRange(min=0.0),
              help="With --promote: how long to wait for it to catch up.")
@_admin_options
def cluster_add(node_id: str, raft_address: str, http_address: str, promote: bool, wait_s: float, config_path: str,
                token: str | None, cacert: str | None, cert: str | None, key: str | None) -> None:
    """Add a node (started with `raftchroma serve --join`) as a non-voting member: it replicates the
    log (a snapshot first when it is far behind) and serves reads, but does not vote until promoted."""
    config = _load(config_path)
    context = client_ssl(config, cacert, cert, key)
    _refuse_a_node_with_a_past(config, context, node_id, http_address)
    answer = _change_membership(config, context, token, "POST", "/raftchroma/members",
                                {"id": node_id, "raft": raft_address, "http": http_address})
    click.echo(f"added {node_id} as a non-voter at index {answer['index']}; members: {_describe_members(answer['members'])}")
    if promote:
        _promote_when_caught_up(config, context, token, node_id, wait_s)
    else:
        click.echo(f"promote it once it has caught up: raftchroma cluster promote {node_id}")


def _refuse_a_node_with_a_past(config: ClusterConfig, context: ssl.SSLContext | None, node_id: str,
                               http_address: str) -> None:
    """A node whose term is above the leader's (a removed node that kept campaigning, or one started
    outside the cluster) would ignore the leader's appends for good: like etcd, re-add only from
    an empty data dir."""
    scheme = "https" if config.tls is not None else "http"
    joiner, leader = fetch_status(f"{scheme}://{http_address}", context=context), _leader_row(config, context)
    if joiner is not None and joiner.get("term", 0) > leader.get("term", 0):
        _fail(f"{node_id} is at term {joiner['term']}, above the leader's {leader['term']}: it has data from an earlier "
              f"membership (removed, or started outside this cluster) and would never follow the leader. Stop it, "
              f"empty its data_dir, start it with --join, then add it.", EXIT_FAILED)


@cluster.command(name="promote")
@click.argument("node_id")
@click.option("--wait-s", default=600.0, show_default=True, type=click.FloatRange(min=0.0),
              help="How long to wait for it to catch up (the leader refuses to promote a node that is behind).")
@_admin_options
def cluster_promote(node_id: str, wait_s: float, config_path: str, token: str | None, cacert: str | None,
                    cert: str | None, key: str | None) -> None:
    """Make a caught-up non-voter a voter."""
    config = _load(config_path)
    _promote_when_caught_up(config, client_ssl(config, cacert, cert, key), token, node_id, wait_s)


PROMOTE_POLL_S = 0.5


def _promote_when_caught_up(config: ClusterConfig, context: ssl.SSLContext | None, token: str | None, node_id: str,
                            wait_s: float) -> None:
    """Ask the leader to promote; while it answers that the node is behind (or not yet connected),
    show how far it is and ask again, until `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        leader = _leader_or_none(config, context)
        if leader is None:  # an election in progress: wait for its outcome like for a catch-up
            if time.monotonic() >= deadline:
                _fail(NO_LEADER, EXIT_FAILED)
            click.echo("waiting: no leader right now", err=True)
            time.sleep(PROMOTE_POLL_S)  # a CLI waiting on an operator's cluster, not synchronisation in a test
            continue
        try:
            answer = _call(leader["url"], "POST", f"/raftchroma/members/{node_id}/promote", {}, token, context)
            break
        except _Refused as exc:
            if not _worth_waiting(exc.body) or time.monotonic() >= deadline:
                _fail(_refusal(leader["id"], exc), EXIT_FAILED)
            click.echo(f"waiting: {exc.body.get('message', '')}", err=True)
            time.sleep(PROMOTE_POLL_S)
    click.echo(f"promoted {node_id} at index {answer['index']}; members: {_describe_members(answer['members'])}")


def _worth_waiting(body: dict[str, Any]) -> bool:
    """A refusal that time may lift: the node is still catching up or connecting, the previous
    change is committing, or leadership moved."""
    message = str(body.get("message", ""))
    return body.get("error") == "NotLeader" or any(
        reason in message for reason in ("is behind", "not connected", "not yet committed", "retry"))


@cluster.command(name="remove")
@click.argument("node_id")
@_admin_options
def cluster_remove(node_id: str, config_path: str, token: str | None, cacert: str | None, cert: str | None,
                   key: str | None) -> None:
    """Remove a member (a dead one too). If it leads, leadership is handed to another voter first.
    Stop the removed node's process afterwards: it is no longer sent anything."""
    config = _load(config_path)
    context = client_ssl(config, cacert, cert, key)
    leader = _leader_row(config, context)
    if leader["id"] == node_id:
        try:
            moved = _call(leader["url"], "POST", "/raftchroma/transfer-leader", {}, token, context)
        except _Refused as exc:
            _fail(f"{node_id} leads and did not hand over: {exc.code} {exc.body.get('message')}", EXIT_FAILED)
        click.echo(f"leader: {node_id} -> {moved['leader']}")
    answer = _change_membership(config, context, token, "DELETE", f"/raftchroma/members/{node_id}")
    click.echo(f"removed {node_id} at index {answer['index']}; members: {_describe_members(answer['members'])}")


@cluster.command(name="transfer-leader")
@click.option("--to", "target", default=None, help="Node id to lead (default: the most caught-up follower).")
@_admin_options
def transfer_leader(target: str | None, config_path: str, token: str | None, cacert: str | None, cert: str | None,
                    key: str | None) -> None:
    """Hand leadership to another node (Raft's TimeoutNow), e.g. before stopping the leader's machine.
    The target must be connected and hold the leader's whole log."""
    config = _load(config_path)
    context = client_ssl(config, cacert, cert, key)
    before = _leader_row(config, context)
    try:
        answer = _call(before["url"], "POST", "/raftchroma/transfer-leader", {"to": target} if target else {}, token,
                       context)
    except _Refused as exc:
        _fail(f"{before['id']} refused: {exc.code} {json.dumps(exc.body)}", EXIT_FAILED)
    click.echo(f"leader: {before['id']} -> {answer['leader']}")
