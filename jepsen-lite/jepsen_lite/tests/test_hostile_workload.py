"""The hostile workload without a cluster: the corpus, the seeded generator (pure), the bytes it
sends, and how replies become ok / fail / info (against a small fake HTTP server)."""

from __future__ import annotations

import http.server
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest

from jepsen_lite.client import NodeClient
from jepsen_lite.hostile import (
    CHROMA_ERROR_TEXTS,
    EMBEDDING_NUMBERS,
    EXTREME_NUMBERS,
    KIND_WEIGHTS,
    OS_ERROR_TEXTS,
    RESERVED_METADATA_KEYS,
    SET_COLLECTION,
    hostile_request,
    request_bytes,
    valid_name,
)
from jepsen_lite.workloads import HostileWorkload, Invocation

CHROMA_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")  # raftchroma/http/parse.py


def invocations(seed: int, count: int) -> list[Invocation]:
    rng, workload = random.Random(seed), HostileWorkload()
    return [workload.generate(rng) for _ in range(count)]


def test_same_seed_same_requests_other_seed_other_requests() -> None:
    first = invocations(42, 300)
    assert first == invocations(42, 300)
    assert first != invocations(43, 300)


def test_the_generator_depends_on_nothing_but_its_random_source() -> None:
    """Two workloads, one random source each, interleaved: each stream is the same as alone."""
    a, b = HostileWorkload(), HostileWorkload()
    rng_a, rng_b = random.Random(7), random.Random(8)
    interleaved = [(a.generate(rng_a), b.generate(rng_b)) for _ in range(100)]
    assert [x for x, _ in interleaved] == invocations(7, 100)
    assert [y for _, y in interleaved] == invocations(8, 100)


def test_mix_has_every_hostile_kind_and_about_half_normal_writes() -> None:
    fs = Counter(inv.f for inv in invocations(1, 4000))
    assert {f"h-{kind}" for kind in KIND_WEIGHTS} <= set(fs)
    assert 0.45 < fs["add"] / 4000 < 0.55
    normal_ids = [inv.value for inv in invocations(1, 4000) if inv.f == "add"]
    assert len(set(normal_ids)) == len(normal_ids), "normal writes add unique ids"


def test_corpus_holds_chroma_and_os_error_texts_reserved_keys_and_extreme_numbers() -> None:
    texts = set(CHROMA_ERROR_TEXTS) | set(OS_ERROR_TEXTS)
    for text in ("disk is full", "no space left on device", "database is locked", "already exists",
                 "does not exist", "UNIQUE constraint failed", "Collection [x] already exists", "I/O error",
                 "readonly database", "too many open files", "out of memory", "error in compaction",
                 "purging logs", "failed to apply logs", "No space left on device", "Input/output error",
                 "Read-only file system", "Too many open files", "Cannot allocate memory"):
        assert text in texts
    assert {"chroma:document", "chroma:foo"} <= set(RESERVED_METADATA_KEYS)
    assert {1e308, -1e308, 2 ** 63, -2 ** 63 - 1} <= set(EXTREME_NUMBERS)
    assert 1e39 in EMBEDDING_NUMBERS


def test_creates_are_sent_twice_and_tenant_names_carry_error_texts() -> None:
    specs = [inv.value for inv in invocations(3, 3000) if inv.f.startswith("h-create-")]
    assert specs and all(spec["repeat"] == 2 for spec in specs)
    tenants = [spec["body"]["name"] for spec in specs if spec["kind"] == "create-tenant"]
    assert "disk is full" in tenants or "database is locked" in tenants
    assert any(len(name) >= 1000 for name in tenants), "multi-KB unicode names too"
    repeated = [name for name, n in Counter(tenants).items() if n > 1]
    assert repeated, "a small corpus: names repeat across requests as well"


def test_valid_names_made_of_error_texts_pass_chromas_name_rule() -> None:
    assert valid_name("disk is full") == "disk-is-full"
    assert valid_name("[Errno 28] No space left on device") == "Errno-28-No-space-left-on-device"
    for text in (*CHROMA_ERROR_TEXTS, *OS_ERROR_TEXTS, "🔥", "a", "-x-"):
        assert CHROMA_NAME.match(valid_name(text)), text


def test_no_hostile_request_writes_into_the_normal_writes_collection() -> None:
    """Records go to the target collection, a random UUID or a text id; the set collection's
    id is made by the server at setup, so no spec can name it. Resets are never sent."""
    for inv in invocations(5, 3000):
        if inv.f == "add":
            continue
        assert inv.f.startswith("h-")
        spec = inv.value
        assert f"/collections/{SET_COLLECTION}" not in spec["path"]
        if spec["kind"] in ("add", "upsert", "update", "delete", "modify-collection"):
            collection = spec["path"].split("/collections/")[1].split("/")[0]
            texts = (*CHROMA_ERROR_TEXTS, *OS_ERROR_TEXTS)
            is_uuid = re.fullmatch(r"[0-9a-f-]{36}", collection)
            assert collection == "{target}" or is_uuid or unquote(collection) in texts
        assert spec["kind"] != "reset" and "/reset" not in spec["path"]


def test_specs_survive_the_history_round_trip() -> None:
    """The spec is recorded as the op's input: JSON lines must give back the same request."""
    for inv in invocations(9, 1500):
        if inv.f == "add":
            continue
        back = json.loads(json.dumps(inv.value))
        assert back == inv.value
        assert request_bytes(back) == request_bytes(inv.value)


def test_request_bytes_keep_invalid_bytes_and_lone_surrogates() -> None:
    raw = b'{"name": "\xff\xfe disk is full"}'
    assert request_bytes({"raw": raw.decode("utf-8", "surrogateescape")}) == raw
    escaped = request_bytes({"body": {"name": "x\ud800"}, "ascii": True})
    assert escaped == b'{"name": "x\\ud800"}'
    raw_utf8 = request_bytes({"body": {"name": "x\ud800"}, "ascii": False})
    with pytest.raises(UnicodeDecodeError):
        raw_utf8.decode("utf-8")


# ------------------------------------------------------- replies to outcomes


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next (status, body) of `script`; keeps what it received."""

    script: list[tuple[int, Any]] = []
    received: list[tuple[str, str, bytes]] = []

    def _answer(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((self.command, self.path, data))
        status, body = type(self).script.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[NodeClient, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": [], "received": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield NodeClient({"n1": server.server_address[1]}, timeout_s=2.0), handler
    finally:
        server.shutdown()
        server.server_close()


def _workload() -> HostileWorkload:
    workload = HostileWorkload()
    workload.set_id, workload.target_id = "set-id", "target-id"
    return workload


def _create_tenant_twice(name: str) -> Invocation:
    spec = {"kind": "create-tenant", "method": "POST", "path": "/tenants", "body": {"name": name},
            "content_type": "application/json", "repeat": 2}
    return Invocation("h-create-tenant", "error-text", spec)


def test_a_create_sent_twice_records_both_replies(scripted: tuple[NodeClient, type[_Scripted]]) -> None:
    client, handler = scripted
    handler.script += [(200, {}), (409, {"error": "ChromaError", "message": "Tenant [disk is full] already exists"})]
    done = _workload().invoke(client, "n1", _create_tenant_twice("disk is full"))
    assert done.outcome == "ok"
    assert [r["status"] for r in done.value] == [200, 409]
    assert done.value[1]["message"] == "Tenant [disk is full] already exists"
    assert [(m, p) for m, p, _ in handler.received] == [("POST", "/api/v2/tenants")] * 2


def test_an_internal_error_may_have_committed_so_it_is_info(scripted: tuple[NodeClient, type[_Scripted]]) -> None:
    client, handler = scripted
    handler.script += [(200, {}), (500, {"error": "InternalError", "message": "x" * 5000})]
    done = _workload().invoke(client, "n1", _create_tenant_twice("database is locked"))
    assert done.outcome == "info"
    assert done.value[1]["error"] == "InternalError" and len(done.value[1]["message"]) == 300
    assert done.error == "500 InternalError"


def test_refusals_are_definite_and_no_quorum_too(scripted: tuple[NodeClient, type[_Scripted]]) -> None:
    client, handler = scripted
    handler.script += [(400, {"error": "InvalidArgumentError", "message": "no"}), (503, {"error": "NoQuorum"})]
    done = _workload().invoke(client, "n1", _create_tenant_twice("I/O error"))
    assert (done.outcome, [r["outcome"] for r in done.value]) == ("fail", ["fail", "fail"])


def test_raw_bodies_arrive_byte_for_byte_with_the_target_filled_in(
        scripted: tuple[NodeClient, type[_Scripted]]) -> None:
    client, handler = scripted
    raw = b'{"ids": ["\xc3\x28"], "embeddings": [[1, 2]]}'
    spec = {"kind": "raw", "method": "POST", "path": "/tenants/t/databases/d/collections/{target}/add",
            "raw": raw.decode("utf-8", "surrogateescape"), "content_type": "text/plain", "repeat": 1}
    handler.script.append((400, {"error": "InvalidArgumentError", "message": "bad"}))
    done = _workload().invoke(client, "n1", Invocation("h-raw", "invalid-utf8", spec))
    assert done.outcome == "fail"
    assert handler.received == [("POST", "/api/v2/tenants/t/databases/d/collections/target-id/add", raw)]


def test_normal_writes_go_to_the_set_collection(scripted: tuple[NodeClient, type[_Scripted]]) -> None:
    client, handler = scripted
    handler.script.append((201, {}))
    done = _workload().invoke(client, "n1", Invocation("add", None, "w1"))
    assert (done.outcome, done.value) == ("ok", "w1")
    method, path, data = handler.received[0]
    assert path.endswith("/collections/set-id/add") and json.loads(data)["ids"] == ["w1"]
