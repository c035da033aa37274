"""cluster.toml validation and the CLI's one-line errors (exit code 2, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raftchroma.cli import main
from raftchroma.config import ConfigError, load_config

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
])
def test_bad_files_give_one_line_errors(tmp_path: Path, mutation, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, mutation(GOOD)), environ={})
    assert "\n" not in str(info.value)


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
