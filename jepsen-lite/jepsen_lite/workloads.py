"""Workloads: what clients do, how each reply becomes ok / fail / info, and which checker judges.

Owns: the operation mix of `register`, `set`, `collections` and `hostile` (its requests come
from `hostile`), the mapping of Chroma v2 replies to outcomes, the final reads after heal, and
the choice of checker. It must not start nodes or inject faults (cluster, nemesis), and it must
never call an operation `fail` when it may have happened: when in doubt, `info`.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jepsen_lite.client import API_PATH, ClientError, NodeClient, Reply, outcome_of_status
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


WORKLOADS = {"register": RegisterWorkload, "set": SetWorkload, "collections": CollectionsWorkload,
             "hostile": HostileWorkload}


def make_workload(name: str) -> Workload:
    return WORKLOADS[name]()
