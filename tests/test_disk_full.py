"""A full disk: writes fail without being acknowledged, and the node recovers when space returns."""

from __future__ import annotations

import subprocess
import urllib.error
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.conftest import small_tmpfs
from tests.harness import http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "6m") as mount_point:
        yield mount_point


def add(url: str, collection_id: str, start: int) -> int:
    vectors = np.random.default_rng(start).random((50, 64), dtype=np.float32).tolist()
    try:
        status, _, _ = http("POST", f"{url}{SCOPE}/collections/{collection_id}/add",
                            {"ids": [f"d{start + i}" for i in range(50)], "embeddings": vectors}, timeout_s=60)
    except (urllib.error.URLError, OSError):
        return 0
    return status


@pytest.mark.slow
def test_full_disk_fails_writes_cleanly_and_recovers_when_space_returns(tmp_path: Path, small_disk: Path) -> None:
    cluster = make_cluster(tmp_path, size=1, cluster_keys="write_timeout_s = 3.0\nread_timeout_s = 10.0")
    config = cluster.config_path.read_text().replace('data_dir = "data/n1"', f'data_dir = "{small_disk}/n1"')
    cluster.config_path.write_text(config)
    try:
        start_cluster(cluster)
        url = cluster.node("n1").url
        status, _, col = http("POST", url + SCOPE + "/collections", {"name": "filling"})
        assert status == 200
        acked, failures = [], 0
        for batch in range(400):
            status = add(url, col["id"], batch * 50)
            if status == 201:
                acked.append(batch)
            else:
                assert status in (500, 503, 504), status
                failures += 1
                if failures >= 3:
                    break
        assert failures >= 3, "the disk never filled up"
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
        wait_for(lambda: add(url, col["id"], 10 ** 6 + len(acked) * 50) == 201, 120, "writes to succeed again")
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{col['id']}/get", {"include": []}, headers=LIN)
        present = set(body["ids"])
        for batch in acked:
            assert f"d{batch * 50}" in present and f"d{batch * 50 + 49}" in present
        cluster.kill("n1")
        cluster.start("n1")
        cluster.leader(timeout_s=60)
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{col['id']}/get", {"include": []}, headers=LIN)
        assert present <= set(body["ids"])
    finally:
        cluster.stop_all()
