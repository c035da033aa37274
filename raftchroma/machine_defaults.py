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


def hnsw_num_threads(configuration: dict[str, Any] | None, schema: dict[str, Any] | None) -> int:
    """The `num_threads` a new collection's op carries: the client's, if it set one where Chroma
    reads it (the configuration's hnsw, or the schema's #embedding vector index), else this
    machine's CPU count. The store writes it into every place of the stored schema."""
    given = _path(configuration, "hnsw", "num_threads")
    if given is None:
        given = _path(schema, "keys", "#embedding", "float_list", "vector_index", "config", "hnsw", "num_threads")
    return given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else available_cpus()


def _path(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
