"""cluster.toml validation and the CLI's one-line errors (exit code 2, never a traceback)."""

from __future__ import annotations

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
    config = load_config(write(tmp_path, GOOD), environ={"RAFTCHROMA_PASSWORD": "s3cret"})
    assert config.read_consistency == "stale"
    assert config.password == "s3cret"
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
    (lambda t: t.replace('data_dir = "data/a"', 'data_dir = "data/a"\nraft_listen = "0.0.0.0"'),
     "raft_listen: expected 'host:port'"),
    (lambda t: t.replace('data_dir = "data/a"', 'data_dir = "data/a"\nhttp_listen = "0.0.0.0:0"'),
     "http_listen: expected 'host:port' with a port in 1..65535"),
])
def test_bad_files_give_one_line_errors(tmp_path: Path, mutation, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, mutation(GOOD)), environ={})
    assert "\n" not in str(info.value)


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
