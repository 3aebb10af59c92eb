#!/usr/bin/env python3
"""Writes an insightface arcface_torch `iresnet` state dict (`torch.save`) with random weights.

For trying `init=FILE.pth` where no pretrained checkpoint can be downloaded: the file has the
keys, shapes and pickle layout of `torch.save(backbone.state_dict(), ...)` in arcface_torch,
made by PyTorch itself, but its weights are PyTorch's default initialisation, so a model that
starts from it has learned nothing. The book's interop chapter runs `init=` with such a file.

BatchNorm's running statistics are estimated from two training-mode batches of 8 random images
(cumulative average): with the defaults (mean 0, variance 1) an untrained r100 in eval mode
overflows to NaN in float32, in PyTorch as in Burn.

    python3 scripts/make_pth.py backbone=r100 out=/tmp/book/iresnet100.pth [seed=0]

`backbone` is one of the Rust presets (r18, r34, r50, r100, tiny, small).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch_groupface import IResNet, IResNetConfig  # noqa: E402

KEYS = {"backbone": None, "out": None, "seed": "0"}


def parse(words: list[str]) -> dict[str, str]:
    args = dict(KEYS)
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or key not in KEYS:
            raise SystemExit(f"error: expected one of {', '.join(f'{k}=' for k in KEYS)}; found `{word}`")
        args[key] = value
    missing = [k for k, v in args.items() if v is None]
    if missing:
        raise SystemExit(f"error: key `{missing[0]}` is required")
    return args  # type: ignore[return-value]


def main() -> int:
    args = parse(sys.argv[1:])
    config = IResNetConfig.preset(args["backbone"])
    torch.manual_seed(int(args["seed"]))
    model = IResNet(config)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 3, config.input_side, config.input_side) * 2 - 1)
    model.eval()
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save(state, out)
    params = sum(t.numel() for k, t in state.items() if t.is_floating_point())
    print(
        f"wrote {out}: {len(state)} tensors, {params / 1e6:.1f} M values, "
        f"{out.stat().st_size / 2**20:.1f} MiB (torch {torch.__version__}, random weights)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
