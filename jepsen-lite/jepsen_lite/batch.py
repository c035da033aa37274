"""The `batch` workload's pure parts: record ids, batch sizes, request bodies, and the lossless
encoding of what a read returned (row groups), shared by the workload (which records it) and the
checker (which judges it).

Owns the shape of a batch: batch k has `n` records `b{k}-{i}` (0 <= i < n), every one carrying
metadata {"batch": k, "version": v}, where v is unique to the write that sent it. Sizes are
multiples of `BATCH_SIZE_STEP` so that a count that shows part of a batch is almost always a
count no set of whole batches can make (see batch_checker). It must not send requests (the
workload does) nor judge what was read (batch_checker does).

Why an encoding: a read of a few thousand rows recorded id by id would make the history tens of
MB. A read is recorded instead as row groups: for each (batch of the id, batch of the metadata,
version of the metadata), the sorted indices i as inclusive ranges; ids that do not follow the
`b{k}-{i}` scheme and ids returned twice are kept as they came. Nothing is dropped: the checker
sees every row.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

ID_PATTERN = re.compile(r"^b([0-9]+)-([0-9]+)$")
BATCH_SIZE_STEP = 10
BATCH_SIZE_MIN = 50
BATCH_SIZE_MAX = 500
EMBEDDING_DIM = 2
REFUSED_HOWS = ("mixed-dimensions", "wrong-dimension")

Group = list[Any]  # [id batch, metadata batch, metadata version, [[lo, hi], ...]]


def batch_size(rng: random.Random, smallest: int = BATCH_SIZE_MIN, largest: int = BATCH_SIZE_MAX) -> int:
    """A size in [smallest, largest], a multiple of BATCH_SIZE_STEP."""
    return BATCH_SIZE_STEP * rng.randint(smallest // BATCH_SIZE_STEP, largest // BATCH_SIZE_STEP)


def record_ids(batch: int, n: int) -> list[str]:
    return [f"b{batch}-{i}" for i in range(n)]


def _embedding(i: int, version: int, dim: int) -> list[float]:
    return [float(i % 1000) / 1000.0, float(version % 1000)] + [0.5] * (dim - 2)


def write_body(batch: int, n: int, version: int, refused_how: str | None = None) -> dict[str, Any]:
    """An add or upsert of the whole batch. `refused_how`: `mixed-dimensions` gives the last
    record a third dimension (Chroma refuses the request before anything is proposed);
    `wrong-dimension` gives every record three (the collection holds two: refused by the state
    machine, on every replica)."""
    dims = [EMBEDDING_DIM] * n
    if refused_how == "mixed-dimensions":
        dims[-1] = EMBEDDING_DIM + 1
    elif refused_how == "wrong-dimension":
        dims = [EMBEDDING_DIM + 1] * n
    elif refused_how is not None:
        raise ValueError(f"unknown refusal {refused_how!r} (known: {', '.join(REFUSED_HOWS)})")
    return {"ids": record_ids(batch, n),
            "embeddings": [_embedding(i, version, dims[i]) for i in range(n)],
            "metadatas": [{"batch": batch, "version": version}] * n}


def delete_body(batch: int, n: int, by: str) -> dict[str, Any]:
    """A delete of the whole batch, by its ids or by `where {"batch": k}`."""
    if by == "ids":
        return {"ids": record_ids(batch, n)}
    if by == "where":
        return {"where": {"batch": batch}}
    raise ValueError(f"unknown delete selector {by!r}")


def _ranges(indices: Sequence[int]) -> list[list[int]]:
    """Sorted distinct indices as inclusive ranges: [0, 1, 2, 5] -> [[0, 2], [5, 5]]."""
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


def _meta_int(metadata: Any, key: str) -> Any:
    """The metadata's value for `key` if the row has metadata, else None."""
    return metadata.get(key) if isinstance(metadata, dict) else None


def encode_rows(ids: Sequence[str], metadatas: Sequence[Any] | None) -> dict[str, Any]:
    """What a `get` returned, as row groups (see the module docstring). Lossless."""
    metadatas = list(metadatas) if metadatas is not None else [None] * len(ids)
    groups: dict[tuple[Any, Any, Any], list[int]] = {}
    other: list[list[Any]] = []
    duplicates: list[list[Any]] = []
    seen: set[str] = set()
    for record_id, metadata in zip(ids, metadatas, strict=True):
        match = ID_PATTERN.match(record_id) if isinstance(record_id, str) else None
        if record_id in seen or match is None:
            (duplicates if record_id in seen else other).append([record_id, metadata])
            continue
        seen.add(record_id)
        key = (int(match.group(1)), _meta_int(metadata, "batch"), _meta_int(metadata, "version"))
        groups.setdefault(key, []).append(int(match.group(2)))
    encoded = [[b, mb, mv, _ranges(sorted(ix))] for (b, mb, mv), ix in
               sorted(groups.items(), key=lambda kv: (kv[0][0], repr(kv[0][1:])))]
    return {"rows": len(ids), "groups": encoded, "other": other, "duplicates": duplicates}


def groups_by_batch(encoded: dict[str, Any]) -> dict[int, list[Group]]:
    """The recorded groups of a read, by the batch their ids belong to."""
    by_batch: dict[int, list[Group]] = {}
    for group in encoded.get("groups", []):
        by_batch.setdefault(int(group[0]), []).append(group)
    return by_batch
