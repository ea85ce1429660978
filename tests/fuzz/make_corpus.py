#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz harnesses into tests/fuzz/corpus/<harness>/.

A few small valid inputs (Mamba checkpoints in several dtypes, configurations in both
forms, with and without `simulate` flags) and a few broken ones. Deterministic: running it
again rewrites the same bytes. Usage: python3 tests/fuzz/make_corpus.py
"""
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

PACK = {"F64": "<d", "F32": "<f"}


def encode(value, dtype):
    if dtype in PACK:
        return struct.pack(PACK[dtype], value)
    if dtype == "F16":
        return struct.pack("<e", value)
    if dtype == "BF16":  # the upper half of the F32 pattern, rounded to nearest even
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        bits += 0x7FFF + ((bits >> 16) & 1)
        return struct.pack("<H", (bits >> 16) & 0xFFFF)
    if dtype == "I64":
        return struct.pack("<q", int(value))
    raise ValueError(dtype)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, values row-major)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, values in tensors:
        assert len(values) == math.prod(shape)
        begin = len(data)
        data += b"".join(encode(v, dtype) for v in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, len(data)]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def values(n, seed):
    # A fixed, varied sequence in [-1, 1].
    return [math.sin(1.7 * (i + 1) + seed) for i in range(n)]


def mamba(prefix, d_inner, n, rank, dtype, seed=0.0):
    return [
        (prefix + "x_proj.weight", dtype, [rank + 2 * n, d_inner], values((rank + 2 * n) * d_inner, seed)),
        (prefix + "dt_proj.weight", dtype, [d_inner, rank], values(d_inner * rank, seed + 1)),
        (prefix + "dt_proj.bias", dtype, [d_inner], values(d_inner, seed + 2)),
        (prefix + "A_log", dtype, [d_inner, n], values(d_inner * n, seed + 3)),
        (prefix + "D", dtype, [d_inner], values(d_inner, seed + 4)),
    ]


def write(harness, name, content):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    assert len(content) < 20000, name
    with open(os.path.join(folder, name), "wb") as f:
        f.write(content)


def main():
    st = "fuzz_safetensors"
    write(st, "mamba_layer0_f32.safetensors",
          safetensors(mamba("backbone.layers.0.mixer.", 3, 2, 1, "F32"), {"format": "pt"}))
    write(st, "mamba_layers01_bf16.safetensors",
          safetensors(mamba("backbone.layers.0.mixer.", 2, 2, 1, "BF16")
                      + mamba("backbone.layers.1.mixer.", 2, 2, 1, "BF16", 5.0)))
    write(st, "mamba_bare_f16.safetensors", safetensors(mamba("", 4, 1, 2, "F16")))
    write(st, "mamba_f64_nonfinite.safetensors",
          safetensors([(n, d, s, v if n != "A_log" else [float("inf")] + v[1:])
                       for n, d, s, v in mamba("", 2, 1, 1, "F64")]))
    write(st, "dtypes.safetensors", safetensors([
        ("scalar", "F64", [], [2.5]),
        ("empty", "F32", [0, 3], []),
        ("ints", "I64", [2], [1, -2]),
        ("cube", "F16", [2, 1, 2], [0.5, -1.0, 65504.0, 6e-8]),
    ], {"note": "dtypes"}))
    good = safetensors(mamba("backbone.layers.0.mixer.", 2, 1, 1, "F32"))
    write(st, "broken_truncated.safetensors", good[:-5])
    write(st, "broken_header_length.safetensors", struct.pack("<Q", 1 << 40) + good[8:])
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    write(st, "broken_duplicate_key.safetensors", struct.pack("<Q", len(header)) + header + b"\0\0\x80\x3f")
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}\0junk'
    write(st, "broken_nul_shape.safetensors", struct.pack("<Q", len(header)) + header + b"\0\0\x80\x3f")

    one_d = '{"model": {"mu": 1, "s_delta": 0.5, "a": 1}, "tokens": [1.0, -0.5, 0.25]}'
    converge = '{"model": {"mu": -0.8, "s_delta": 0.7, "a": 1.0, "delta_bias": 0.1}, "tokens": [1, 2, -3]}'
    full = json.dumps({"model": {"S_B": [[1, 0.2], [0.1, -0.5]], "S_C": [[0.3, 1], [1, 0.4]],
                                 "S_Delta": [[0.5, 0], [0.1, 0.2]], "A": [[-1, -2], [-0.5, -1]],
                                 "delta_bias": [0, -0.3]},
                       "tokens": [[1, 0.5], [-0.2, 0.3], [0.7, -1]]})
    full_no_bias = json.dumps({"model": {"S_B": [[2]], "S_C": [[1]], "S_Delta": [[0.4]], "A": [[-1]]},
                               "tokens": [[0.5], [-1.5]]})
    broken = {
        "broken_trailing_comma.json": '{"model": {"mu": 1,, "tokens": [1]}',
        "broken_duplicate_key.json": '{"model": {"mu": 1, "s_delta": 1, "a": 1}, "tokens": [1], "tokens": [2]}',
        "broken_nul.json": one_d + "\0garbage",
        "broken_ragged.json": '{"model": {"S_B": [[1, 0.2], [0.1]], "S_C": [[0.3, 1], [1, 0.4]],'
                              ' "S_Delta": [[0.5, 0], [0.1, 0.2]], "A": [[-1, -1], [-1, -1]]}, "tokens": [[1, 2]]}',
        "broken_deep.json": "[" * 100 + "]" * 100,
        "broken_huge_number.json": '{"model": {"mu": 1e999, "s_delta": 1, "a": 1}, "tokens": [1]}',
    }
    for harness in ("fuzz_json", "fuzz_cli_config"):
        write(harness, "one_d.json", one_d)
        write(harness, "converge.json", converge)
        write(harness, "full.json", full)
        write(harness, "full_no_bias.json", full_no_bias)
        for name, text in broken.items():
            write(harness, name, text)
    cli = "fuzz_cli_config"
    write(cli, "flags_rk4.txt", "--t-end 2 --stepper rk4 --dt 0.01\n" + one_d)
    write(cli, "flags_bs.txt", "--t-end 5 --stepper bulirsch_stoer --rtol 1e-6 --atol 1e-9\n" + full)
    write(cli, "flags_rms_out.txt", "--t-end 3 --error-norm rms --stepper cash_karp --out x.csv\n" + converge)
    write(cli, "flags_f78.txt", "--t-end 100 --stepper fehlberg78 --dt 1e-3\n" + full_no_bias)
    write(cli, "broken_flags.txt", "--t-end -1 --stepper nope\n" + one_d)


if __name__ == "__main__":
    main()
