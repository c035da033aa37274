"""The batch workload without a cluster: the generator (sizes, fresh refused batches, bounded live
batches, both consistencies), the request bodies, and how replies become ok / fail / info
(against a small scripted HTTP server)."""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from jepsen_lite.batch import BATCH_SIZE_STEP, delete_body, write_body
from jepsen_lite.client import READ_CONSISTENCY_HEADER, NodeClient
from jepsen_lite.workloads import BatchWorkload, Invocation


def invocations(seed: int, count: int) -> list[Invocation]:
    rng, workload = random.Random(seed), BatchWorkload()
    return [workload.generate(rng) for _ in range(count)]


def test_same_seed_same_operations_from_one_client() -> None:
    assert invocations(4, 500) == invocations(4, 500)
    assert invocations(4, 500) != invocations(5, 500)


def test_the_mix_has_every_operation_and_both_consistencies() -> None:
    invs = invocations(1, 3000)
    fs = Counter(inv.f for inv in invs)
    assert set(fs) == {"add-batch", "upsert-batch", "delete-batch", "refused-batch", "read-batch", "read-all", "count"}
    reads = [inv for inv in invs if inv.f in ("read-batch", "read-all", "count")]
    assert {inv.value["consistency"] for inv in reads} == {"stale", "linearizable"}
    assert {inv.value["how"] for inv in invs if inv.f == "refused-batch"} == {"mixed-dimensions", "wrong-dimension"}


def test_batches_are_50_to_500_records_in_steps_of_10_and_each_keeps_its_size() -> None:
    sizes: dict[int, set[int]] = {}
    for inv in invocations(2, 3000):
        if inv.f != "read-batch" and inv.value and "n" in inv.value:
            sizes.setdefault(inv.value["batch"], set()).add(inv.value["n"])
    assert all(len(ns) == 1 for ns in sizes.values())
    flat = [n for ns in sizes.values() for n in ns]
    assert min(flat) >= 50 and max(flat) <= 500 and all(n % BATCH_SIZE_STEP == 0 for n in flat)
    assert min(flat) < 100 and max(flat) > 450


def test_refused_batches_are_fresh_and_never_written_and_versions_unique() -> None:
    invs = invocations(3, 3000)
    refused = {inv.value["batch"] for inv in invs if inv.f == "refused-batch"}
    written = {inv.value["batch"] for inv in invs if inv.f in ("add-batch", "upsert-batch", "delete-batch")}
    assert refused and not refused & written
    versions = [inv.value["version"] for inv in invs if inv.f in ("add-batch", "upsert-batch", "refused-batch")]
    assert len(versions) == len(set(versions))
    adds = [inv.value["batch"] for inv in invs if inv.f == "add-batch"]
    assert len(adds) == len(set(adds)), "each batch is added once"


def test_live_batches_stay_bounded() -> None:
    live: set[int] = set()
    for inv in invocations(6, 3000):
        if inv.f in ("add-batch", "upsert-batch"):
            live.add(inv.value["batch"])
        elif inv.f == "delete-batch":
            live.discard(inv.value["batch"])
        assert len(live) <= BatchWorkload.live_batches_max


def test_bodies_write_whole_batches_and_refused_ones_carry_a_wrong_dimension() -> None:
    body = write_body(3, 50, 7)
    assert body["ids"] == [f"b3-{i}" for i in range(50)]
    assert body["metadatas"] == [{"batch": 3, "version": 7}] * 50 and {len(e) for e in body["embeddings"]} == {2}
    assert [len(e) for e in write_body(3, 50, 7, "mixed-dimensions")["embeddings"]] == [2] * 49 + [3]
    assert {len(e) for e in write_body(3, 50, 7, "wrong-dimension")["embeddings"]} == {3}
    assert delete_body(3, 50, "where") == {"where": {"batch": 3}} and len(delete_body(3, 50, "ids")["ids"]) == 50


# ------------------------------------------------------- replies to outcomes


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next (status, body) of `script`; keeps what it received."""

    script: list[tuple[int, Any]] = []
    received: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((self.command, self.path, dict(self.headers), data))
        status, body = type(self).script.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[NodeClient, type[_Scripted], BatchWorkload]]:
    handler = type("Handler", (_Scripted,), {"script": [], "received": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    workload = BatchWorkload()
    workload.collection_id = "cid"
    try:
        yield NodeClient({"n1": server.server_address[1]}, timeout_s=2.0), handler, workload
    finally:
        server.shutdown()
        server.server_close()


Scripted = tuple[NodeClient, type[_Scripted], BatchWorkload]


def test_an_acknowledged_add_sends_the_whole_batch(scripted: Scripted) -> None:
    client, handler, workload = scripted
    handler.script.append((201, {}))
    done = workload.invoke(client, "n1", Invocation("add-batch", "b1", {"batch": 1, "n": 60, "version": 4}))
    assert (done.outcome, done.value) == ("ok", 4)
    method, path, _, data = handler.received[0]
    assert path.endswith("/collections/cid/add") and len(json.loads(data)["ids"]) == 60


def test_a_refused_batch_is_a_definite_failure_with_chromas_text(scripted: Scripted) -> None:
    client, handler, workload = scripted
    handler.script.append((400, {"error": "InvalidArgumentError", "message": "Inconsistent dimensions"}))
    inv = Invocation("refused-batch", "b2", {"batch": 2, "n": 50, "version": 5, "how": "mixed-dimensions"})
    done = workload.invoke(client, "n1", inv)
    assert (done.outcome, done.error) == ("fail", "400 InvalidArgumentError: Inconsistent dimensions")


def test_a_write_outcome_unknown_is_info(scripted: Scripted) -> None:
    client, handler, workload = scripted
    handler.script.append((504, {"error": "WriteOutcomeUnknown", "message": "maybe"}))
    done = workload.invoke(client, "n1", Invocation("upsert-batch", "b1", {"batch": 1, "n": 50, "version": 6}))
    assert done.outcome == "info"
    assert handler.received[0][1].endswith("/upsert")


def test_reads_name_their_consistency_and_record_row_groups(scripted: Scripted) -> None:
    client, handler, workload = scripted
    handler.script += [(200, {"ids": ["b1-1", "b1-0"], "metadatas": [{"batch": 1, "version": 2}] * 2}), (200, 7)]
    done = workload.invoke(client, "n1", Invocation("read-batch", "b1", {"batch": 1, "consistency": "stale"}))
    assert done.value["groups"] == [[1, 1, 2, [[0, 1]]]]
    _, path, headers, data = handler.received[0]
    assert path.endswith("/collections/cid/get") and headers[READ_CONSISTENCY_HEADER] == "stale"
    assert json.loads(data) == {"where": {"batch": 1}, "include": ["metadatas"]}
    done = workload.invoke(client, "n1", Invocation("count", None, {"consistency": "linearizable"}))
    assert (done.outcome, done.value) == ("ok", 7)
    method, path, headers, _ = handler.received[1]
    assert (method, path.rsplit("/", 1)[1], headers[READ_CONSISTENCY_HEADER]) == ("GET", "count", "linearizable")


def test_a_delete_that_failed_or_may_not_have_happened_leaves_the_batch_live(scripted: Scripted) -> None:
    """The bound on live batches is about what is stored: a batch whose delete failed still is."""
    client, handler, workload = scripted
    rng = random.Random(1)
    delete = next(inv for inv in (workload.generate(rng) for _ in range(200)) if inv.f == "delete-batch")
    k = delete.value["batch"]
    assert k not in workload._live
    handler.script += [(503, {"error": "NoQuorum"}), (504, {"error": "WriteOutcomeUnknown"}), (200, {"deleted": 50})]
    assert workload.invoke(client, "n1", delete).outcome == "fail" and k in workload._live
    workload._live.discard(k)
    assert workload.invoke(client, "n1", delete).outcome == "info" and k in workload._live
    workload._live.discard(k)
    assert workload.invoke(client, "n1", delete).outcome == "ok" and k not in workload._live
