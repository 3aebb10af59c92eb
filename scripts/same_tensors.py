"""Compares two safetensors files tensor by tensor, byte for byte.

    python3 scripts/same_tensors.py A.safetensors B.safetensors

Prints how many tensors are identical and names every one that is not (or is in one file
only). Exit status 0 when every tensor is identical, 1 otherwise. Standard library only: a
safetensors file is an 8-byte little-endian header length, a JSON header of
{name: {dtype, shape, data_offsets}}, then the data.
"""

import json
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), data[start:end])
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = (tensors(p) for p in sys.argv[1:])
    names = sorted(set(a) | set(b))
    differ = [n for n in names if a.get(n) != b.get(n)]
    for name in differ:
        where = "only in one file" if (name in a) != (name in b) else "differs"
        print(f"{name}: {where}")
    print(f"{len(names) - len(differ)} of {len(names)} tensors byte for byte identical")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
