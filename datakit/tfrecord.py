"""TFRecord files and `tf.train.Example` protos, written without importing TensorFlow.

Why: importing TensorFlow costs ~500 MB of resident memory and seconds of start-up, which
would dominate a streaming converter. The formats are small and stable:
- a record is `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`;
- an Example is `Features{ map<string, Feature> }` with BytesList / Int64List values.
Features are serialised in sorted key order, so output is byte-for-byte reproducible and equal
to TensorFlow's `SerializeToString(deterministic=True)` (checked in the tests; protobuf's upb
backend orders a key after the longer keys it prefixes, and no build-utk key prefixes another).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterable, Mapping

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as it is stored: length, its checksum, the data, its checksum."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def write_record(f: BinaryIO, data: bytes) -> int:
    """Append one framed record; returns the number of bytes written."""
    return f.write(frame(data))


def read_records(path) -> Iterable[bytes]:
    """Iterate the records of a TFRecord file, verifying both checksums."""
    with open(path, "rb") as f:
        while True:
            header = f.read(8)
            if not header:
                return
            if len(header) < 8:
                raise ValueError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header)
            crc = f.read(4)
            if len(crc) < 4:
                raise ValueError(f"{path}: truncated record header")
            if struct.unpack("<I", crc)[0] != masked_crc32c(header):
                raise ValueError(f"{path}: corrupt record length checksum")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise ValueError(f"{path}: truncated record")
            if struct.unpack("<I", tail)[0] != masked_crc32c(data):
                raise ValueError(f"{path}: corrupt record data checksum")
            yield data


_SMALL = [bytes([i]) for i in range(128)]  # one-byte varints: tags, lengths < 128, small labels


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return b"".join((_varint(number << 3 | 2), _varint(len(payload)), payload))


def _feature(value) -> bytes:
    if isinstance(value, int):
        return _field(3, _field(1, _varint(value)))  # Feature.int64_list, packed
    if isinstance(value, (bytes, bytearray, str)):
        value = [value]
    values = list(value)
    if values and isinstance(values[0], (bytes, bytearray, str)):
        items = b"".join(_field(1, v.encode() if isinstance(v, str) else bytes(v)) for v in values)
        return _field(1, items)  # Feature.bytes_list
    if values and isinstance(values[0], float):
        packed = struct.pack(f"<{len(values)}f", *values)
        return _field(2, _field(1, packed))  # Feature.float_list, packed
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed) if values else b"")  # Feature.int64_list, packed


_KEYS: dict[str, bytes] = {}  # feature name -> its encoded map key field, computed once per name
_SMALL_INTS: dict[tuple[str, int], bytes] = {}  # (name, small int) -> whole map entry: sizes, labels, ages repeat


def _entry(key: str, value) -> bytes:
    """One `map<string, Feature>` entry."""
    name = _KEYS.get(key)
    if name is None:
        name = _KEYS[key] = _field(1, key.encode())
    if type(value) is int and 0 <= value < 1024:
        cached = _SMALL_INTS.get((key, value))
        if cached is None:
            cached = _SMALL_INTS[(key, value)] = _field(1, name + _field(2, _feature(value)))
        return cached
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):  # one bytes value (e.g. the JPEG): headers first, payload copied once
        n1 = len(value)
        n2 = 1 + len(_varint(n1)) + n1  # BytesList{value}
        n3 = 1 + len(_varint(n2)) + n2  # Feature{bytes_list}
        return b"".join((b"\x0a", _varint(len(name) + 1 + len(_varint(n3)) + n3), name, b"\x12", _varint(n3),
                         b"\x0a", _varint(n2), b"\x0a", _varint(n1), value))
    return _field(1, name + _field(2, _feature(value)))


def encode_example(features: Mapping[str, object]) -> bytes:
    """Serialise a tf.train.Example. Values: bytes/str (or lists of them), ints, floats (or lists)."""
    return _field(1, b"".join([_entry(key, features[key]) for key in sorted(features)]))


def parse_example(data: bytes) -> dict[str, list]:
    """Decode an Example written by `encode_example` (for tests and tools that avoid TensorFlow)."""

    def read_varint(buf, pos):
        shift = result = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7

    def fields(buf):
        pos = 0
        while pos < len(buf):
            key, pos = read_varint(buf, pos)
            if key & 7 != 2:
                raise ValueError("unexpected wire type")
            length, pos = read_varint(buf, pos)
            yield key >> 3, bytes(buf[pos:pos + length])
            pos += length

    out: dict[str, list] = {}
    for _, feats in fields(data):
        for _, entry in fields(feats):
            parts = dict(fields(entry))
            name = parts[1].decode()
            for kind, payload in fields(parts.get(2, b"")):
                inner = dict(fields(payload)) if kind != 1 else None
                if kind == 1:
                    out[name] = [v for _, v in fields(payload)]
                elif kind == 3:
                    vals, pos, raw = [], 0, inner.get(1, b"")
                    while pos < len(raw):
                        v, pos = read_varint(raw, pos)
                        vals.append(v - (1 << 64) if v >= 1 << 63 else v)
                    out[name] = vals
                else:
                    raw = inner.get(1, b"")
                    out[name] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
            out.setdefault(name, [])
    return out
