#!/usr/bin/env python3
"""Container health check: `GET /livez` (or `/readyz` with --ready) on this container's own node.

Owns: finding the node's API address from the same settings `raftchroma serve` reads
(RAFTCHROMA_CONFIG, RAFTCHROMA_NODE, RAFTCHROMA_HTTP_LISTEN; the listen address, with 0.0.0.0
reached as 127.0.0.1) and turning the answer into an exit code: 0 healthy, 1 unhealthy.
Liveness must not judge the cluster: a node without a quorum is alive, and restarting it would
not bring the quorum back; that is what readiness (--ready) reports.
Installed in the image as /usr/local/bin/raftchroma-healthcheck (python: slim has no curl).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from raftchroma.config import ConfigError, load_config, with_node_overrides

DEFAULT_CONFIG_PATH = "/etc/raftchroma/cluster.toml"
REQUEST_TIMEOUT_S = 2.0


def probe_url(path: str) -> str:
    node_id = os.environ.get("RAFTCHROMA_NODE", "")
    config = load_config(os.environ.get("RAFTCHROMA_CONFIG", DEFAULT_CONFIG_PATH), environ={})
    config = with_node_overrides(config, node_id, http_listen=os.environ.get("RAFTCHROMA_HTTP_LISTEN"))
    return config.node(node_id).listen_url + path


def main(argv: list[str]) -> int:
    path = "/readyz" if "--ready" in argv else "/livez"
    try:
        with urllib.request.urlopen(probe_url(path), timeout=REQUEST_TIMEOUT_S) as resp:
            healthy = resp.status == 200
    except urllib.error.HTTPError as exc:  # 503 with the reason as JSON
        print(f"unhealthy: {exc.code} {exc.read(4096).decode(errors='replace')}", file=sys.stderr)
        return 1
    except (ConfigError, OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
