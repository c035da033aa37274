"""The log-entry format: golden bytes keep old entries decodable; corruption is detected."""

from __future__ import annotations

import numpy as np
import pytest

from raftchroma.command import (
    Barrier, CorruptEntry, Proposal, WriteRecords, decode_entry, encode_entry, pack_embeddings, unpack_embeddings,
)

# Version 1 entry for one add; never change these bytes: entries in existing logs look like this.
GOLDEN_V1_ADD = bytes.fromhex(
    "82a17601a36f7073918aa46b696e64a3616464a3726964c41001010101010101010101010101010101a674656e616e74a174"
    "a86461746162617365a164ad636f6c6c656374696f6e5f6964a163a369647391a161aa656d62656464696e677383a16e01a3"
    "64696d02a3663332c4080000803f00000040a96d65746164617461739181a16b01a9646f63756d656e7473c0a475726973c0"
)


def test_golden_v1_entry_still_decodes() -> None:
    (proposal,) = decode_entry(GOLDEN_V1_ADD)
    op = proposal.op
    assert isinstance(op, WriteRecords) and op.kind == "add" and proposal.rid == b"\x01" * 16
    assert op.ids == ["a"] and op.metadatas == [{"k": 1}] and proposal.request_id is None
    assert unpack_embeddings(op.embeddings).tolist() == [[1.0, 2.0]]


def test_encoding_is_stable() -> None:
    op = WriteRecords(kind="add", tenant="t", database="d", collection_id="c", ids=["a"],
                      embeddings=pack_embeddings([[1.0, 2.0]]), metadatas=[{"k": 1}], documents=None, uris=None)
    assert encode_entry([Proposal(op, rid=b"\x01" * 16)]) == GOLDEN_V1_ADD


def test_one_entry_carries_several_requests() -> None:
    proposals = [Proposal(Barrier(), rid=bytes([i]) * 16) for i in range(3)]
    assert decode_entry(encode_entry(proposals)) == proposals


def test_embeddings_travel_as_float32_bytes() -> None:
    vectors = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    packed = pack_embeddings(vectors)
    assert packed["n"] == 3 and packed["dim"] == 4 and len(packed["f32"]) == 3 * 4 * 4
    assert np.array_equal(unpack_embeddings(packed), vectors.astype(np.float32))
    assert pack_embeddings(None) is None and unpack_embeddings(None) is None


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81\xa1v\x02", b"\x82\xa1v\x01\xa3ops\x91\x81\xa4kind\xa3bad"])
def test_undecodable_entries_are_corruption(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode_entry(data)


def test_unknown_kind_is_corruption() -> None:
    with pytest.raises(CorruptEntry):
        decode_entry(b"\x82\xa1v\x01\xa3ops\x91\x82\xa4kind\xaedrop_everything\xa3rid\xc4\x01x")
