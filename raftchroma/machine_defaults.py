"""Chroma defaults that depend on the machine, resolved before proposing.

Owns: the list of such defaults and their resolution. Chroma fills HNSW `num_threads` with the
CPU count it sees (`sched_getaffinity`), so two replicas on different machines (or with
different CPU limits) would store different collection configurations from the same op. The
proposing node chooses the value once and it travels in the op (`CreateCollection.hnsw_num_threads`);
a value the client gave explicitly is kept as given. It is the only machine-dependent default in
Chroma's collection types: `available_parallelism` / `num_cpus` appear in rust/types only in
hnsw_configuration.rs (checked in chroma-core/chroma at 93652ec, with rust/segment, rust/index and
rust/frontend; collection_schema.rs notes that it skips num_threads for the same reason).
"""

from __future__ import annotations

import os
from typing import Any


def available_cpus() -> int:
    """The CPUs this process may run on, as Chroma counts them for its default."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def hnsw_num_threads(configuration: dict[str, Any] | None, schema: dict[str, Any] | None) -> int | None:
    """The `num_threads` to write into a new collection's op, or None when the client set one."""
    hnsw = (configuration or {}).get("hnsw")
    if isinstance(hnsw, dict) and hnsw.get("num_threads") is not None:
        return None
    if schema is not None and _mentions(schema, "num_threads"):
        return None
    return available_cpus()


def _mentions(value: Any, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_mentions(v, key) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, key) for v in value)
    return False
