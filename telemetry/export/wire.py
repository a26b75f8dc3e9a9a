"""Protobuf wire-format pieces, for the places that write messages as bytes directly."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """A base-128 varint; negative numbers as their 64-bit two's complement, as protobuf writes int64."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    """A field's key: wire type 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32."""
    return varint((field << 3) | wire_type)


def length_delimited(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return key + varint(len(payload)) + payload
