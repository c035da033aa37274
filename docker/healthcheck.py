#!/usr/bin/env python3
"""Container health check: `GET /api/v2/heartbeat` on this container's own node.

Owns: finding the node's API address (from the cluster file and RAFTCHROMA_NODE_ID, so a
node bound to its service name rather than 0.0.0.0 is still reached) and turning the
answer into an exit code: 0 healthy, 1 unhealthy. It must not judge the cluster: a node
without a quorum is alive, and restarting it would not bring the quorum back.
Installed in the image as /usr/local/bin/raftchroma-healthcheck (python: slim has no curl).
"""

from __future__ import annotations

import os
import sys
import urllib.request

from raftchroma.config import ConfigError, load_config

CONFIG_PATH = os.environ.get("RAFTCHROMA_CONFIG", "/etc/raftchroma/cluster.toml")
REQUEST_TIMEOUT_S = 2.0


def heartbeat_url() -> str:
    node_id = os.environ.get("RAFTCHROMA_NODE_ID", "")
    node = load_config(CONFIG_PATH, environ={}).node(node_id)
    return node.http_url + "/api/v2/heartbeat"


def main() -> int:
    try:
        url = heartbeat_url()
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
            healthy = resp.status == 200 and b"heartbeat" in resp.read(4096)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else "unhealthy: unexpected heartbeat answer")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
