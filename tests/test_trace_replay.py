"""Replay of recorded client sessions against a raftchroma follower, compared with what `chroma run`
1.5.9 answered when they were recorded (status and normalised body, see tests/differential.py).

The traces (copied from the shared reference into tests/data/chroma-1.5.9-traces) are the Python
`chromadb.HttpClient` 1.5.9 session (01-16) and the JavaScript client, npm chromadb 3.5.0 (30):
replaying the JS client's exact requests proves it works without Node.js in CI.

Ids: Chroma chose the recorded collection and database ids at random, raftchroma chooses its own.
Each recorded id is paired with the id raftchroma answered at the same place (a created or
fetched object's "id", a listed object of the same name) and substituted in every later request
path and recorded body. Pairing one recorded id with two different ids is reported.

State the recording depended on is rebuilt by replaying the files in recorded order on one
cluster: 01-16 are one session that drops every collection it makes, and 30 lists only its own
collection, so it ran without the collections 20_errors.jsonl leaves behind. 20_errors is not
replayed: tests/test_conformance.py covers bad requests against a live Chroma, and one of its
recorded request bodies (5462 ids) is truncated. One kind of step cannot be reproduced exactly
and is handled explicitly in `compare_listing`: a listing of collections is ordered by
collection id, and the ids are random on both servers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.differential import UUID_RE, IdMap, Reply, canonical_query, differences, normalise_reply, send
from tests.harness import Cluster, make_cluster, start_cluster

TRACES_DIR = Path(__file__).parent / "data" / "chroma-1.5.9-traces"
TRACE_FILES = sorted(TRACES_DIR.glob("0*.jsonl")) + sorted(TRACES_DIR.glob("1*.jsonl")) + [
    TRACES_DIR / "30_js_client.jsonl"]
LIST_COLLECTIONS_SUFFIX = "/collections"


@dataclass(frozen=True)
class Exchange:
    """One recorded request and Chroma's answer."""

    source: str
    n: int
    method: str
    path: str
    content_type: str | None
    body: bytes | None
    status: int
    answer: Any

    @property
    def label(self) -> str:
        return f"{self.source}#{self.n} {self.method} {self.path}"


def load_exchanges() -> list[Exchange]:
    out = []
    for path in TRACE_FILES:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            body = record["req_body"].encode() if record["req_body"] else None
            answer = json.loads(record["resp_body"]) if record["resp_body"] else None
            out.append(Exchange(path.stem, record["n"], record["method"], record["path"],
                                record["req_headers"].get("Content-Type"), body, record["status"], answer))
    return out


@pytest.fixture(scope="module")
def follower_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster: Cluster = make_cluster(Path(tmp_path_factory.mktemp("replay")))
    try:
        leader = start_cluster(cluster)
        yield cluster.node(next(n for n in cluster.nodes if n != leader)).url
    finally:
        cluster.stop_all()


@dataclass
class IdPairs:
    """Recorded id -> raftchroma's id, learned from answers in the order they came."""

    pairs: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def learn(self, recorded: Any, actual: Any, where: str) -> None:
        if isinstance(recorded, dict) and isinstance(actual, dict):
            self._pair(recorded.get("id"), actual.get("id"), where)
        elif isinstance(recorded, list) and isinstance(actual, list):
            by_name = {item.get("name"): item for item in actual if isinstance(item, dict)}
            for item in recorded:
                if isinstance(item, dict) and item.get("name") in by_name:
                    self._pair(item.get("id"), by_name[item["name"]].get("id"), where)

    def _pair(self, recorded: Any, actual: Any, where: str) -> None:
        if not (isinstance(recorded, str) and isinstance(actual, str) and UUID_RE.fullmatch(recorded)):
            return
        known = self.pairs.setdefault(recorded, actual)
        if known != actual:
            self.problems.append(f"{where}: recorded id {recorded} was answered as {known}, now as {actual}")

    def translate(self, text: str) -> str:
        return UUID_RE.sub(lambda m: self.pairs.get(m.group(0), m.group(0)), text)

    def translate_value(self, value: Any) -> Any:
        return json.loads(self.translate(json.dumps(value))) if value is not None else None


@dataclass
class Replay:
    url: str
    ids: IdPairs = field(default_factory=IdPairs)
    recorded_ids: IdMap = field(default_factory=IdMap)
    actual_ids: IdMap = field(default_factory=IdMap)

    def run(self, exchange: Exchange) -> list[str]:
        path = self.ids.translate(exchange.path)
        body = self.ids.translate(exchange.body.decode()).encode() if exchange.body is not None else None
        reply = send(exchange.method, self.url + path, body, exchange.content_type)
        self.ids.learn(exchange.answer, reply.body, exchange.label)
        recorded = Reply(exchange.status, {}, self.ids.translate_value(exchange.answer))
        return self.compare(exchange, path, recorded, reply)

    def compare(self, exchange: Exchange, path: str, recorded: Reply, actual: Reply) -> list[str]:
        if is_collection_listing(exchange):
            return self.compare_listing(exchange, path, recorded, actual)
        expected = normalise_reply(recorded, self.recorded_ids)
        got = normalise_reply(actual, self.actual_ids)
        if is_query(exchange):  # nearest neighbours at equal distances may come in either order
            n_results = json.loads(exchange.body).get("n_results") or 10
            expected = (expected[0], canonical_query(expected[1], n_results))
            got = (got[0], canonical_query(got[1], n_results))
        if expected == got:
            return []
        return [f"{exchange.label} (recorded != raftchroma)\n    " + "\n    ".join(differences(expected, got))]

    def compare_listing(self, exchange: Exchange, path: str, recorded: Reply, actual: Reply) -> list[str]:
        """A listing is ordered by collection id, random on both servers: compare the collections
        by name, and a page (limit/offset) with the same page of raftchroma's own full listing."""
        query = parse_qs(urlsplit(path).query)
        problems = []
        if "offset" in query and int(query["offset"][0]) > 0:
            full = send("GET", self.url + urlsplit(path).path).body
            start = int(query["offset"][0])
            end = start + int(query["limit"][0]) if "limit" in query else None
            if actual.body != full[start:end] or len(actual.body) != len(recorded.body or []):
                problems.append(f"{exchange.label}: page {actual.body!r} is not {start}:{end} of {full!r}")
            return problems
        ids = [c["id"] for c in actual.body or []]
        if ids != sorted(ids):
            problems.append(f"{exchange.label}: raftchroma does not list collections in id order")
        by_name = [Reply(r.status, {}, sorted(r.body or [], key=lambda c: c["name"])) for r in (recorded, actual)]
        if normalise_reply(by_name[0], IdMap()) != normalise_reply(by_name[1], IdMap()):
            problems.append(f"{exchange.label}: listing differs\n    " + "\n    ".join(
                differences(normalise_reply(by_name[0], IdMap()), normalise_reply(by_name[1], IdMap()))))
        return problems


def is_query(exchange: Exchange) -> bool:
    return exchange.method == "POST" and exchange.path.endswith("/query") and exchange.body is not None


def is_collection_listing(exchange: Exchange) -> bool:
    return exchange.method == "GET" and urlsplit(exchange.path).path.endswith(LIST_COLLECTIONS_SUFFIX) \
        and exchange.status == 200


def test_recorded_sessions_replay_identically(follower_url: str) -> None:
    replay = Replay(follower_url)
    exchanges = load_exchanges()
    assert len({e.source for e in exchanges}) == len(TRACE_FILES), "a trace file is empty or missing"
    problems = [problem for exchange in exchanges for problem in replay.run(exchange)]
    problems += replay.ids.problems
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems)
