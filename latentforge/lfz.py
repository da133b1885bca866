"""The `.lfz` container of latentforge's codec: a small binary header, the entropy-coded payload, a checksum.

    offset  size  field
    0       3     magic b"LFZ"
    3       1     version (1)
    4       1     operating point (an index into runtime/codec.py's POINTS)
    5       8     fingerprint: the first 8 bytes of BLAKE2b over the weights that decode (decoder, codebook, prior)
    13      var   image count, height, width, channels: four unsigned LEB128 varints
    ..      4     CRC32 of the decoded code values (catches a prior that disagreed with the encoder's)
    ..      var   payload: the range coder's 32-bit words, little-endian
    end-4   4     CRC32 of everything before it

Every field is checked before anything is decoded; a stream that fails any check is a StreamError of one line.
The header is ~22 bytes: at 64x64 that is 0.04 bits per pixel for a file of one image, counted in every rate.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from .errors import StreamError

MAGIC = b"LFZ"
VERSION = 1
FINGERPRINT_BYTES = 8
MAX_IMAGES = 1 << 20
MAX_SIDE = 4096


@dataclass(frozen=True)
class Header:
    point: int
    fingerprint: bytes
    count: int
    shape: tuple[int, int, int]   # H, W, C
    codes_crc: int


def fingerprint(tensors: dict) -> bytes:
    """BLAKE2b over named arrays (sorted names, dtype, shape, bytes): the same for the same weights on any machine."""
    digest = hashlib.blake2b(digest_size=FINGERPRINT_BYTES)
    for name in sorted(tensors):
        a = tensors[name]
        digest.update(f"{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        digest.update(a.tobytes())
    return digest.digest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 35, 7):
        if at >= len(data):
            raise StreamError("the .lfz stream ends inside its header (truncated); compress the images again")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
    raise StreamError("the .lfz header has a malformed number (corrupted stream); compress the images again")


def pack(header: Header, payload: bytes) -> bytes:
    body = (MAGIC + bytes([VERSION, header.point]) + header.fingerprint
            + b"".join(_varint(v) for v in (header.count, *header.shape))
            + header.codes_crc.to_bytes(4, "little") + payload)
    return body + zlib.crc32(body).to_bytes(4, "little")


def unpack(data) -> tuple[Header, bytes]:
    """(header, payload) of a whole .lfz stream; StreamError for anything that is not one, intact."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StreamError(f"decompress takes the bytes of a .lfz stream, got {type(data).__name__}")
    data = bytes(data)
    if data[:3] != MAGIC:
        raise StreamError(f"not a latentforge .lfz stream (it starts with {data[:3]!r}, not {MAGIC!r})")
    if len(data) < 4 or data[3] != VERSION:
        got = data[3] if len(data) > 3 else "none"
        raise StreamError(f".lfz version {got} is not one this latentforge reads (it reads {VERSION}); "
                          "decompress it with the latentforge that wrote it")
    if len(data) < 5 + FINGERPRINT_BYTES + 4 + 4 + 4:
        raise StreamError(f"the .lfz stream is {len(data)} bytes, shorter than any header (truncated)")
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise StreamError(f"the .lfz stream of {len(data)} bytes fails its CRC32 (truncated or corrupted); "
                          "compress the images again")
    point, fp = data[4], data[5:5 + FINGERPRINT_BYTES]
    at = 5 + FINGERPRINT_BYTES
    fields = []
    for _ in range(4):
        value, at = _read_varint(data, at)
        fields.append(value)
    count, h, w, c = fields
    if not 1 <= count <= MAX_IMAGES or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE) or c not in (1, 3):
        raise StreamError(f"the .lfz header says {count} images of {h}x{w}x{c}, which no latentforge codec writes "
                          "(corrupted stream)")
    if at + 4 > len(data) - 4:
        raise StreamError("the .lfz stream ends inside its header (truncated); compress the images again")
    crc = int.from_bytes(data[at:at + 4], "little")
    payload = data[at + 4:-4]
    if len(payload) % 4:
        raise StreamError(f"the .lfz payload is {len(payload)} bytes, not whole 32-bit words (corrupted stream)")
    return Header(point, fp, count, (h, w, c), crc), payload
