"""The HTTP client of jepsen-lite: raw Chroma v2 requests to one node, with bounded timeouts.

Owns: the transport (http.client, a new connection per request, so that a refused connection is
a clean definite failure) and the split of transport errors into definite and indefinite. It must
not decide what a response means for a workload (workloads do), nor retry on its own.

Definite (`fail`): connection refused, HTTP 503 (NoQuorum / NotReady). Indefinite (`info`):
timeouts, resets, a closed connection, HTTP 504 (WriteOutcomeUnknown) and any other 5xx.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

READ_CONSISTENCY_HEADER = "X-Raftchroma-Read-Consistency"
API_PATH = "/api/v2"
DB_PATH = API_PATH + "/tenants/default_tenant/databases/default_database"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_name(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("error", self.status))
        return str(self.status)


class ClientError(Exception):
    """A request without a usable reply; `outcome` says whether it may have happened."""

    def __init__(self, outcome: Literal["fail", "info"], error: str) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error


def outcome_of_status(reply: Reply) -> tuple[Literal["fail", "info"], str]:
    """For a reply the workload did not expect: 503 is definite, other 5xx are not."""
    if reply.status == 503:
        return "fail", reply.error_name
    if reply.status >= 500:
        return "info", reply.error_name
    return "fail", f"{reply.status} {reply.error_name}"


class NodeClient:
    """Requests to the nodes of one cluster, by node id."""

    def __init__(self, ports: Mapping[str, int], timeout_s: float, read_consistency: str = "linearizable") -> None:
        self.ports = ports  # kept, not copied: a cluster that grows during a run adds its new nodes
        self.timeout_s = timeout_s
        self.read_consistency = read_consistency

    def request(self, node: str, method: str, path: str, body: Any = None,
                read: bool = False, timeout_s: float | None = None) -> Reply:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if read:
            headers[READ_CONSISTENCY_HEADER] = self.read_consistency
        data = json.dumps(body).encode() if body is not None else None
        return self.send(node, method, path, data, headers, timeout_s)

    def send(self, node: str, method: str, path: str, data: bytes | None, headers: dict[str, str],
             timeout_s: float | None = None) -> Reply:
        """One request with the body bytes as given (the hostile workload sends invalid ones);
        `path` must already be percent-encoded."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[node], timeout=timeout_s or self.timeout_s)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_RESPONSE_BYTES)
            return Reply(resp.status, _decode(raw))
        except ConnectionRefusedError:
            raise ClientError("fail", "connection-refused") from None
        except (TimeoutError, socket.timeout):
            raise ClientError("info", "timeout") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise ClientError("info", f"connection-lost: {type(exc).__name__}") from None
        finally:
            conn.close()

    def post(self, node: str, path: str, body: Any, read: bool = False) -> Reply:
        return self.request(node, "POST", DB_PATH + path, body, read=read)

    def get(self, node: str, path: str, read: bool = True) -> Reply:
        return self.request(node, "GET", DB_PATH + path, read=read)

    def delete(self, node: str, path: str) -> Reply:
        return self.request(node, "DELETE", DB_PATH + path)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
