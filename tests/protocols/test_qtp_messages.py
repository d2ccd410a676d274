"""qtp wire format: round trips, incremental decoding, strict rejection of malformed input."""

from __future__ import annotations

import hashlib
import json
import random
import struct

import pytest

from protocols.qtp import messages as m
from protocols.qtp.messages import ErrorCode, ProtocolViolation, QtpError


class Collect(m.FrameHandler):
    def __init__(self):
        self.events = []
        self.cur = None

    def on_message(self, msg):
        self.events.append(("msg", msg))

    def on_chunk_start(self, index, offset, length, digest):
        self.cur = bytearray()
        self.events.append(("start", index, offset, length, digest))

    def on_chunk_data(self, data):
        self.cur += bytes(data)

    def on_chunk_end(self):
        self.events.append(("data", bytes(self.cur)))
        self.events.append(("end",))


ALL = {m.REQUEST, m.RESPONSE, m.ERROR, m.LISTING, m.END, m.RESULT, m.CHUNK}


def decode_all(data: bytes, splits=None, allowed=ALL):
    h = Collect()
    d = m.FrameDecoder(h, allowed)
    if splits is None:
        d.feed(data)
    else:
        pos = 0
        for n in splits:
            d.feed(data[pos : pos + n])
            pos += n
        d.feed(data[pos:])
    d.eof()
    return h.events


def sample_stream() -> tuple[bytes, list]:
    data1 = bytes(range(256)) * 20
    data2 = b"x" * 5000
    msgs = [
        m.Request(
            op="get",
            path="dir/file.bin",
            chunk_size=65536,
            chunks=[(0, 3), (5, 9)],
            expect={"size": 10, "mtime_ns": 5},
            cc="bbr",
        ),
        m.Response(size=12345, mtime_ns=99, chunk_size=4096, chunks=[(0, 4)]),
    ]
    out = b"".join(m.encode(x) for x in msgs)
    out += m.encode_chunk_header(0, 0, len(data1), hashlib.sha256(data1).digest()) + data1
    out += m.encode_chunk_header(7, 7 * 65536, len(data2), None) + data2
    tail = [
        m.End(sha256="a" * 64, bytes=3),
        m.Result(ok=False, missing=[(1, 2)], bins=[1, 2, 3], i0=-2),
        m.Listing([m.Entry("a/b", "file", 3, 4), m.Entry("a", "dir", 0, 1)]),
        m.Error(403, "no"),
    ]
    out += b"".join(m.encode(x) for x in tail)
    return out, [*msgs, data1, data2, *tail]


def test_round_trip_all_message_types():
    data, expect = sample_stream()
    ev = decode_all(data)
    msgs = [e[1] for e in ev if e[0] == "msg"]
    assert msgs[0] == expect[0]
    assert msgs[1] == expect[1]
    assert msgs[2:] == expect[4:]
    chunks = [e for e in ev if e[0] in ("start", "data")]
    assert chunks[0][:4] == ("start", 0, 0, len(expect[2]))
    assert chunks[0][4] == hashlib.sha256(expect[2]).digest()
    assert chunks[1] == ("data", expect[2])
    assert chunks[2] == ("start", 7, 7 * 65536, len(expect[3]), None)
    assert chunks[3] == ("data", expect[3])


@pytest.mark.parametrize("seed", range(8))
def test_decoder_is_independent_of_how_the_stream_is_split(seed):
    data, _ = sample_stream()
    whole = decode_all(data)
    rng = random.Random(seed)
    splits = [rng.choice([1, 2, 3, 5, 17, 100, 1500]) for _ in range(len(data) // 50)]
    assert decode_all(data, splits) == whole


def test_byte_by_byte():
    data, _ = sample_stream()
    assert decode_all(data, [1] * len(data)) == decode_all(data)


def frame(ftype: int, body: bytes) -> bytes:
    return struct.pack(">BI", ftype, len(body)) + body


def req(obj) -> bytes:
    return frame(m.REQUEST, json.dumps(obj).encode())


BAD_REQUESTS = [
    b"not json",
    b"[1, 2]",
    b'{"v": 1, "op": "get", "v": 1}',  # duplicate key
    b'{"v": 1, "op": "sink", "size": NaN, "seed": 1, "chunk_size": 4096}',
    b"\xff\xfe",
    b"[" * 100000 + b"]" * 100000,  # nesting bomb
    json.dumps({"v": 1, "op": "nope"}).encode(),
    json.dumps({"op": "stat", "path": "a"}).encode(),  # no version
    json.dumps({"v": 1, "op": "stat", "path": "a", "extra": 1}).encode(),
    json.dumps({"v": 1, "op": "stat", "path": 5}).encode(),
    json.dumps({"v": 1, "op": "get", "path": "a", "chunk_size": True}).encode(),
    json.dumps({"v": 1, "op": "get", "path": "a", "chunk_size": 100}).encode(),
    json.dumps({"v": 1, "op": "get", "path": "a", "chunk_size": 4096, "chunks": [[3, 2]]}).encode(),
    json.dumps({"v": 1, "op": "get", "path": "a", "chunk_size": 4096, "chunks": [[0, 2], [1, 3]]}).encode(),
    json.dumps({"v": 1, "op": "get", "path": "a", "chunk_size": 4096, "chunks": [[0, 2, 3]]}).encode(),
    json.dumps(
        {"v": 1, "op": "get", "path": "a", "chunk_size": 4096, "expect": {"size": -1, "mtime_ns": 0}}
    ).encode(),
    json.dumps({"v": 1, "op": "put", "path": "a", "size": 2**60, "chunk_size": 4096}).encode(),
    json.dumps({"v": 1, "op": "sink", "size": 10, "seed": -1, "chunk_size": 4096}).encode(),
    json.dumps(
        {"v": 1, "op": "sink", "size": 10, "seed": 1, "chunk_size": 4096, "chunks": [[0, 2]]}
    ).encode(),
    json.dumps({"v": 1, "op": "stat", "path": "a", "cc": "vegas"}).encode(),
    json.dumps({"v": 1, "op": "gen", "size": 10, "seed": 1, "chunk_size": 4096, "start": 1.0}).encode(),
]


@pytest.mark.parametrize("body", BAD_REQUESTS)
def test_malformed_requests_are_protocol_violations(body):
    with pytest.raises(QtpError) as ei:
        decode_all(frame(m.REQUEST, body))
    assert ei.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNSUPPORTED)


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "/etc/passwd", "a\x00b", "..", "a\\..\\b"])
def test_traversal_paths_are_forbidden(path):
    with pytest.raises(QtpError) as ei:
        decode_all(req({"v": 1, "op": "stat", "path": path}))
    assert ei.value.code == ErrorCode.FORBIDDEN


def test_paths_are_normalised():
    ev = decode_all(req({"v": 1, "op": "stat", "path": "./a//b/./c/"}))
    assert ev[0][1].path == "a/b/c"
    assert decode_all(req({"v": 1, "op": "list", "path": ""}))[0][1].path == ""


def test_wrong_protocol_version_is_unsupported():
    with pytest.raises(QtpError) as ei:
        decode_all(req({"v": 2, "op": "stat", "path": "a"}))
    assert ei.value.code == ErrorCode.UNSUPPORTED


def test_unexpected_and_unknown_frame_types():
    with pytest.raises(ProtocolViolation, match="unexpected frame"):
        decode_all(m.encode(m.End()), allowed={m.REQUEST})
    with pytest.raises(ProtocolViolation, match="unexpected frame"):
        decode_all(frame(0x7F, b"{}"))


def test_oversized_control_frame_rejected_before_buffering():
    h = Collect()
    d = m.FrameDecoder(h, ALL)
    with pytest.raises(ProtocolViolation, match="exceeds"):
        d.feed(struct.pack(">BI", m.REQUEST, m.MAX_CONTROL + 1))


def test_chunk_frame_checks():
    with pytest.raises(ProtocolViolation, match="out of range"):
        decode_all(struct.pack(">BI", m.CHUNK, 3) + b"abc")
    with pytest.raises(ProtocolViolation, match="out of range"):
        decode_all(struct.pack(">BI", m.CHUNK, m.MAX_CHUNK_FRAME + 1))
    with pytest.raises(ProtocolViolation, match="flags"):
        decode_all(frame(m.CHUNK, m.CHUNK_HEADER.pack(0, 0, 0x80) + b"data"))
    with pytest.raises(ProtocolViolation, match="digest"):
        decode_all(frame(m.CHUNK, m.CHUNK_HEADER.pack(0, 0, 1) + b"short"))


def test_stream_ending_mid_frame():
    data = m.encode(m.Request(op="stat", path="a"))
    with pytest.raises(ProtocolViolation, match="middle"):
        decode_all(data[:-1])
    with pytest.raises(ProtocolViolation, match="middle"):
        decode_all(m.encode_chunk_header(0, 0, 100, None) + b"x" * 99)


def test_listing_with_hostile_path_is_a_violation():
    body = json.dumps({"entries": [["../../etc/passwd", "file", 1, 1]]}).encode()
    with pytest.raises(ProtocolViolation, match="bad entry path"):
        decode_all(frame(m.LISTING, body))


def test_result_and_response_validation():
    with pytest.raises(ProtocolViolation):
        decode_all(frame(m.RESULT, b'{"ok": 1}'))
    with pytest.raises(ProtocolViolation):
        decode_all(frame(m.RESULT, b'{"ok": true, "bins": [-1]}'))
    with pytest.raises(ProtocolViolation):
        decode_all(frame(m.RESPONSE, b'{"sha256": "XYZ"}'))
    with pytest.raises(ProtocolViolation):
        decode_all(frame(m.RESPONSE, b'{"type": "socket"}'))
    with pytest.raises(ProtocolViolation):
        decode_all(frame(m.END, b'{"sha256": "' + b"g" * 64 + b'"}'))


def test_error_codes_and_messages():
    e = QtpError(ErrorCode.NOT_FOUND, "x missing")
    assert "NOT_FOUND" in str(e) and e.code == 404
    assert str(QtpError(999, "odd")).startswith("999")
    err = m.Error(403, "nope")
    assert decode_all(m.encode(err))[0][1].exception().code == 403


def test_random_garbage_never_crashes_the_decoder():
    """Whatever the bytes, the decoder either accepts them or raises QtpError."""
    rng = random.Random(1)
    valid, _ = sample_stream()
    for i in range(3000):
        if i % 2:
            data = rng.randbytes(rng.randint(0, 300))
        else:  # mutate a valid stream
            data = bytearray(valid[: rng.randint(0, len(valid))])
            for _ in range(rng.randint(1, 5)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        try:
            decode_all(data)
        except QtpError:
            pass
