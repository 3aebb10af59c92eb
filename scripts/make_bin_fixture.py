#!/usr/bin/env python3
"""Tiny insightface-style verification `.bin` fixtures for groupface's pickle reader.

Usage:
    python3 scripts/make_bin_fixture.py [OUT_DIR]     # default: tests/fixtures
    python3 scripts/make_bin_fixture.py --check FILE  # load a .bin written by groupface

Writes three pickles of `(bins, issame_list)` with 6 PNG images (3 pairs, issame =
[True, False, True]) using only the standard library:

* verification_highest.bin: pickle.HIGHEST_PROTOCOL (bytes as BINBYTES / SHORT_BINBYTES);
* verification_p2.bin: protocol 2 from Python 3 (bytes via _codecs.encode(..., 'latin1'));
* verification_py2.bin: a hand-assembled Python 2 style protocol-2 stream (images as `str`,
  i.e. SHORT_BINSTRING / BINSTRING, memoised with BINPUT / LONG_BINPUT, one BINGET), checked to
  load with Python 3's `pickle.loads(..., encoding='bytes')`.

Image k is (k * 40, x * 16, y * 16) at pixel (x, y); even images are 16x16 stored without
compression (> 255 bytes), odd ones 8x8 compressed (< 256 bytes). Image 4 is the same object as
image 2 so that the picklers emit a memo GET.
"""
import os
import pickle
import struct
import sys
import zlib


def png(k, side, level):
    raw = b"".join(
        b"\x00" + bytes(v for x in range(side) for v in (k * 40, x * 16, y * 16))
        for y in range(side)
    )

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b""))


def images():
    bins = [png(k, 16, 0) if k % 2 == 0 else png(k, 8, 9) for k in range(6)]
    bins[4] = bins[2]
    return bins


ISSAME = [True, False, True]


def py2_style(bins, issame):
    """Protocol 2 as Python 2's cPickle writes a tuple of (list of str, list of bool)."""
    out = bytearray(b"\x80\x02]q\x00(")
    memo = 1
    seen = {}
    for b in bins:
        if id(b) in seen:
            out += b"h" + bytes([seen[id(b)]])
            continue
        if len(b) < 256:
            out += b"U" + bytes([len(b)]) + b
        else:
            out += b"T" + struct.pack("<i", len(b)) + b
        out += b"r" + struct.pack("<I", memo)
        seen[id(b)] = memo
        memo += 1
    out += b"e]q" + bytes([memo]) + b"("
    out += b"".join(b"\x88" if s else b"\x89" for s in issame)
    out += b"e\x86q" + bytes([memo + 1]) + b"."
    return bytes(out)


def check(path):
    with open(path, "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    assert isinstance(bins, list) and isinstance(issame, list), "expected (list, list)"
    assert all(isinstance(b, bytes) for b in bins), "images must be bytes"
    assert all(isinstance(s, bool) for s in issame), "labels must be bools"
    assert len(bins) == 2 * len(issame), "two images per label"
    print(f"{path}: {len(bins)} images, {len(issame)} pairs, {sum(issame)} same, "
          f"{sum(len(b) for b in bins)} image bytes, byte sum {sum(sum(b) for b in bins)}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures")
    os.makedirs(out, exist_ok=True)
    bins = images()
    files = {
        "verification_highest.bin": pickle.dumps((bins, ISSAME), protocol=pickle.HIGHEST_PROTOCOL),
        "verification_p2.bin": pickle.dumps((bins, ISSAME), protocol=2),
        "verification_py2.bin": py2_style(bins, ISSAME),
    }
    for name, data in files.items():
        loaded = pickle.loads(data, encoding="bytes")
        assert loaded == (bins, ISSAME), name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"wrote {os.path.join(out, name)} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
