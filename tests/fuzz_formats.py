"""Structure-aware mutations of the files latentforge reads, as Hypothesis strategies over plain data.

A case is a list of mutations (tuples) drawn here and applied by `mutate_*` to a valid seed file's
parsed form, then serialized; byte-level mutations (truncate, flip, splice, random) apply to any format.
Shared by tests/test_fuzz.py (CI-sized runs) and benchmarks/fuzz.py (long runs).
"""
from __future__ import annotations

import json
import struct
import zlib

from hypothesis import strategies as st

BIG = [2**31, 2**32 + 7, 2**40, 2**63 - 1, 2**64 - 1]
ints = st.one_of(st.integers(-3, 300), st.sampled_from(BIG), st.integers(-2**70, 2**70))
text = st.one_of(st.text(max_size=40), st.sampled_from(["", "{", "[1, 2", "nan", "Infinity", "null", "[]", "{}",
                                                        "\x00", "[1e999, 2]", '"vae"', "1e400", "-0"]))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), ints, st.floats(), st.text(max_size=12)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=8)
json_text = st.one_of(text, json_values.map(lambda v: json.dumps(v, allow_nan=True)))

# Byte-level mutations, for every format.
byte_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("splice"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("random"), st.binary(max_size=256)),
)


def apply_bytes(data: bytes, mutation) -> bytes:
    op = mutation[0]
    where = int(mutation[1] * len(data)) if op != "random" else 0
    if op == "truncate":
        return data[:where]
    if op == "flip":
        return data[:where] + bytes([mutation[2]]) + data[where + 1:] if data else data
    if op == "splice":
        return data[:where] + mutation[2] + data[where + len(mutation[2]):]
    return mutation[1]


# --- safetensors: 8-byte header length, JSON header {name: {dtype, shape, data_offsets}, __metadata__}, data.

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "I8", "BOOL", "F8_E4M3", "U64", "C64", "X9", "", 3]


def safetensors_mutation(meta_keys: list[str]):
    index = st.integers(0, 10_000)
    return st.one_of(
        st.tuples(st.just("header_len"), st.one_of(ints, st.integers(0, 2**64 - 1))),
        st.tuples(st.just("dtype"), index, st.sampled_from(DTYPES)),
        st.tuples(st.just("shape"), index, st.one_of(st.lists(ints, max_size=5), json_values)),
        st.tuples(st.just("offsets"), index, st.one_of(st.lists(ints, min_size=2, max_size=2), json_values)),
        st.tuples(st.just("overlap"), index, index),
        st.tuples(st.just("shift"), index, st.integers(-64, 64)),   # same length, moved: a gap or an overlap
        st.tuples(st.just("duplicate"), index),
        st.tuples(st.just("meta"), st.one_of(st.sampled_from(meta_keys), st.text(max_size=12)), json_text),
        st.tuples(st.just("meta_config"), st.sampled_from(["kind", "latent_dim", "image_size", "channels",
                                                           "base_channels", "value_range", "nonsense"]), json_values),
        st.tuples(st.just("drop_meta"), st.sampled_from(meta_keys)),
        st.tuples(st.just("meta_whole"), json_values),
        st.tuples(st.just("nonfinite"), index, st.sampled_from([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f",
                                                                b"\x00\x00\x80\xff"])),
        st.tuples(st.just("drop_tensor"), index),
        st.tuples(st.just("rename"), index, st.one_of(st.text(max_size=24), st.sampled_from(
            ["opt0.0.exp_avg", "opt0.-1.step", "opt0.99.exp_avg", "opt9.0.exp_avg", "model", "ema.x", "opt0.0"]))),
        st.tuples(st.just("bytes"), byte_mutation),
    )


def parse_safetensors(data: bytes) -> dict:
    n = struct.unpack("<Q", data[:8])[0]
    return {"entries": list(json.loads(data[8:8 + n]).items()), "data": data[8 + n:], "header_len": None,
            "after": []}


def safetensors_bytes(parsed: dict) -> bytes:
    header = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in parsed["entries"]) + "}").encode()
    header_len = len(header) if parsed["header_len"] is None else parsed["header_len"]
    data = struct.pack("<Q", header_len % 2**64) + header + parsed["data"]
    for mutation in parsed["after"]:
        data = apply_bytes(data, mutation)
    return data


def mutate_safetensors(parsed: dict, mutation) -> None:
    op, entries = mutation[0], parsed["entries"]
    tensors = [i for i, (k, _) in enumerate(entries) if k != "__metadata__"]
    meta_at = next((i for i, (k, _) in enumerate(entries) if k == "__metadata__"), None)
    pick = (lambda i: tensors[i % len(tensors)]) if tensors else None
    if op == "header_len":
        parsed["header_len"] = mutation[1]
    elif op in ("dtype", "shape", "offsets") and tensors:
        key = {"dtype": "dtype", "shape": "shape", "offsets": "data_offsets"}[op]
        name, entry = entries[pick(mutation[1])]
        entries[pick(mutation[1])] = (name, {**entry, key: mutation[2]})
    elif op == "overlap" and tensors:
        name, entry = entries[pick(mutation[1])]
        entries[pick(mutation[1])] = (name, {**entry, "data_offsets": entries[pick(mutation[2])][1]["data_offsets"]})
    elif op == "shift" and tensors:
        name, entry = entries[pick(mutation[1])]
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if isinstance(offsets, list) and len(offsets) == 2 and all(type(v) is int for v in offsets):
            entries[pick(mutation[1])] = (name, {**entry, "data_offsets": [v + mutation[2] for v in offsets]})
    elif op == "duplicate" and tensors:
        entries.append(entries[pick(mutation[1])])
    elif op == "drop_tensor" and tensors:
        del entries[pick(mutation[1])]
    elif op == "rename" and tensors:   # by position, or the tensor of that name
        at = next((i for i in tensors if entries[i][0] == mutation[1]), None) if isinstance(mutation[1], str) \
            else pick(mutation[1])
        if at is not None:
            entries[at] = (mutation[2], entries[at][1])
    elif op == "nonfinite" and tensors:
        entry = entries[pick(mutation[1])][1]
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (entry.get("dtype") == "F32" and isinstance(offsets, list) and len(offsets) == 2
                and all(type(v) is int for v in offsets) and 0 <= offsets[0] < offsets[1] <= len(parsed["data"])):
            data = parsed["data"]
            parsed["data"] = data[:offsets[0]] + mutation[2] + data[offsets[0] + 4:]
    elif op in ("meta", "meta_config", "drop_meta", "meta_whole"):
        if meta_at is None:
            entries.append(("__metadata__", {}))
            meta_at = len(entries) - 1
        meta = entries[meta_at][1]
        if op == "meta_whole":
            entries[meta_at] = ("__metadata__", mutation[1])
        elif not isinstance(meta, dict):
            return
        elif op == "meta":
            meta[mutation[1]] = mutation[2]
        elif op == "drop_meta":
            meta.pop(mutation[1], None)
        else:
            key = "latentforge.config"
            try:
                config = json.loads(meta.get(key, "{}"))
            except (ValueError, TypeError):
                config = {}
            if isinstance(config, dict):
                config[mutation[1]] = mutation[2]
                meta[key] = json.dumps(config)
            if mutation[1] == "kind":
                meta["latentforge.kind"] = str(mutation[2])
    elif op == "bytes":
        parsed["after"].append(mutation[1])


# --- PNG: chunks (length, type, data, crc). JPEG and anything else: bytes only.

png_mutation = st.one_of(
    st.tuples(st.just("size"), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("bomb"), st.integers(20_000, 100_000)),
    st.tuples(st.just("depth"), st.sampled_from([0, 1, 2, 4, 8, 16, 3, 255]), st.sampled_from([0, 2, 3, 4, 6, 1, 7])),
    st.tuples(st.just("drop_chunk"), st.integers(0, 20)),
    st.tuples(st.just("dup_chunk"), st.integers(0, 20)),
    st.tuples(st.just("chunk_len"), st.integers(0, 20), st.sampled_from(BIG[:2] + [0, 1, 12, 2**31 - 1])),
    st.tuples(st.just("text"), st.binary(max_size=64)),
    st.tuples(st.just("bytes"), byte_mutation),
)


def png_chunks(data: bytes) -> list[list]:
    chunks, at = [], 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append([kind, data[at + 8:at + 8 + length], None])
        at += 12 + length
    return chunks


def png_bytes(chunks: list[list]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body, length in chunks:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        out += struct.pack(">I", len(body) if length is None else length % 2**32) + kind + body + struct.pack(">I", crc)
    return out


def mutate_png(chunks: list[list], mutation) -> None:
    op = mutation[0]
    ihdr = chunks[0] if chunks and chunks[0][0] == b"IHDR" and len(chunks[0][1]) == 13 else None
    if op in ("size", "bomb") and ihdr:
        width, height = (mutation[1], mutation[2]) if op == "size" else (mutation[1], mutation[1])
        ihdr[1] = struct.pack(">II", width, height) + ihdr[1][8:]
    elif op == "depth" and ihdr:
        ihdr[1] = ihdr[1][:8] + bytes([mutation[1], mutation[2]]) + ihdr[1][10:]
    elif op == "drop_chunk" and chunks:
        del chunks[mutation[1] % len(chunks)]
    elif op == "dup_chunk" and chunks:
        i = mutation[1] % len(chunks)
        chunks.insert(i, list(chunks[i]))
    elif op == "chunk_len" and chunks:
        chunks[mutation[1] % len(chunks)][2] = mutation[2]
    elif op == "text":
        chunks.insert(1, [b"tEXt", b"Comment\x00" + mutation[1], None])
