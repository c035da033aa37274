"""Cluster configuration: parse and validate `cluster.toml` once, into frozen objects.

Owns: the file format, its defaults and its validation. Everything else receives a
`ClusterConfig` (and the id of the node it runs) explicitly; nothing reads the file or
the environment after start-up, except the cluster secret, which may come from
`RAFTCHROMA_SECRET`, from a file named by `secret_file`, or from `raft-secret` in the node's data
directory (written by `raftchroma up`), so that it need not be written into the file. A client
token given as `env = "NAME"` is read from the environment here, once, and kept only as its SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import string
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

READ_CONSISTENCIES = ("linearizable", "stale")
CHROMA_MAX_BATCH_SIZE = 5461  # embedded Chroma 1.5.9 refuses more records in one add/upsert/update
SECRET_ENV = "RAFTCHROMA_SECRET"
LEGACY_SECRET_ENV = "RAFTCHROMA_PASSWORD"  # the name before the secret was mandatory; still read
SECRET_FILE_NAME = "raft-secret"  # in a node's data directory: `raftchroma up` creates it
LOOPBACK_HOSTS = ("localhost", "::1")
TOKEN_ACCESS = ("read-write", "read-only")
ALL = "*"  # a token's tenant or database that stands for every one
# What Chroma's Python client accepts in a token (chromadb/auth/token_authn: _check_token).
TOKEN_CHARS = frozenset(string.digits + string.ascii_letters + string.punctuation)


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
    https: bool = False  # the client API is served over TLS ([tls] in cluster.toml)
    raft_listen: str | None = None  # where the Raft port binds ("0.0.0.0:7000"); None: the advertised `raft`
    http_listen: str | None = None  # where the API binds; None: the advertised `http`
    voter: bool = True  # false: a non-voting read replica from the start (bootstrap only; see membership.py)
    join: bool = False  # true: not in the bootstrap membership; joins a running cluster when added (`cluster add`)

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
        scheme = "https" if self.https else "http"
        return f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        return f"{'https' if self.https else 'http'}://{host}:{self.http_port}"


@dataclasses.dataclass(frozen=True)
class TokenConfig:
    """One client token (`[[token]]`): who it is and what it may touch. Only the SHA-256 of the
    token is kept, never the token."""

    user_id: str
    sha256: bytes  # digest of the token's UTF-8 bytes
    tenant: str  # a tenant name, or "*" for every tenant
    databases: tuple[str, ...]  # database names, or ("*",) for every database of the tenant
    read_only: bool = False
    admin: bool = False  # reset, tenants, databases, /raftchroma/test/*

    def __repr__(self) -> str:  # never print the digest: it identifies the token
        return (f"TokenConfig(user_id={self.user_id!r}, tenant={self.tenant!r}, databases={self.databases!r}, "
                f"read_only={self.read_only}, admin={self.admin})")


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """`[tls]`: the client API over HTTPS (TLS 1.2 or later)."""

    cert_file: Path  # this node's certificate chain (PEM)
    key_file: Path  # its private key (PEM)
    client_ca_file: Path | None = None  # when set, clients must present a certificate signed by it
    ca_file: Path | None = None  # what raftchroma's own clients (status, up) verify nodes with


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """`[http]`: per-node bounds on how requests come in (none of them changes what is replicated)."""

    header_read_timeout_s: float = 10.0  # from a request's first byte until its headers are complete
    body_read_timeout_s: float = 60.0  # from the handler's start until the whole body has arrived
    max_inflight_body_bytes: int = 160 * 1024 * 1024  # request bodies held at once, all requests together
    json_thread_min_bytes: int = 256 * 1024  # bodies this large are parsed in a worker thread
    keepalive_timeout_s: float = 75.0  # an idle keep-alive connection is closed after this long


@dataclasses.dataclass(frozen=True)
class RaftTuning:
    """PySyncObj timing. Raft runs in its own process (raft_process.py), so Chroma's GIL-bound work
    never delays a heartbeat, and election timeouts are in etcd's range: a dead leader is replaced
    within about a second (they were 2-4 s while Raft shared the GIL with Chroma)."""

    election_timeout_min_s: float = 0.5
    election_timeout_max_s: float = 1.0
    heartbeat_period_s: float = 0.1
    connection_timeout_s: float = 5.0
    max_entry_bytes: int = 48 * 1024 * 1024
    snapshot_min_entries: int = 10_000  # compact the log once it holds this many entries
    snapshot_max_log_bytes: int = 64 * 1024 * 1024  # ...or once entries since the last snapshot hold this much
    snapshot_interval_s: float = 86_400.0  # ...or once this long has passed since the last snapshot
    snapshot_chunk_bytes: int = 1024 * 1024  # snapshot transfer message size
    # The node's HTTP and Chroma work runs this many nice levels below its Raft process, so a CPU
    # busy with Chroma still runs heartbeats and votes first (0: the same priority).
    store_niceness: int = 5


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
    secret: str | None = None  # the cluster secret that authenticates Raft traffic (raftchroma/wire.py)
    write_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    max_body_bytes: int = 40 * 1024 * 1024
    max_batch_size: int = 5461
    max_query_rows: int = 100_000  # n_results x query embeddings a query may ask for
    raft: RaftTuning = RaftTuning()
    path: Path | None = None
    tokens: tuple[TokenConfig, ...] = ()  # none: the client API is open to anyone who can reach it
    tls: TlsConfig | None = None
    http: HttpLimits = HttpLimits()

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"node {node_id!r} is not in the cluster (known: {known})")

    @property
    def raft_is_loopback_only(self) -> bool:
        """True when every Raft address, advertised and bound, is on loopback: the one case a
        missing secret is allowed."""
        return all(is_loopback(n.raft_host) and is_loopback(n.raft_bind_address.rpartition(":")[0])
                   for n in self.nodes)

    def peers_of(self, node_id: str) -> tuple[NodeConfig, ...]:
        return tuple(n for n in self.nodes if n.id != node_id)

    def cluster_settings(self) -> dict[str, Any]:
        """The settings every member must share: what a node accepts into the log and answers
        the same way whichever node a client asks. Timeouts and Raft timing may differ per node."""
        return {"allow_reset": self.allow_reset, "read_consistency": self.read_consistency,
                "max_body_bytes": self.max_body_bytes, "max_batch_size": self.max_batch_size,
                "max_entry_bytes": self.raft.max_entry_bytes, "max_query_rows": self.max_query_rows}

    @property
    def settings_fingerprint(self) -> str:
        """A short hash of `cluster_settings()`; peers whose fingerprints differ refuse each other."""
        canonical = json.dumps(self.cluster_settings(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


_CLUSTER_KEYS = {
    "read_consistency", "allow_reset", "secret", "secret_file", "password", "write_timeout_s", "read_timeout_s",
    "max_body_bytes", "max_batch_size", "max_query_rows",
}
_RAFT_KEYS = {f.name for f in dataclasses.fields(RaftTuning)}
_HTTP_KEYS = {f.name for f in dataclasses.fields(HttpLimits)}
_NODE_KEYS = {"id", "raft", "http", "data_dir"}
_TOKEN_KEYS = {"user_id", "sha256", "env", "tenant", "databases", "access", "admin"}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "ca_file"}
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
    _reject_unknown(raw, {"cluster", "raft", "node", "http", "tls", "token"}, "top level")
    cluster = _table(raw.get("cluster", {}), "[cluster]")
    _reject_unknown(cluster, _CLUSTER_KEYS, "[cluster]")
    raft_raw = _table(raw.get("raft", {}), "[raft]")
    _reject_unknown(raft_raw, _RAFT_KEYS, "[raft]")
    tls = _parse_tls(raw.get("tls"), base_dir)
    nodes = _parse_nodes(raw.get("node"), base_dir, https=tls is not None)
    consistency = cluster.get("read_consistency", "linearizable")
    if consistency not in READ_CONSISTENCIES:
        raise ConfigError(f"[cluster] read_consistency must be one of {READ_CONSISTENCIES}, got {consistency!r}")
    secret = _secret(cluster, environ, base_dir)
    config = ClusterConfig(
        nodes=nodes,
        read_consistency=consistency,
        allow_reset=_typed(cluster, "allow_reset", bool, False, "[cluster]"),
        secret=secret,
        write_timeout_s=_positive(cluster, "write_timeout_s", 10.0, "[cluster]"),
        read_timeout_s=_positive(cluster, "read_timeout_s", 5.0, "[cluster]"),
        max_body_bytes=int(_positive(cluster, "max_body_bytes", 40 * 1024 * 1024, "[cluster]")),
        max_batch_size=int(_positive(cluster, "max_batch_size", 5461, "[cluster]")),
        max_query_rows=_count(cluster, "max_query_rows", 100_000, "[cluster]"),
        raft=_parse_raft(raft_raw),
        path=path,
        tokens=_parse_tokens(raw.get("token", []), environ),
        tls=tls,
        http=_parse_http(_table(raw.get("http", {}), "[http]")),
    )
    if config.max_batch_size > CHROMA_MAX_BATCH_SIZE:
        raise ConfigError(f"[cluster] max_batch_size must be at most {CHROMA_MAX_BATCH_SIZE}, the most records "
                          "embedded Chroma takes in one call")
    if config.http.max_inflight_body_bytes < config.max_body_bytes:
        raise ConfigError("[http] max_inflight_body_bytes must be at least [cluster] max_body_bytes "
                          f"({config.max_body_bytes}), or no request of the largest size could ever be read")
    return config


def _secret(cluster: dict[str, Any], environ: Any, base_dir: Path) -> str | None:
    """The cluster secret: RAFTCHROMA_SECRET, else [cluster] secret (or its old name, password),
    else the file [cluster] secret_file names; None when none is set (see with_data_dir_secret)."""
    for value in (environ.get(SECRET_ENV), environ.get(LEGACY_SECRET_ENV),
                  _typed(cluster, "secret", str, None, "[cluster]"), _typed(cluster, "password", str, None, "[cluster]")):
        if value:
            return value
    secret_file = _typed(cluster, "secret_file", str, None, "[cluster]")
    if secret_file:
        path = Path(secret_file) if Path(secret_file).is_absolute() else base_dir / secret_file
        return read_secret_file(path)
    return None


def read_secret_file(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster secret file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"the cluster secret file {path} is empty")
    return value


def with_data_dir_secret(config: ClusterConfig, node: NodeConfig) -> ClusterConfig:
    """`config`, with the secret from `<data_dir>/raft-secret` when none is configured."""
    path = node.data_dir / SECRET_FILE_NAME
    if config.secret is not None or not path.exists():
        return config
    return dataclasses.replace(config, secret=read_secret_file(path))


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (a name other than localhost may resolve beyond it)."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_http(raw: dict[str, Any]) -> HttpLimits:
    _reject_unknown(raw, _HTTP_KEYS, "[http]")
    defaults = HttpLimits()
    values = {f.name: _positive(raw, f.name, getattr(defaults, f.name), "[http]") for f in dataclasses.fields(HttpLimits)}
    for key in ("max_inflight_body_bytes", "json_thread_min_bytes"):
        values[key] = _count(raw, key, getattr(defaults, key), "[http]")
    return HttpLimits(**values)


def _parse_tls(raw: Any, base_dir: Path) -> TlsConfig | None:
    if raw is None:
        return None
    table = _table(raw, "[tls]")
    _reject_unknown(table, _TLS_KEYS, "[tls]")
    for key in ("cert_file", "key_file"):
        if key not in table:
            raise ConfigError(f"[tls]: missing key {key!r} (the node's certificate and private key, PEM)")
    files: dict[str, Path | None] = {}
    for key in sorted(_TLS_KEYS):
        if key not in table:
            files[key] = None
            continue
        value = Path(_typed(table, key, str, None, "[tls]"))
        value = value if value.is_absolute() else base_dir / value
        if not value.is_file():
            raise ConfigError(f"[tls] {key}: no such file: {value}")
        files[key] = value
    return TlsConfig(**files)  # type: ignore[arg-type]


def _parse_tokens(raw: Any, environ: Any) -> tuple[TokenConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("token must be written as [[token]] tables")
    tokens = tuple(_parse_token(entry, i, environ) for i, entry in enumerate(raw))
    seen: set[bytes] = set()
    for token in tokens:
        if token.sha256 in seen:
            raise ConfigError(f"[[token]] user_id={token.user_id!r}: the same token is configured twice")
        seen.add(token.sha256)
    return tokens


def _parse_token(raw: Any, position: int, environ: Any) -> TokenConfig:
    where = f"[[token]] #{position + 1}"
    table = _table(raw, where)
    _reject_unknown(table, _TOKEN_KEYS, where)
    user_id = _typed(table, "user_id", str, None, where)
    if not user_id:
        raise ConfigError(f"{where}: user_id is required (a non-empty string)")
    where = f"[[token]] user_id={user_id!r}"
    tenant = _typed(table, "tenant", str, None, where)
    if not tenant:
        raise ConfigError(f'{where}: tenant is required (a tenant name, or "*" for every tenant)')
    databases = table.get("databases")
    if not isinstance(databases, list) or not databases or not all(isinstance(d, str) and d for d in databases):
        raise ConfigError(f'{where}: databases must be a non-empty list of names, or ["*"]')
    if ALL in databases and len(databases) > 1:
        raise ConfigError(f'{where}: databases is either ["*"] or a list of names, not both')
    access = table.get("access", "read-write")
    if access not in TOKEN_ACCESS:
        raise ConfigError(f"{where}: access must be one of {TOKEN_ACCESS}, got {access!r}")
    admin = _typed(table, "admin", bool, False, where)
    if admin and access != "read-write":
        raise ConfigError(f'{where}: an admin token must have access = "read-write"')
    return TokenConfig(user_id=user_id, sha256=_token_digest(table, where, environ), tenant=tenant,
                       databases=tuple(dict.fromkeys(databases)), read_only=access == "read-only", admin=admin)


def _token_digest(table: dict[str, Any], where: str, environ: Any) -> bytes:
    """The SHA-256 the token is known by: written as `sha256`, or computed from `env`'s token."""
    if ("sha256" in table) == ("env" in table):
        raise ConfigError(f"{where}: give exactly one of sha256 (the token's hash, see `raftchroma token hash`) or env")
    if "sha256" in table:
        digest = _typed(table, "sha256", str, None, where).strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{where}: sha256 must be 64 hex digits (see `raftchroma token hash`)")
        return bytes.fromhex(digest)
    name = _typed(table, "env", str, None, where)
    token = environ.get(name) if name else None
    if not token:
        raise ConfigError(f"{where}: environment variable {name!r} (env) is not set or empty")
    check_token_text(token, f"{where}: the token in ${name}")
    return token_sha256(token)


def token_sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_token_text(token: str, what: str) -> None:
    """Chroma's clients send only ASCII letters, digits and punctuation; anything else is a mistake."""
    if not token or not set(token) <= TOKEN_CHARS:
        raise ConfigError(f"{what} must be non-empty ASCII letters, digits and punctuation (no spaces)")


def _parse_raft(raw: dict[str, Any]) -> RaftTuning:
    defaults = RaftTuning()
    values: dict[str, Any] = {f.name: _positive(raw, f.name, getattr(defaults, f.name), "[raft]")
                              for f in dataclasses.fields(RaftTuning) if f.name != "store_niceness"}
    values["store_niceness"] = _count(raw, "store_niceness", defaults.store_niceness, "[raft]", low=0, high=19)
    for key in ("max_entry_bytes", "snapshot_min_entries", "snapshot_max_log_bytes", "snapshot_chunk_bytes"):
        values[key] = int(values[key])
    tuning = RaftTuning(**values)
    if tuning.election_timeout_min_s >= tuning.election_timeout_max_s:
        raise ConfigError("[raft] election_timeout_min_s must be below election_timeout_max_s")
    if tuning.heartbeat_period_s * 3 > tuning.election_timeout_min_s:
        raise ConfigError("[raft] heartbeat_period_s must be at most a third of election_timeout_min_s")
    return tuning


def _parse_nodes(raw: Any, base_dir: Path, https: bool = False) -> tuple[NodeConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("at least one [[node]] table is required")
    nodes = tuple(_parse_node(entry, i, base_dir, https) for i, entry in enumerate(raw))
    _reject_duplicates([n.id for n in nodes], "node id")
    _reject_duplicates([(n.raft_host, n.raft_port) for n in nodes], "raft address")
    _reject_duplicates([(n.http_host, n.http_port) for n in nodes], "http address")
    _reject_duplicates([str(n.data_dir) for n in nodes], "data_dir")
    if not any(n.voter and not n.join for n in nodes):
        raise ConfigError("at least one [[node]] must be a voter that does not join later (voter = true, join = false)")
    return nodes


def _parse_node(raw: Any, position: int, base_dir: Path, https: bool = False) -> NodeConfig:
    where = f"[[node]] #{position + 1}"
    table = _table(raw, where)
    _reject_unknown(table, _NODE_KEYS | _NODE_OPTIONAL_KEYS | {"voter", "join"}, where)
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
    voter = _typed(table, "voter", bool, True, where)
    join = _typed(table, "join", bool, False, where)
    return NodeConfig(node_id, raft_host, raft_port, http_host, http_port, data_dir, https, **listen, voter=voter,
                      join=join)


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


def _count(table: dict[str, Any], key: str, default: int, where: str, low: int = 1, high: int | None = None) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        wanted = "a positive integer" if high is None else f"a whole number from {low} to {high}"
        raise ConfigError(f"{where}: {key} must be {wanted}, got {value!r}")
    return value


def _positive(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)
