#!/usr/bin/env python3
"""Writes the tree of src/ with line counts between the `<!-- tree` markers of README.md and
book/src/architecture.md, so the layout they show is the one on disk.

Usage: python3 scripts/layout_tree.py          (rewrite both files)
       python3 scripts/layout_tree.py --print  (print the tree only)
"""
import os
import re
import sys

# The layers, lowest first: the order of `pub mod` in src/lib.rs and of the layout test
# (tests/integration/layout.rs).
FOLDERS = ["util", "backend", "data", "protocol", "analysis", "model", "objective", "evaluate",
           "train", "app", "bin"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def lines(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return sum(1 for _ in f)


def tree():
    rows = [("src/", None, ""), ("lib.rs", lines("src/lib.rs"), "├── ")]
    for i, folder in enumerate(FOLDERS):
        files = []
        for root, _, names in os.walk(os.path.join(ROOT, "src", folder)):
            files += [os.path.relpath(os.path.join(root, n), os.path.join(ROOT, "src", folder))
                      for n in names if n.endswith(".rs")]
        files.sort(key=lambda f: (f != "mod.rs", f))
        counts = [lines(os.path.join("src", folder, f)) for f in files]
        last = i == len(FOLDERS) - 1
        rows.append((folder + "/", sum(counts), "└── " if last else "├── "))
        indent = "    " if last else "│   "
        for j, (f, n) in enumerate(zip(files, counts)):
            rows.append((f, n, indent + ("└── " if j == len(files) - 1 else "├── ")))
    total = sum(n for name, n, prefix in rows if n is not None and not name.endswith("/"))
    out = []
    for name, n, prefix in rows:
        label = prefix + name
        out.append(label if n is None else f"{label:<40}{n:>6}")
    out[0] = f"{'src/':<40}{total:>6}  lines"
    return "\n".join(out)


def main():
    text = tree()
    if "--print" in sys.argv:
        print(text)
        return
    for path in ["README.md", "book/src/architecture.md"]:
        full = os.path.join(ROOT, path)
        with open(full, encoding="utf-8") as f:
            doc = f.read()
        pattern = re.compile(r"(<!-- tree[^\n]*-->\n```text\n).*?(\n```\n<!-- /tree -->)", re.S)
        if not pattern.search(doc):
            sys.exit(f"error: {path}: no `<!-- tree ... -->` block to fill")
        doc = pattern.sub(lambda m: m.group(1) + text + m.group(2), doc)
        with open(full, "w", encoding="utf-8") as f:
            f.write(doc)
        print(f"wrote the tree into {path}")


if __name__ == "__main__":
    main()
