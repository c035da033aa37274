"""Helpers for differential tests: raw HTTP exactly as scripted, and the normalisation that
makes two servers' answers comparable.

Owns: sending one request with precise control of its bytes and Content-Type (including none),
and turning an answer into a value that compares equal across servers when they agree: ids
replaced by placeholders in order of appearance (one map per server, so the n-th id one server
hands out lines up with the n-th id the other hands out), floats at float32 precision, serde's
" at line N column M" suffix stripped from error messages, the heartbeat's clock ignored.
It starts no servers and knows nothing of Raft.
"""

from __future__ import annotations

import http.client
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from tests.harness import decode_body

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SERDE_POSITION_RE = re.compile(r" at line \d+ column \d+")
FLOAT_SIGNIFICANT_DIGITS = 6  # float32 carries ~7; 6 absorbs last-digit rendering differences
HEARTBEAT_KEY = "nanosecond heartbeat"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, else the text, else None for an empty body


def send(method: str, url: str, raw: bytes | None = None, content_type: str | None = None,
         headers: dict[str, str] | None = None, timeout_s: float = 30.0) -> Reply:
    """One request with exactly these bytes; no Content-Type unless one is given (urllib would add one)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=raw, headers=all_headers)
        resp = connection.getresponse()
        return Reply(resp.status, _lower_headers(resp.headers), decode_body(resp.read()))
    finally:
        connection.close()


def _lower_headers(headers: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


class IdMap:
    """One server's ids, each replaced by "<idN>" in the order this server first showed it."""

    def __init__(self) -> None:
        self._placeholders: dict[str, str] = {}

    def placeholder(self, uuid_text: str) -> str:
        key = uuid_text.lower()
        if key not in self._placeholders:
            self._placeholders[key] = f"<id{len(self._placeholders) + 1}>"
        return self._placeholders[key]

    def replace_in(self, text: str) -> str:
        return UUID_RE.sub(lambda m: self.placeholder(m.group(0)), text)


@dataclass(frozen=True)
class F32:
    """A JSON float at float32 precision; kept distinct from an int, as Chroma keeps 1 and 1.0 apart."""

    text: str

    @classmethod
    def of(cls, value: float) -> F32:
        return cls(f"{value:.{FLOAT_SIGNIFICANT_DIGITS}g}")

    def __repr__(self) -> str:
        return f"{self.text}f"


def normalise(value: Any, ids: IdMap) -> Any:
    """A JSON value made comparable; dict keys are visited sorted, so the order of ids is stable."""
    if isinstance(value, dict):
        if HEARTBEAT_KEY in value:
            return {HEARTBEAT_KEY: "<ns>"}
        return {key: normalise(value[key], ids) for key in sorted(value)}
    if isinstance(value, list):
        return [normalise(item, ids) for item in value]
    if isinstance(value, str):
        return ids.replace_in(value)
    if isinstance(value, float):
        return F32.of(value)
    return value


def normalise_reply(reply: Reply, ids: IdMap) -> tuple[int, Any]:
    """(status, body) with an error's serde position removed and everything normalised."""
    body = reply.body
    if is_error_body(body):
        body = {"error": body["error"], "message": SERDE_POSITION_RE.sub("", str(body["message"]))}
    return reply.status, normalise(body, ids)


def is_error_body(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error", "message"}


def error_name(body: Any) -> Any:
    return body.get("error") if is_error_body(body) else None


def differences(expected: Any, actual: Any, path: str = "", limit: int = 6) -> list[str]:
    """The first few leaf paths where two normalised values differ, for a readable report."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual), key=str):
            if key not in actual or key not in expected:
                out.append(f"{path}.{key}: {expected.get(key, '<absent>')!r} != {actual.get(key, '<absent>')!r}")
            else:
                out += differences(expected[key], actual[key], f"{path}.{key}", limit)
        return out[:limit]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)) and len(expected) == len(actual):
        out = []
        for i, (a, b) in enumerate(zip(expected, actual)):
            out += differences(a, b, f"{path}[{i}]", limit)
        return out[:limit]
    return [] if expected == actual else [f"{path or '.'}: {expected!r} != {actual!r}"]


QUERY_ROW_FIELDS = ("ids", "distances", "documents", "metadatas", "embeddings", "uris")


def canonical_query(body: Any, n_results: int) -> Any:
    """A normalised query answer in a form where ties do not matter.

    Nearest neighbours at equal distance come back in any order, and when such a tie straddles
    the `n_results` cut either record may be the one returned. So each result row becomes its
    entries sorted by (distance, id), where the entries tied at the cut distance of a full row
    are kept only as a count; every distance is still compared."""
    if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
        return body
    rest = {key: value for key, value in body.items() if key not in QUERY_ROW_FIELDS}
    present = {key: body[key] is not None for key in QUERY_ROW_FIELDS if key in body}
    return {"rest": rest, "present": present,
            "rows": [_canonical_row(body, i, n_results) for i in range(len(body["ids"]))]}


def _canonical_row(body: dict[str, Any], i: int, n_results: int) -> dict[str, Any]:
    def column(key: str) -> list[Any]:
        rows = body.get(key)
        return rows[i] if rows is not None else [None] * len(body["ids"][i])
    distances = column("distances")
    entries = list(zip(body["ids"][i], distances, column("documents"), column("metadatas"),
                       column("embeddings"), column("uris")))
    cut = distances[-1] if len(entries) == n_results and entries and distances[-1] is not None else None
    fixed = sorted((e for e in entries if cut is None or e[1] != cut), key=lambda e: (_as_float(e[1]), e[0]))
    return {"entries": fixed, "tied_at_cut": len(entries) - len(fixed), "distances": sorted(distances, key=_as_float)}


def _as_float(value: Any) -> float:
    return float(value.text) if isinstance(value, F32) else float(value or 0)
