#!/usr/bin/env python3
"""Writes an insightface-style verification `.bin` from a folder of identity subfolders.

Why it exists: `train val=A.bin,B.bin` validates on files in the format of insightface's
lfw.bin / cfp_fp.bin / agedb_30.bin. This script makes such targets from any image folder (for
instance the synthetic faces of `cargo run --release --bin data -- synth out=DIR ...`), and it
writes them with Python's own `pickle` module, so that groupface's reader
(src/data/verification_bin.rs) is exercised on what the real writer produces rather than on
bytes written by groupface itself.

Usage (key=value, like the Rust binaries):

    python3 scripts/make_val_bin.py src=DIR out=FILE.bin [pairs=600] [seed=0]

Format: `pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)`, where `bins`
lists encoded images (the image files' bytes exactly as on disk, never decoded), two consecutive
entries per pair, and `issame_list` holds one bool per pair. Every entry of `bins` is its own
bytes object, so an image used by several pairs is written out each time, as in the published
files (no pickle memo references between images).

Input layout: `src/<identity>/<image>`, read as src/data/folder.rs does: subfolders sorted by
name, files with extension jpg, jpeg, png, bmp, pgm or ppm (any case) sorted by name, hidden
entries (names starting with `.`) and other files ignored (e.g. synth's attributes.csv); an
identity subfolder without any image is an error.

Pairs: `pairs // 2` same-identity pairs (two different images of one identity) and the rest
different-identity pairs, each drawn uniformly without repetition (as unordered pairs of image
files) from all possible ones with `random.Random(seed)`; the pairs are then shuffled together and
the two images of each pair put in random order. The same src, pairs and seed give the same file.

Exit status: 0 on success, 2 for a usage error (unknown, repeated, missing or malformed key),
1 for bad input (src missing, too few identities or images for the pairs asked, unreadable file).
"""

from __future__ import annotations

import bisect
import os
import pickle
import random
import sys
from pathlib import Path

#: key -> (default, accepted values, help); None = required.
KEYS: dict[str, tuple[str | None, str, str]] = {
    "src": (None, "a folder of identity subfolders", "image folder to draw pairs from"),
    "out": (None, "a file path", "the .bin to write"),
    "pairs": ("600", "integer >= 1", "number of pairs (half same-identity, half different)"),
    "seed": ("0", "integer", "seed of random.Random"),
}

#: Image extensions, as src/data/folder.rs's IMAGE_EXTENSIONS.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "pgm", "ppm")


class UsageError(Exception):
    """A bad command line: exit status 2."""


class InputError(Exception):
    """Bad input data or an unwritable output: exit status 1."""


def usage() -> str:
    """The --help text: every key with its default and accepted values."""
    lines = [__doc__.split("\n", 1)[0], "", "keys:"]
    for key, (default, accepts, help_text) in KEYS.items():
        default_text = "(required)" if default is None else default
        lines.append(f"  {key:6} {help_text}; accepts: {accepts}; default: {default_text}")
    return "\n".join(lines)


def parse(words: list[str]) -> tuple[Path, Path, int, int]:
    """key=value words -> (src, out, pairs, seed); raises UsageError naming the key."""
    values: dict[str, str | None] = {k: v[0] for k, v in KEYS.items()}
    given: set[str] = set()
    for word in words:
        if word in ("--help", "-h", "help"):
            print(usage())
            sys.exit(0)
        key, sep, value = word.partition("=")
        if not sep:
            raise UsageError(f"argument `{word}` is not of the form key=value (see --help)")
        if key not in KEYS:
            raise UsageError(f"unknown key `{key}`; accepted keys: {', '.join(KEYS)}")
        if key in given:
            raise UsageError(f"key `{key}` is given twice")
        given.add(key)
        values[key] = value
    for key in ("src", "out"):
        if not values[key]:
            raise UsageError(f"missing key `{key}`: expected {key}=<{KEYS[key][1]}> (see --help)")

    def integer(key: str, minimum: int | None) -> int:
        raw = values[key]
        try:
            value = int(raw or "")
        except ValueError:
            raise UsageError(f"bad value `{raw}` for key `{key}`: expected {KEYS[key][1]}") from None
        if minimum is not None and value < minimum:
            raise UsageError(f"bad value `{raw}` for key `{key}`: expected {KEYS[key][1]}")
        return value

    return Path(values["src"]), Path(values["out"]), integer("pairs", 1), integer("seed", None)


def is_image(name: str) -> bool:
    """Whether a file name has one of the image extensions (case-insensitive)."""
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in IMAGE_EXTENSIONS


def list_identities(src: Path) -> list[tuple[str, list[Path]]]:
    """(identity name, sorted image paths) per identity subfolder, sorted by name."""
    if not src.exists():
        raise InputError(f"src={src}: no such folder (expected a folder of identity subfolders)")
    if not src.is_dir():
        raise InputError(f"src={src}: not a folder (expected a folder of identity subfolders)")
    identities = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        images = sorted(
            (Path(f.path) for f in os.scandir(entry.path)
             if not f.name.startswith(".") and f.is_file() and is_image(f.name)),
            key=lambda p: p.name,
        )
        if not images:
            raise InputError(
                f"{entry.path}: identity folder without any image "
                f"(expected files with extension {'|'.join(IMAGE_EXTENSIONS)})"
            )
        identities.append((entry.name, images))
    return identities


def unrank_pair(index: int, n: int) -> tuple[int, int]:
    """The `index`-th pair (i < j) of range(n) in lexicographic order."""
    i = 0
    while index >= n - 1 - i:
        index -= n - 1 - i
        i += 1
    return i, i + 1 + index


def same_pairs(src: Path, identities: list[tuple[str, list[Path]]], count: int,
               rng: random.Random) -> list[tuple[Path, Path]]:
    """`count` distinct unordered pairs of two different images of one identity."""
    if count == 0:
        return []
    sizes = [len(images) * (len(images) - 1) // 2 for _, images in identities]
    total = sum(sizes)
    if total < count:
        singles = [name for name, images in identities if len(images) < 2]
        shown = ", ".join(singles[:5]) + (", ..." if len(singles) > 5 else "")
        detail = (f"; identities with fewer than 2 images: {len(singles)} ({shown})"
                  if singles else "")
        raise InputError(
            f"src={src}: {count} same-identity pairs asked but only {total} exist (a same-identity "
            f"pair needs an identity with at least 2 images){detail}"
        )
    starts = []
    acc = 0
    for size in sizes:
        starts.append(acc)
        acc += size
    pairs = []
    # random.sample over a range draws distinct indices without building the range.
    for index in rng.sample(range(total), count):
        k = bisect.bisect_right(starts, index) - 1
        # Identities without pairs share their start with the next one: take the last such.
        images = identities[k][1]
        i, j = unrank_pair(index - starts[k], len(images))
        pairs.append((images[i], images[j]))
    return pairs


def different_pairs(src: Path, identities: list[tuple[str, list[Path]]], count: int,
                    rng: random.Random) -> list[tuple[Path, Path]]:
    """`count` distinct unordered pairs of images of two different identities."""
    if count == 0:
        return []
    if len(identities) < 2:
        names = ", ".join(name for name, _ in identities) or "none"
        raise InputError(
            f"src={src}: {count} different-identity pairs asked but src has {len(identities)} "
            f"identity folder(s) ({names}); expected at least 2"
        )
    flat = [(k, path) for k, (_, images) in enumerate(identities) for path in images]
    n = len(flat)
    total = (n * n - sum(len(images) ** 2 for _, images in identities)) // 2
    if total < count:
        raise InputError(
            f"src={src}: {count} different-identity pairs asked but only {total} exist "
            f"({len(identities)} identities, {n} images)"
        )
    if 2 * count > total:
        # Dense request: list every candidate (at most 2 * count of them) and sample.
        candidates = [(a, b) for a in range(n) for b in range(a + 1, n) if flat[a][0] != flat[b][0]]
        chosen = rng.sample(candidates, count)
    else:
        # Sparse request: draw two images uniformly, reject same identity and repeats; at least
        # half of the candidates are unused at every draw, so this ends quickly.
        seen: set[tuple[int, int]] = set()
        chosen = []
        while len(chosen) < count:
            a, b = rng.randrange(n), rng.randrange(n)
            if flat[a][0] == flat[b][0]:
                continue
            key = (min(a, b), max(a, b))
            if key in seen:
                continue
            seen.add(key)
            chosen.append(key)
    return [(flat[a][1], flat[b][1]) for a, b in chosen]


def build(src: Path, pairs: int, seed: int) -> tuple[list[bytes], list[bool]]:
    """The (bins, issame_list) of the file."""
    identities = list_identities(src)
    if not identities:
        raise InputError(f"src={src}: no identity subfolders (expected src/<identity>/<image>)")
    rng = random.Random(seed)
    n_same = pairs // 2
    labelled = [(p, True) for p in same_pairs(src, identities, n_same, rng)]
    labelled += [(p, False) for p in different_pairs(src, identities, pairs - n_same, rng)]
    rng.shuffle(labelled)
    cache: dict[Path, bytes] = {}

    def read(path: Path) -> bytes:
        if path not in cache:
            try:
                cache[path] = path.read_bytes()
            except OSError as err:
                raise InputError(f"{path}: cannot read image file: {err.strerror}") from None
        # A fresh object per entry: pickle would otherwise memoise repeated images.
        return bytes(bytearray(cache[path]))

    bins: list[bytes] = []
    issame: list[bool] = []
    for (a, b), same in labelled:
        if rng.random() < 0.5:
            a, b = b, a
        bins += [read(a), read(b)]
        issame.append(same)
    return bins, issame


def write(out: Path, bins: list[bytes], issame: list[bool]) -> int:
    """Pickles to `out` (through a temporary file, so a failed run leaves no half file)."""
    if out.is_dir():
        raise InputError(f"out={out}: is a folder (expected a file path)")
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump((bins, issame), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, out)
    except OSError as err:
        raise InputError(f"out={out}: cannot write: {err.strerror}") from None
    with open(out, "rb") as f:
        loaded = pickle.load(f)
    assert loaded == (bins, issame), f"{out}: does not load back as written"
    return out.stat().st_size


def main() -> int:
    try:
        src, out, pairs, seed = parse(sys.argv[1:])
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        bins, issame = build(src, pairs, seed)
        size = write(out, bins, issame)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({size} bytes): {len(issame)} pairs ({sum(issame)} same, "
          f"{len(issame) - sum(issame)} different), {len(bins)} images, pickle protocol "
          f"{pickle.HIGHEST_PROTOCOL}, seed {seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
