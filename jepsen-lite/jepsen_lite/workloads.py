"""Workloads: what clients do, how each reply becomes ok / fail / info, and which checker judges.

Owns: the operation mix of `register`, `set`, `collections`, `hostile` (its requests come
from `hostile`) and `batch` (its bodies and the encoding of its reads from `batch`), the mapping of Chroma v2 replies to outcomes, the final reads after heal, and
the choice of checker. It must not start nodes or inject faults (cluster, nemesis), and it must
never call an operation `fail` when it may have happened: when in doubt, `info`.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jepsen_lite import batch
from jepsen_lite.batch_checker import check_batches
from jepsen_lite.client import API_PATH, DB_PATH, READ_CONSISTENCY_HEADER, ClientError, NodeClient, Reply, outcome_of_status
from jepsen_lite.collections_checker import check_collections
from jepsen_lite.history import Op, Operation
from jepsen_lite.hostile import SET_COLLECTION, TARGET, TARGET_COLLECTION, hostile_request, request_bytes
from jepsen_lite.hostile_checker import PROBE_PREFIX, check_hostile
from jepsen_lite.linearizability import RegisterModel, check
from jepsen_lite.recorder import Recorder
from jepsen_lite.set_checker import check_set

EMBEDDING_DIM = 2
SETUP_TIMEOUT_S = 30.0
FINAL_READ_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 15.0
REPLY_MESSAGE_CHARS_MAX = 300  # Chroma echoes names in its errors, and these names can be 6 KB
RETRY_INTERVAL_S = 0.3


@dataclass(frozen=True)
class Invocation:
    f: str
    key: str | None
    value: Any


@dataclass(frozen=True)
class Completion:
    outcome: str  # ok | fail | info
    value: Any = None
    error: str | None = None


class Workload(Protocol):
    name: str

    def setup(self, client: NodeClient, nodes: Sequence[str]) -> None: ...
    def generate(self, rng: random.Random) -> Invocation: ...
    def invoke(self, client: NodeClient, node: str, inv: Invocation) -> Completion: ...
    def final(self, client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None: ...
    def check(self, ops: Sequence[Operation], budget_s: float, nemesis: Sequence[Op] = ()) -> dict[str, Any]: ...


def _unexpected(reply: Reply) -> Completion:
    outcome, error = outcome_of_status(reply)
    return Completion(outcome, None, error)


def _vector(n: int) -> list[list[float]]:
    return [[float(n % 1000), 1.0]]


def _until_ok(deadline_s: float, fn: Any) -> Any:
    """Calls fn until it returns a non-None value or the monotonic deadline passes."""
    while True:
        try:
            value = fn()
        except ClientError:
            value = None
        if value is not None or time.monotonic() >= deadline_s:
            return value
        time.sleep(RETRY_INTERVAL_S)


def ensure_collection(client: NodeClient, nodes: Sequence[str], name: str) -> str:
    """Creates (or gets) a collection through any node; returns its id."""
    cycle = itertools.cycle(nodes)

    def attempt() -> str | None:
        reply = client.post(next(cycle), "/collections", {"name": name, "get_or_create": True})
        return reply.body["id"] if reply.ok else None
    collection_id = _until_ok(time.monotonic() + SETUP_TIMEOUT_S, attempt)
    if collection_id is None:
        raise RuntimeError(f"could not create collection {name!r} within {SETUP_TIMEOUT_S}s")
    return str(collection_id)


def record_final(recorder: Recorder, process: str, node: str, f: str, key: str | None,
                 deadline_s: float, read: Any) -> Any:
    """One final read, retried until it answers or the deadline; recorded as one operation."""
    recorder.record(process, node, f, key, None, "invoke")
    value = _until_ok(deadline_s, read)
    if value is None:
        recorder.record(process, node, f, key, None, "fail", error="no answer before the deadline")
    else:
        recorder.record(process, node, f, key, value, "ok")
    return value


def read_ids_from_every_node(client: NodeClient, nodes: Sequence[str], recorder: Recorder, collection_id: str) -> None:
    """The set workloads' final reads: every id of the collection, read linearizably from each node."""
    deadline_s = time.monotonic() + FINAL_READ_TIMEOUT_S
    path = f"/collections/{collection_id}/get"
    for node in nodes:
        def read(node: str = node) -> list[str] | None:
            reply = client.post(node, path, {"include": []}, read=True)
            return sorted(reply.body["ids"]) if reply.ok else None
        record_final(recorder, f"final-{node}", node, "final-read", None, deadline_s, read)


# ------------------------------------------------------------------ register


class RegisterWorkload:
    """Upsert / get of a few record ids in one collection; the value is metadata {"v": n}."""

    name = "register"
    collection = "jl-register"

    def __init__(self, keys: int = 5) -> None:
        self.keys = [f"k{i}" for i in range(keys)]
        self.collection_id = ""
        self._values = itertools.count(1)

    def setup(self, client: NodeClient, nodes: Sequence[str]) -> None:
        self.collection_id = ensure_collection(client, nodes, self.collection)

    def generate(self, rng: random.Random) -> Invocation:
        key = rng.choice(self.keys)
        if rng.random() < 0.5:
            return Invocation("read", key, None)
        return Invocation("write", key, next(self._values))

    def invoke(self, client: NodeClient, node: str, inv: Invocation) -> Completion:
        path = f"/collections/{self.collection_id}"
        if inv.f == "write":
            body = {"ids": [inv.key], "embeddings": _vector(inv.value), "metadatas": [{"v": inv.value}]}
            reply = client.post(node, path + "/upsert", body)
            return Completion("ok", inv.value) if reply.ok else _unexpected(reply)
        reply = client.post(node, path + "/get", {"ids": [inv.key], "include": ["metadatas"]}, read=True)
        if not reply.ok:
            return _unexpected(reply)
        metadatas = reply.body.get("metadatas") or []
        return Completion("ok", metadatas[0]["v"] if metadatas and metadatas[0] else None)

    def final(self, client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None:
        """No final reads: every read during the run is already checked."""

    def check(self, ops: Sequence[Operation], budget_s: float, nemesis: Sequence[Op] = ()) -> dict[str, Any]:
        return check(ops, RegisterModel(), budget_s).to_dict()


# ----------------------------------------------------------------------- set


class SetWorkload:
    """Adds of unique ids into one collection; after heal, all ids read from every node."""

    name = "set"
    collection = "jl-set"

    def __init__(self) -> None:
        self.collection_id = ""
        self._ids = itertools.count(1)

    def setup(self, client: NodeClient, nodes: Sequence[str]) -> None:
        self.collection_id = ensure_collection(client, nodes, self.collection)

    def generate(self, rng: random.Random) -> Invocation:
        return Invocation("add", None, f"e{next(self._ids)}")

    def invoke(self, client: NodeClient, node: str, inv: Invocation) -> Completion:
        n = int(inv.value[1:])
        body = {"ids": [inv.value], "embeddings": _vector(n)}
        reply = client.post(node, f"/collections/{self.collection_id}/add", body)
        return Completion("ok", inv.value) if reply.ok else _unexpected(reply)

    def final(self, client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None:
        read_ids_from_every_node(client, nodes, recorder, self.collection_id)

    def check(self, ops: Sequence[Operation], budget_s: float, nemesis: Sequence[Op] = ()) -> dict[str, Any]:
        return check_set(ops)


# --------------------------------------------------------------- collections


class CollectionsWorkload:
    """Create / delete collections by name and add unique ids into them, concurrently."""

    name = "collections"

    def __init__(self, names: int = 4) -> None:
        self.names = [f"jl-c{i}" for i in range(names)]
        self._ids = itertools.count(1)

    def setup(self, client: NodeClient, nodes: Sequence[str]) -> None:
        """Nothing to prepare: the collections are the subject of the test."""

    def generate(self, rng: random.Random) -> Invocation:
        name, roll = rng.choice(self.names), rng.random()
        if roll < 0.2:
            return Invocation("create", name, None)
        if roll < 0.35:
            return Invocation("delete", name, None)
        return Invocation("add", name, f"r{next(self._ids)}")

    def invoke(self, client: NodeClient, node: str, inv: Invocation) -> Completion:
        if inv.f == "create":
            reply = client.post(node, "/collections", {"name": inv.key})
            expected = {200: "created", 409: "exists"}
        elif inv.f == "delete":
            reply = client.delete(node, f"/collections/{inv.key}")
            expected = {200: "deleted", 404: "missing"}
        else:
            return self._add(client, node, inv)
        status = 200 if reply.ok else reply.status
        return Completion("ok", expected[status]) if status in expected else _unexpected(reply)

    def _add(self, client: NodeClient, node: str, inv: Invocation) -> Completion:
        """Resolves the name with a linearizable read, then adds by id. A lookup that fails
        changed nothing, so it is a definite failure of the add."""
        try:
            lookup = client.get(node, f"/collections/{inv.key}")
        except ClientError as exc:
            return Completion("fail", None, f"lookup: {exc.error}")
        if lookup.status == 404:
            return Completion("ok", "missing")
        if not lookup.ok:
            return Completion("fail", None, f"lookup: {lookup.error_name}")
        n = int(inv.value[1:])
        body = {"ids": [inv.value], "embeddings": _vector(n)}
        reply = client.post(node, f"/collections/{lookup.body['id']}/add", body)
        if reply.status == 404:
            return Completion("ok", "missing")
        return Completion("ok", "added") if reply.ok else _unexpected(reply)

    def final(self, client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None:
        deadline_s = time.monotonic() + FINAL_READ_TIMEOUT_S
        node = nodes[0]
        record_final(recorder, "final-state", node, "final-state", None, deadline_s,
                     lambda: self._read_state(client, node))

    def _read_state(self, client: NodeClient, node: str) -> dict[str, list[str]] | None:
        reply = client.get(node, "/collections?limit=1000")
        if not reply.ok:
            return None
        state: dict[str, list[str]] = {}
        for collection in reply.body:
            if collection["name"] not in self.names:
                continue
            got = client.post(node, f"/collections/{collection['id']}/get", {"include": []}, read=True)
            if not got.ok:
                return None
            state[collection["name"]] = sorted(got.body["ids"])
        return state

    def check(self, ops: Sequence[Operation], budget_s: float, nemesis: Sequence[Op] = ()) -> dict[str, Any]:
        finals = [op for op in ops if op.f == "final-state" and op.outcome == "ok"]
        if not finals:
            return {"verdict": "unknown", "reason": "no final state was read"}
        final = finals[-1]
        result = check_collections(ops, final.output, budget_s, final_node=final.node)
        return result.to_dict()


# ------------------------------------------------------------------- hostile


class HostileWorkload:
    """Hostile requests (`hostile.hostile_request`: duplicate creates with names made of error
    texts, records with extreme values and awkward unicode, invalid bodies) interleaved with
    normal adds of unique ids into one collection. After heal, one probe add through every node,
    then every node's ids. Checker: `hostile_checker.check_hostile` (availability after each
    hostile request, no acknowledged add lost, InternalError answers counted)."""

    name = "hostile"
    hostile_share = 0.5
    normal_embedding = [[1.0, 1.0]]

    def __init__(self) -> None:
        self.set_id = ""
        self.target_id = ""

    def setup(self, client: NodeClient, nodes: Sequence[str]) -> None:
        self.set_id = ensure_collection(client, nodes, SET_COLLECTION)
        self.target_id = ensure_collection(client, nodes, TARGET_COLLECTION)

    def generate(self, rng: random.Random) -> Invocation:
        """Every choice from `rng`, the normal ids too (64 random bits: unique in practice)."""
        if rng.random() >= self.hostile_share:
            return Invocation("add", None, f"w{rng.getrandbits(64):016x}")
        category, spec = hostile_request(rng)
        return Invocation(f"h-{spec['kind']}", category, spec)

    def invoke(self, client: NodeClient, node: str, inv: Invocation) -> Completion:
        if inv.f == "add":
            return self._add(client, node, inv.value)
        return self._hostile(client, node, inv.value)

    def _add(self, client: NodeClient, node: str, record_id: str) -> Completion:
        body = {"ids": [record_id], "embeddings": self.normal_embedding}
        reply = client.post(node, f"/collections/{self.set_id}/add", body)
        return Completion("ok", record_id) if reply.ok else _unexpected(reply)

    def _hostile(self, client: NodeClient, node: str, spec: dict[str, Any]) -> Completion:
        """Sends the request `repeat` times (a create twice: the second is a duplicate). Each
        reply is kept; the op is `info` if any reply may have been a committed write that
        failed (other 5xx than 503, timeout), else `ok` if any succeeded, else `fail`."""
        path = API_PATH + spec["path"].replace(TARGET, self.target_id)
        headers = {"Content-Type": spec["content_type"]}
        data = request_bytes(spec)
        replies = [_send_once(client, node, spec["method"], path, data, headers) for _ in range(spec["repeat"])]
        outcomes = {r["outcome"] for r in replies}
        outcome = "info" if "info" in outcomes else "ok" if "ok" in outcomes else "fail"
        errors = "; ".join(f"{r['status'] or ''} {r['error'] or ''}".strip() for r in replies if r["outcome"] != "ok")
        return Completion(outcome, replies, errors or None)

    def final(self, client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None:
        """A probe add through every node (does the cluster still take writes after heal?),
        then every node's ids, so that the reads include the probes."""
        deadline_s = time.monotonic() + PROBE_TIMEOUT_S
        for node in nodes:
            self._probe(client, node, recorder, deadline_s)
        read_ids_from_every_node(client, nodes, recorder, self.set_id)

    def _probe(self, client: NodeClient, node: str, recorder: Recorder, deadline_s: float) -> None:
        """At least one attempt, retried until acknowledged or the deadline; one process per attempt."""
        record_id = f"probe-{node}"
        for attempt in itertools.count():
            process = f"{PROBE_PREFIX}-{node}-{attempt}"
            recorder.record(process, node, "add", None, record_id, "invoke")
            try:
                done = self._add(client, node, record_id)
            except ClientError as exc:
                done = Completion(exc.outcome, None, exc.error)
            recorder.record(process, node, "add", None, done.value, done.outcome, done.error)  # type: ignore[arg-type]
            if done.outcome == "ok" or time.monotonic() >= deadline_s:
                return
            time.sleep(RETRY_INTERVAL_S)

    def check(self, ops: Sequence[Operation], budget_s: float, nemesis: Sequence[Op] = ()) -> dict[str, Any]:
        return check_hostile(ops, nemesis)


def _send_once(client: NodeClient, node: str, method: str, path: str, data: bytes,
               headers: dict[str, str]) -> dict[str, Any]:
    """One hostile request's reply as recorded: status, Chroma's error name and message, outcome."""
    try:
        reply = client.send(node, method, path, data, headers)
    except ClientError as exc:
        return {"status": None, "error": exc.error, "message": None, "outcome": exc.outcome}
    outcome = "ok" if reply.ok else outcome_of_status(reply)[0]
    body = reply.body
    error = str(body.get("error")) if isinstance(body, dict) and "error" in body else None
    message = body.get("message") if isinstance(body, dict) else body
    text = None if message is None else str(message)[:REPLY_MESSAGE_CHARS_MAX]
    return {"status": reply.status, "error": error, "message": text, "outcome": outcome}


# --------------------------------------------------------------------- batch


class BatchWorkload:
    """Whole batches of 50-500 records (`batch.py`: ids `b{k}-{i}`, metadata {"batch": k,
    "version": v}) added, upserted and deleted in one request each, batches the server must refuse
    (a 400: one record, or all, of the wrong dimension), and reads of one batch, of the whole
    collection and counts, each at a consistency drawn per read (stale or linearizable), on
    every node. After heal, the whole collection read linearizably from every node. Checker:
    `batch_checker.check_batches` (every read shows whole batches only; linearizable reads are
    linearizable per batch)."""

    name = "batch"
    collection = "jl-batch"
    # Bounds the rows of a whole-collection read (6 x 500 at most) and of the final digests, which
    # raftchroma computes in time that grows with the square of a collection's rows.
    live_batches_max = 6
    consistencies = ("stale", "linearizable")
    setup_id = "jl-setup"

    def __init__(self, smallest: int = batch.BATCH_SIZE_MIN, largest: int = batch.BATCH_SIZE_MAX) -> None:
        self.smallest, self.largest = smallest, largest
        self.collection_id = ""
        self._lock = threading.Lock()  # the clients share which batches exist
        self._batches = itertools.count(1)
        self._versions = itertools.count(1)
        self._sizes: dict[int, int] = {}
        self._written: list[int] = []  # batches an add was sent for, in order
        self._live: set[int] = set()  # written, and not deleted since (as sent, not as applied)
        self._refused: list[int] = []

    def setup(self, client: NodeClient, nodes: Sequence[str]) -> None:
        """The collection, and its dimension fixed at 2 by one record added and deleted again, so
        that a batch of dimension 3 is refused rather than taken as the first."""
        self.collection_id = ensure_collection(client, nodes, self.collection)
        cycle, path = itertools.cycle(nodes), f"/collections/{self.collection_id}"
        body = {"ids": [self.setup_id], "embeddings": [[0.0] * batch.EMBEDDING_DIM]}
        for suffix, payload in (("/add", body), ("/delete", {"ids": [self.setup_id]})):
            done = _until_ok(time.monotonic() + SETUP_TIMEOUT_S,
                             lambda: True if client.post(next(cycle), path + suffix, payload).ok else None)
            if done is None:
                raise RuntimeError(f"could not {suffix[1:]} the setup record within {SETUP_TIMEOUT_S}s")

    def generate(self, rng: random.Random) -> Invocation:
        with self._lock:
            roll = rng.random()
            if not self._written or roll < 0.22:
                return self._add_or_delete(rng)
            if roll < 0.34:
                return self._upsert(rng)
            if roll < 0.42:
                return self._delete(rng) if self._live else self._read_batch(rng)
            if roll < 0.46:
                return self._refused_batch(rng)
            if roll < 0.76:
                return self._read_batch(rng)
            consistency = rng.choice(self.consistencies)
            return Invocation("count" if roll < 0.88 else "read-all", None, {"consistency": consistency})

    def _write(self, f: str, k: int, extra: dict[str, Any] | None = None) -> Invocation:
        return Invocation(f, f"b{k}", {"batch": k, "n": self._sizes[k], "version": next(self._versions), **(extra or {})})

    def _add_or_delete(self, rng: random.Random) -> Invocation:
        if len(self._live) >= self.live_batches_max:
            return self._delete(rng)
        k = next(self._batches)
        self._sizes[k] = batch.batch_size(rng, self.smallest, self.largest)
        self._written.append(k)
        self._live.add(k)
        return self._write("add-batch", k)

    def _upsert(self, rng: random.Random) -> Invocation:
        pool = sorted(self._live) if len(self._live) >= self.live_batches_max else self._written
        k = rng.choice(pool)
        self._live.add(k)
        return self._write("upsert-batch", k)

    def _delete(self, rng: random.Random) -> Invocation:
        k = rng.choice(sorted(self._live))
        self._live.discard(k)
        return Invocation("delete-batch", f"b{k}", {"batch": k, "n": self._sizes[k], "by": rng.choice(("ids", "where"))})

    def _refused_batch(self, rng: random.Random) -> Invocation:
        k = next(self._batches)
        self._sizes[k] = batch.batch_size(rng, self.smallest, self.largest)
        self._refused.append(k)
        return self._write("refused-batch", k, {"how": rng.choice(batch.REFUSED_HOWS)})

    def _still_live(self, k: int) -> None:
        """A delete that failed, or may not have happened: count the batch as live again, so
        that the bound on live batches holds for what is stored, not only for what was sent."""
        with self._lock:
            self._live.add(k)

    def _read_batch(self, rng: random.Random) -> Invocation:
        pool = self._refused if self._refused and rng.random() < 0.1 else self._written
        k = rng.choice(pool)
        return Invocation("read-batch", f"b{k}", {"batch": k, "consistency": rng.choice(self.consistencies)})

    def invoke(self, client: NodeClient, node: str, inv: Invocation) -> Completion:
        v, path = inv.value, f"/collections/{self.collection_id}"
        if inv.f in ("add-batch", "upsert-batch", "refused-batch"):
            body = batch.write_body(v["batch"], v["n"], v["version"], v.get("how"))
            reply = client.post(node, path + ("/upsert" if inv.f == "upsert-batch" else "/add"), body)
            return self._written_reply(inv, reply)
        if inv.f == "delete-batch":
            try:
                reply = client.post(node, path + "/delete", batch.delete_body(v["batch"], v["n"], v["by"]))
            except ClientError:
                self._still_live(v["batch"])
                raise
            if not reply.ok:
                self._still_live(v["batch"])
            return Completion("ok", reply.body) if reply.ok else _unexpected(reply)
        if inv.f == "count":
            reply = _read(client, node, "GET", path + "/count", None, v["consistency"])
            return Completion("ok", reply.body) if reply.ok else _unexpected(reply)
        where = {"where": {"batch": v["batch"]}} if inv.f == "read-batch" else {}
        reply = _read(client, node, "POST", path + "/get", {**where, "include": ["metadatas"]}, v["consistency"])
        if not reply.ok:
            return _unexpected(reply)
        return Completion("ok", batch.encode_rows(reply.body["ids"], reply.body.get("metadatas")))

    @staticmethod
    def _written_reply(inv: Invocation, reply: Reply) -> Completion:
        """A refused batch answered 400 is the expected definite failure; its error keeps Chroma's text."""
        if reply.ok:
            return Completion("ok", inv.value["version"])
        if inv.f == "refused-batch" and reply.status == 400:
            message = reply.body.get("message") if isinstance(reply.body, dict) else reply.body
            return Completion("fail", None, f"400 {reply.error_name}: {str(message)[:REPLY_MESSAGE_CHARS_MAX]}")
        return _unexpected(reply)

    def final(self, client: NodeClient, nodes: Sequence[str], recorder: Recorder) -> None:
        """The whole collection, read linearizably from every node."""
        deadline_s = time.monotonic() + FINAL_READ_TIMEOUT_S
        path = f"/collections/{self.collection_id}/get"
        for node in nodes:
            def read(node: str = node) -> dict[str, Any] | None:
                reply = _read(client, node, "POST", path, {"include": ["metadatas"]}, "linearizable")
                return batch.encode_rows(reply.body["ids"], reply.body.get("metadatas")) if reply.ok else None
            record_final(recorder, f"final-{node}", node, "read-all", None, deadline_s, read)

    def check(self, ops: Sequence[Operation], budget_s: float, nemesis: Sequence[Op] = ()) -> dict[str, Any]:
        return check_batches(ops, budget_s)


def _read(client: NodeClient, node: str, method: str, path: str, body: Any, consistency: str) -> Reply:
    """A read at the consistency given (the batch workload draws one per read)."""
    headers = {READ_CONSISTENCY_HEADER: consistency}
    if body is not None:
        headers["Content-Type"] = "application/json"
    data = None if body is None else json.dumps(body).encode()
    return client.send(node, method, DB_PATH + path, data, headers)


WORKLOADS = {"register": RegisterWorkload, "set": SetWorkload, "collections": CollectionsWorkload,
             "hostile": HostileWorkload, "batch": BatchWorkload}


def make_workload(name: str) -> Workload:
    return WORKLOADS[name]()
