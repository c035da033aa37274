"""How the store classifies Chroma's failures: by type and by probing the file system, never by
the message text (which a client can choose). Real embedded Chroma; the full and read-only file
systems are real tmpfs mounts."""

from __future__ import annotations

import gc
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from chromadb import errors as chroma_errors

from raftchroma.result import Refused, StoreFault, StoreUnavailable
from raftchroma.store import Store
from tests.conftest import small_tmpfs

TEXTS = ["disk is full", "database or disk is full", "no space left on device", "I/O error", "readonly database"]


@pytest.mark.parametrize("text", TEXTS)
def test_an_internal_error_on_a_healthy_disk_is_a_fault_whatever_it_says(tmp_path: Path, text: str) -> None:
    store = Store(tmp_path / "node")
    with pytest.raises(StoreFault):
        with store._translated("create_tenant"):
            raise chroma_errors.InternalError(text)


def test_typed_chroma_errors_are_refusals(tmp_path: Path) -> None:
    store = Store(tmp_path / "node")
    with pytest.raises(Refused) as refused:
        with store._translated("delete_collection"):
            raise chroma_errors.NotFoundError("disk is full")
    assert refused.value.result.status == 404 and refused.value.result.body["error"] == "NotFoundError"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs", "8m") as mount_point:
        yield mount_point


def test_an_internal_error_on_a_full_disk_is_unavailable(small_fs: Path) -> None:
    store = Store(small_fs / "node")
    assert store.environment_failure() is None
    with open(small_fs / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    with pytest.raises(StoreUnavailable):
        with store._translated("add"):
            raise chroma_errors.InternalError("anything at all")
    (small_fs / "filler").unlink()
    assert store.environment_failure() is None


def test_an_internal_error_on_a_read_only_disk_is_unavailable(small_fs: Path) -> None:
    store = Store(small_fs / "node")
    store.close()  # Chroma's open files would keep the file system from turning read-only
    gc.collect()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(StoreUnavailable):
            with store._translated("add"):
                raise chroma_errors.InternalError("anything at all")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)


def test_a_chroma_panic_is_a_fault_not_a_dead_thread(tmp_path: Path) -> None:
    """Collection metadata with an array value makes Chroma 1.5.9 panic (pyo3's PanicException is a
    BaseException): it must surface as StoreFault (the node stops, exit 72), never escape as a
    thread-killing exception. Validation before proposing keeps such metadata out of the log."""
    from raftchroma import state_machine
    from raftchroma.command import CreateCollection, Proposal, UpdateCollection

    store = Store(tmp_path / "node")
    created = state_machine.apply(store, Proposal(CreateCollection("default_tenant", "default_database", "abc", "c-1")), 1)
    assert created.result.status == 200
    with pytest.raises(StoreFault):
        state_machine.apply(store, Proposal(UpdateCollection("default_tenant", "default_database", "c-1",
                                                             new_metadata={"k": [1, 2.5]})), 2)


def test_a_create_cut_short_by_the_machine_is_finished_by_its_retry(tmp_path: Path) -> None:
    """The collection was made in Chroma, then the disk failed before num_threads was stored and
    the id mapped: the node retries the same op, which must finish the job (200, the op's id and
    num_threads), not answer 409 to itself."""
    from raftchroma import state_machine
    from raftchroma.command import CreateCollection, CreateDatabase, Proposal

    store = Store(tmp_path / "node")
    op = CreateCollection("default_tenant", "default_database", "abc", "c-1", hnsw_num_threads=7)
    real = store._set_num_threads

    def fail_once(col, op):  # type: ignore[no-untyped-def]
        store._set_num_threads = real
        raise StoreUnavailable("create_collection: No space left on device")
    store._set_num_threads = fail_once
    with pytest.raises(StoreUnavailable):
        state_machine.apply(store, Proposal(op), 1)
    outcome = state_machine.apply(store, Proposal(op), 1)
    assert outcome.result.status == 200 and outcome.result.body["id"] == "c-1"
    hnsw = outcome.result.body["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["hnsw"]
    assert hnsw["num_threads"] == 7

    store._bindings.create_database("half", "default_tenant")  # the op's first call, then the machine failed
    outcome = state_machine.apply(store, Proposal(CreateDatabase("default_tenant", "half", "db-1")), 2)
    assert outcome.result.status == 200
    assert store.get_database("default_tenant", "half").body["id"] == "db-1"
    again = state_machine.apply(store, Proposal(CreateDatabase("default_tenant", "half", "db-2")), 3)
    assert again.result.status == 409
