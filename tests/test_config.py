"""cluster.toml validation and the CLI's one-line errors (exit code 2, never a traceback)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftchroma.cli import main
from raftchroma.config import ConfigError, load_config, with_node_overrides

REPO = Path(__file__).resolve().parent.parent

GOOD = """
[cluster]
read_consistency = "stale"
[[node]]
id = "a"
raft = "127.0.0.1:7001"
http = "127.0.0.1:8001"
data_dir = "data/a"
[[node]]
id = "b"
raft = "127.0.0.1:7002"
http = "127.0.0.1:8002"
data_dir = "/abs/b"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_repository_cluster_file_is_a_valid_three_node_cluster() -> None:
    config = load_config(REPO / "cluster.toml", environ={})
    assert [n.id for n in config.nodes] == ["n1", "n2", "n3"]
    assert config.read_consistency == "linearizable" and config.allow_reset is False
    assert [n.http_url for n in config.nodes] == ["http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003"]


def test_good_file_parses_into_frozen_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), environ={"RAFTCHROMA_SECRET": "s3cret"})
    assert config.read_consistency == "stale"
    assert config.secret == "s3cret"
    assert config.node("a").data_dir == tmp_path / "data" / "a"
    assert config.node("b").data_dir == Path("/abs/b")
    assert [n.id for n in config.peers_of("a")] == ["b"]
    with pytest.raises(Exception):
        config.allow_reset = True  # type: ignore[misc]


@pytest.mark.parametrize("mutation, message", [
    (lambda t: t.replace('read_consistency = "stale"', 'read_consistency = "stale"\ncolour = 1'), "unknown key 'colour'"),
    (lambda t: t.replace('id = "b"', 'id = "a"'), "duplicate node id: a"),
    (lambda t: t.replace("127.0.0.1:7002", "127.0.0.1:7001"), "duplicate raft address: 127.0.0.1:7001"),
    (lambda t: t.replace("127.0.0.1:8002", "127.0.0.1:8001"), "duplicate http address: 127.0.0.1:8001"),
    (lambda t: t.replace('"stale"', '"eventual"'), "read_consistency must be one of"),
    (lambda t: t.replace('raft = "127.0.0.1:7001"', 'raft = "nowhere"'), "expected 'host:port'"),
    (lambda t: t.replace('data_dir = "data/a"\n', ""), "missing key 'data_dir'"),
    (lambda t: t + "\n[raft]\nheartbeat_period_s = 2.0\n", "heartbeat_period_s must be at most a third"),
    (lambda t: t + "\n[raft]\nelection_timeout_min_s = -1\n", "must be a positive number"),
    (lambda t: t + "\n[raft]\nstore_niceness = 20\n", "store_niceness must be a whole number from 0 to 19"),
    (lambda t: t + "\n[raft]\nstore_niceness = 2.5\n", "store_niceness must be a whole number from 0 to 19"),
    (lambda t: t.replace('data_dir = "data/a"', 'data_dir = "data/a"\nraft_listen = "0.0.0.0"'),
     "raft_listen: expected 'host:port'"),
    (lambda t: t.replace('data_dir = "data/a"', 'data_dir = "data/a"\nhttp_listen = "0.0.0.0:0"'),
     "http_listen: expected 'host:port' with a port in 1..65535"),
])
def test_bad_files_give_one_line_errors(tmp_path: Path, mutation, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, mutation(GOOD)), environ={})
    assert "\n" not in str(info.value)


def test_store_niceness_defaults_to_five_and_zero_turns_it_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD), environ={}).raft.store_niceness == 5
    off = load_config(write(tmp_path, GOOD + "\n[raft]\nstore_niceness = 0\n"), environ={})
    assert off.raft.store_niceness == 0


def test_listen_addresses_are_separate_from_the_advertised_ones(tmp_path: Path) -> None:
    text = GOOD.replace('data_dir = "data/a"', 'data_dir = "data/a"\nraft_listen = "0.0.0.0:7001"\nhttp_listen = "0.0.0.0:8001"')
    config = load_config(write(tmp_path, text), environ={})
    a, b = config.node("a"), config.node("b")
    assert (a.raft_address, a.raft_bind_address, a.http_url, a.http_bind) == (
        "127.0.0.1:7001", "0.0.0.0:7001", "http://127.0.0.1:8001", ("0.0.0.0", 8001))
    assert (b.raft_bind_address, b.http_bind) == ("127.0.0.1:7002", ("127.0.0.1", 8002))


def test_node_overrides_change_only_that_nodes_bind_addresses_and_data_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), environ={})
    changed = with_node_overrides(config, "b", raft_listen="0.0.0.0:7100", http_listen="0.0.0.0:8100",
                                  data_dir="/var/lib/b")
    b = changed.node("b")
    assert (b.raft_address, b.raft_bind_address, b.http_bind, b.data_dir) == (
        "127.0.0.1:7002", "0.0.0.0:7100", ("0.0.0.0", 8100), Path("/var/lib/b"))
    assert changed.node("a") == config.node("a") and with_node_overrides(config, "a") is config
    with pytest.raises(ConfigError, match="--data-dir must be an absolute path"):
        with_node_overrides(config, "b", data_dir="relative")
    with pytest.raises(ConfigError, match="--http-listen: expected 'host:port'"):
        with_node_overrides(config, "b", http_listen="nope")


@pytest.mark.parametrize("env, message", [
    ({"RAFTCHROMA_NODE": "zz"}, "node 'zz' is not in the cluster"),
    ({"RAFTCHROMA_NODE": "a", "RAFTCHROMA_HTTP_LISTEN": "8001"}, "--http-listen: expected 'host:port'"),
    ({"RAFTCHROMA_NODE": "a", "RAFTCHROMA_LOG_FORMAT": "xml"}, "Invalid value for '--log-format'"),
])
def test_serve_reads_its_settings_from_the_environment(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve"], env={"RAFTCHROMA_CONFIG": str(write(tmp_path, GOOD)), **env})
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["serve", "--config", "{cfg}"], "--node is required"),
    (["serve", "--config", "{cfg}", "--node", "zz"], "node 'zz' is not in the cluster"),
    (["serve", "--config", "{missing}", "--node", "a"], "no such file"),
    (["status", "--config", "{bad}"], "duplicate node id"),
    (["serve", "--config", "{cfg}", "--node", "a", "--test-no-snapshot-keepalive"], "need --fault-injection"),
    (["serve", "--config", "{cfg}", "--node", "a", "--test-snapshot-write-delay-s", "1"], "need --fault-injection"),
])
def test_cli_reports_config_errors_with_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    cfg = write(tmp_path, GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('id = "b"', 'id = "a"'))
    filled = [a.format(cfg=cfg, missing=tmp_path / "nope.toml", bad=bad) for a in args]
    result = CliRunner().invoke(main, filled)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------- tokens, TLS, [http]

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
TOKENS = f"""
[[token]]
user_id = "alice"
sha256 = "{ABC_SHA256.upper()}"
tenant = "acme"
databases = ["db1", "db2", "db1"]
access = "read-only"

[[token]]
user_id = "root"
env = "ROOT_TOKEN"
tenant = "*"
databases = ["*"]
admin = true
"""


def test_tokens_keep_only_their_sha256(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + TOKENS), environ={"ROOT_TOKEN": "r00t-token"})
    alice, root = config.tokens
    assert (alice.user_id, alice.tenant, alice.databases, alice.read_only, alice.admin) == (
        "alice", "acme", ("db1", "db2"), True, False)
    assert alice.sha256 == bytes.fromhex(ABC_SHA256)
    assert root.sha256 == hashlib.sha256(b"r00t-token").digest() and root.admin and not root.read_only
    assert "r00t-token" not in repr(config) and ABC_SHA256 not in repr(config).lower()
    assert load_config(write(tmp_path, GOOD), environ={}).tokens == ()


def test_tls_and_http_tables(tmp_path: Path) -> None:
    (tmp_path / "node.pem").write_text("x")
    (tmp_path / "node.key").write_text("x")
    text = GOOD + '\n[tls]\ncert_file = "node.pem"\nkey_file = "node.key"\n[http]\nheader_read_timeout_s = 3\n'
    config = load_config(write(tmp_path, text), environ={})
    assert config.tls is not None and config.tls.cert_file == tmp_path / "node.pem" and config.tls.client_ca_file is None
    assert [n.http_url for n in config.nodes] == ["https://127.0.0.1:8001", "https://127.0.0.1:8002"]
    assert config.http.header_read_timeout_s == 3.0 and config.http.body_read_timeout_s == 60.0
    assert config.max_query_rows == 100_000


def _token(**keys: str) -> str:
    fields = {"user_id": '"u"', "sha256": f'"{ABC_SHA256}"', "tenant": '"t"', "databases": '["d"]', **keys}
    return "\n[[token]]\n" + "\n".join(f"{k} = {v}" for k, v in fields.items() if v is not None) + "\n"


@pytest.mark.parametrize("extra, message", [
    (_token(sha256='"abc"'), "sha256 must be 64 hex digits"),
    (_token(sha256=None), "give exactly one of sha256"),
    (_token(env='"X"'), "give exactly one of sha256"),
    (_token(sha256=None, env='"MISSING_TOKEN"'), "environment variable 'MISSING_TOKEN' (env) is not set"),
    (_token(sha256=None, env='"SPACED_TOKEN"'), "must be non-empty ASCII letters, digits and punctuation"),
    (_token(user_id='""'), "user_id is required"),
    (_token(tenant=None), "tenant is required"),
    (_token(databases="[]"), "databases must be a non-empty list"),
    (_token(databases='["*", "d"]'), 'databases is either ["*"] or a list of names'),
    (_token(access='"write-only"'), "access must be one of"),
    (_token(access='"read-only"', admin="true"), 'an admin token must have access = "read-write"'),
    (_token(admin='"yes"'), "admin must be a bool"),
    (_token(colour='"red"'), "unknown key 'colour'"),
    (_token() + _token(user_id='"v"'), "the same token is configured twice"),
    ("\n[token]\nuser_id = \"u\"\n", "token must be written as [[token]] tables"),
    ('\n[tls]\ncert_file = "nope.pem"\nkey_file = "nope.key"\n', "[tls] cert_file: no such file"),
    ('\n[tls]\ncert_file = "x"\n', "[tls]: missing key 'key_file'"),
    ("\n[http]\nmax_inflight_body_bytes = 1024\n", "max_inflight_body_bytes must be at least [cluster] max_body_bytes"),
    ("\n[http]\njson_thread_min_bytes = 1.5\n", "json_thread_min_bytes must be a positive integer"),
    ("\n[http]\nheader_read_timeout_s = 0\n", "header_read_timeout_s must be a positive number"),
])
def test_bad_token_tls_and_http_tables_give_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD + extra), environ={"SPACED_TOKEN": "has a space"})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_token_hash_reads_stdin() -> None:
    result = CliRunner().invoke(main, ["token", "hash"], input="abc\n")
    assert (result.exit_code, result.output) == (0, ABC_SHA256 + "\n")
    result = CliRunner().invoke(main, ["token", "hash"], input="has space\n")
    assert result.exit_code == 2 and "ASCII letters, digits and punctuation" in result.output


def test_serve_warns_once_about_an_open_api_beyond_loopback(tmp_path: Path) -> None:
    from raftchroma.http.app import open_api_warning

    class FakeNode:  # open_api_warning reads only these two
        def __init__(self, config: object, host: str) -> None:
            self.config = config
            self.node = dataclasses.replace(config.nodes[0], http_host=host)  # type: ignore[attr-defined]

    open_config = load_config(write(tmp_path, GOOD), environ={})
    for host in ("127.0.0.1", "::1", "localhost"):
        assert open_api_warning(FakeNode(open_config, host)) is None  # type: ignore[arg-type]
    warning = open_api_warning(FakeNode(open_config, "0.0.0.0"))  # type: ignore[arg-type]
    assert warning is not None and "0.0.0.0:8001 with no [[token]]" in warning
    closed = load_config(write(tmp_path, GOOD + TOKENS), environ={"ROOT_TOKEN": "r00t-token"})
    assert open_api_warning(FakeNode(closed, "0.0.0.0")) is None  # type: ignore[arg-type]
