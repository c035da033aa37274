"""Cluster configuration: parse and validate `cluster.toml` once, into frozen objects.

Owns: the file format, its defaults and its validation. Everything else receives a
`ClusterConfig` (and the id of the node it runs) explicitly; nothing reads the file or
the environment after start-up, except the Raft password, which may come from
`RAFTCHROMA_PASSWORD` so that it need not be written into the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

READ_CONSISTENCIES = ("linearizable", "stale")
PASSWORD_ENV = "RAFTCHROMA_PASSWORD"


class ConfigError(ValueError):
    """The configuration is unusable; the message is one line meant for a person."""


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    id: str
    raft_host: str
    raft_port: int
    http_host: str
    http_port: int
    data_dir: Path
    raft_listen: str | None = None  # where the Raft port binds ("0.0.0.0:7000"); None: the advertised `raft`
    http_listen: str | None = None  # where the API binds; None: the advertised `http`

    @property
    def raft_address(self) -> str:
        """The advertised Raft address: what peers dial, and how they identify this node."""
        return f"{self.raft_host}:{self.raft_port}"

    @property
    def raft_bind_address(self) -> str:
        return self.raft_listen or self.raft_address

    @property
    def http_bind(self) -> tuple[str, int]:
        """(host, port) the API listens on."""
        return _address(self.http_listen, "http_listen") if self.http_listen else (self.http_host, self.http_port)

    @property
    def listen_url(self) -> str:
        """The API as reached from this node's own machine (health checks)."""
        host, port = self.http_bind
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        return f"http://{host}:{self.http_port}"


@dataclasses.dataclass(frozen=True)
class RaftTuning:
    """PySyncObj timing; defaults are chosen so that Chroma work cannot starve heartbeats."""

    election_timeout_min_s: float = 2.0
    election_timeout_max_s: float = 4.0
    heartbeat_period_s: float = 0.1
    connection_timeout_s: float = 5.0
    max_entry_bytes: int = 48 * 1024 * 1024
    snapshot_min_entries: int = 10_000  # compact the log once it holds this many entries
    snapshot_max_log_bytes: int = 64 * 1024 * 1024  # ...or once entries since the last snapshot hold this much
    snapshot_interval_s: float = 86_400.0  # ...or once this long has passed since the last snapshot
    snapshot_chunk_bytes: int = 1024 * 1024  # snapshot transfer message size


@dataclasses.dataclass(frozen=True)
class FaultKnobs:
    """TEST ONLY: knobs that reproduce slow hardware, or switch a PySyncObj fix off to show the
    hazard it closes. `raftchroma serve` accepts them only together with `--fault-injection`."""

    snapshot_chunk_delay_s: float = 0.0  # the sender sleeps before each snapshot chunk (a slow link)
    snapshot_keepalive: bool = True  # False: received chunks get no keepalive (PySyncObj's behaviour)
    snapshot_write_delay_s: float = 0.0  # writing a snapshot takes this much longer (a large store)
    snapshot_in_tick_thread: bool = False  # True: the tick thread waits for the snapshot (PySyncObj's behaviour)

    @property
    def any(self) -> bool:
        return self != FaultKnobs()


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    nodes: tuple[NodeConfig, ...]
    read_consistency: str = "linearizable"
    allow_reset: bool = False
    password: str | None = None
    write_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    max_body_bytes: int = 40 * 1024 * 1024
    max_batch_size: int = 5461
    raft: RaftTuning = RaftTuning()
    path: Path | None = None

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"node {node_id!r} is not in the cluster (known: {known})")

    def peers_of(self, node_id: str) -> tuple[NodeConfig, ...]:
        return tuple(n for n in self.nodes if n.id != node_id)

    def cluster_settings(self) -> dict[str, Any]:
        """The settings every member must share: what a node accepts into the log and answers
        the same way whichever node a client asks. Timeouts and Raft timing may differ per node."""
        return {"allow_reset": self.allow_reset, "read_consistency": self.read_consistency,
                "max_body_bytes": self.max_body_bytes, "max_batch_size": self.max_batch_size,
                "max_entry_bytes": self.raft.max_entry_bytes}

    @property
    def settings_fingerprint(self) -> str:
        """A short hash of `cluster_settings()`; peers whose fingerprints differ refuse each other."""
        canonical = json.dumps(self.cluster_settings(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


_CLUSTER_KEYS = {
    "read_consistency", "allow_reset", "password", "write_timeout_s", "read_timeout_s",
    "max_body_bytes", "max_batch_size",
}
_RAFT_KEYS = {f.name for f in dataclasses.fields(RaftTuning)}
_NODE_KEYS = {"id", "raft", "http", "data_dir"}
_NODE_OPTIONAL_KEYS = {"raft_listen", "http_listen"}


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> ClusterConfig:
    """Read and validate `path`; raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    return parse_config(raw, base_dir=path.resolve().parent, environ=env, path=path)


def parse_config(raw: dict[str, Any], base_dir: Path, environ: Any, path: Path | None = None) -> ClusterConfig:
    _reject_unknown(raw, {"cluster", "raft", "node"}, "top level")
    cluster = _table(raw.get("cluster", {}), "[cluster]")
    _reject_unknown(cluster, _CLUSTER_KEYS, "[cluster]")
    raft_raw = _table(raw.get("raft", {}), "[raft]")
    _reject_unknown(raft_raw, _RAFT_KEYS, "[raft]")
    nodes = _parse_nodes(raw.get("node"), base_dir)
    consistency = cluster.get("read_consistency", "linearizable")
    if consistency not in READ_CONSISTENCIES:
        raise ConfigError(f"[cluster] read_consistency must be one of {READ_CONSISTENCIES}, got {consistency!r}")
    password = environ.get(PASSWORD_ENV) or cluster.get("password")
    config = ClusterConfig(
        nodes=nodes,
        read_consistency=consistency,
        allow_reset=_typed(cluster, "allow_reset", bool, False, "[cluster]"),
        password=password if password else None,
        write_timeout_s=_positive(cluster, "write_timeout_s", 10.0, "[cluster]"),
        read_timeout_s=_positive(cluster, "read_timeout_s", 5.0, "[cluster]"),
        max_body_bytes=int(_positive(cluster, "max_body_bytes", 40 * 1024 * 1024, "[cluster]")),
        max_batch_size=int(_positive(cluster, "max_batch_size", 5461, "[cluster]")),
        raft=_parse_raft(raft_raw),
        path=path,
    )
    return config


def _parse_raft(raw: dict[str, Any]) -> RaftTuning:
    defaults = RaftTuning()
    values = {f.name: _positive(raw, f.name, getattr(defaults, f.name), "[raft]") for f in dataclasses.fields(RaftTuning)}
    for key in ("max_entry_bytes", "snapshot_min_entries", "snapshot_max_log_bytes", "snapshot_chunk_bytes"):
        values[key] = int(values[key])
    tuning = RaftTuning(**values)
    if tuning.election_timeout_min_s >= tuning.election_timeout_max_s:
        raise ConfigError("[raft] election_timeout_min_s must be below election_timeout_max_s")
    if tuning.heartbeat_period_s * 3 > tuning.election_timeout_min_s:
        raise ConfigError("[raft] heartbeat_period_s must be at most a third of election_timeout_min_s")
    return tuning


def _parse_nodes(raw: Any, base_dir: Path) -> tuple[NodeConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("at least one [[node]] table is required")
    nodes = tuple(_parse_node(entry, i, base_dir) for i, entry in enumerate(raw))
    _reject_duplicates([n.id for n in nodes], "node id")
    _reject_duplicates([(n.raft_host, n.raft_port) for n in nodes], "raft address")
    _reject_duplicates([(n.http_host, n.http_port) for n in nodes], "http address")
    _reject_duplicates([str(n.data_dir) for n in nodes], "data_dir")
    return nodes


def _parse_node(raw: Any, position: int, base_dir: Path) -> NodeConfig:
    where = f"[[node]] #{position + 1}"
    table = _table(raw, where)
    _reject_unknown(table, _NODE_KEYS | _NODE_OPTIONAL_KEYS, where)
    for key in sorted(_NODE_KEYS):
        if key not in table:
            raise ConfigError(f"{where}: missing key {key!r}")
    node_id = _typed(table, "id", str, None, where)
    if not node_id or not node_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: id must be a non-empty name of letters, digits, '-' or '_'")
    raft_host, raft_port = _address(table["raft"], f"{where} raft")
    http_host, http_port = _address(table["http"], f"{where} http")
    listen = {key: _listen(table.get(key), f"{where} {key}") for key in sorted(_NODE_OPTIONAL_KEYS)}
    data_dir = Path(_typed(table, "data_dir", str, None, where))
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    return NodeConfig(node_id, raft_host, raft_port, http_host, http_port, data_dir, **listen)


def _listen(value: Any, where: str) -> str | None:
    """A bind address, checked like an advertised one and normalised to 'host:port'."""
    if value is None:
        return None
    host, port = _address(value, where)
    return f"{host}:{port}"


def with_node_overrides(config: ClusterConfig, node_id: str, raft_listen: str | None = None,
                        http_listen: str | None = None, data_dir: str | None = None) -> ClusterConfig:
    """`config` with node `node_id`'s bind addresses or data dir replaced (from `raftchroma serve`'s
    options or their environment variables, e.g. in a container). The advertised addresses stay."""
    node = config.node(node_id)
    changes: dict[str, Any] = {}
    if raft_listen:
        changes["raft_listen"] = _listen(raft_listen, "--raft-listen")
    if http_listen:
        changes["http_listen"] = _listen(http_listen, "--http-listen")
    if data_dir:
        path = Path(data_dir)
        if not path.is_absolute():
            raise ConfigError(f"--data-dir must be an absolute path, got {data_dir!r}")
        changes["data_dir"] = path
    if not changes:
        return config
    replaced = dataclasses.replace(node, **changes)
    return dataclasses.replace(config, nodes=tuple(replaced if n.id == node_id else n for n in config.nodes))


def _address(value: Any, where: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{where}: expected 'host:port', got {value!r}")
    host, _, port_text = value.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: expected 'host:port' with a port in 1..65535, got {value!r}")
    return host, int(port_text)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _reject_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _reject_duplicates(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            shown = ":".join(map(str, value)) if isinstance(value, tuple) else value
            raise ConfigError(f"duplicate {what}: {shown}")
        seen.add(value)


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def _positive(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)
