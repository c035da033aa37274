"""raftchroma: ChromaDB made highly available by Raft.

Layout (API -> node -> replication -> state machine -> store):
  http/         the Chroma v2 HTTP API (aiohttp)
  node.py       write and read paths, applier thread, read barriers
  replication.py  PySyncObj, walled off
  command.py    the msgpack log-entry format
  store.py      embedded Chroma, id map, deterministic apply
  config.py     cluster.toml
  cli.py        `raftchroma serve | up | status` (click)
"""

__version__ = "0.1.0"
