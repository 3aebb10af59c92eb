#!/usr/bin/env python3
"""PyTorch reference fixtures for groupface's weight interop (insightface `.pt`, safetensors).

Regenerate (from the repository root; with the same torch version the output is byte-identical
on every run, as it runs on one thread with deterministic algorithms):

    python3 scripts/make_interop_fixture.py                  # writes tests/fixtures/interop/
    python3 scripts/make_interop_fixture.py --check-export PATH.safetensors

Made with torch 2.15.0 (PyPI wheel `2.15.0+cu132`, run on the CPU) and safetensors 0.8.0, seed
20200614 (`SEED`). The torch version used is also written into `manifest.json` and into each
safetensors file's metadata (one key, `fixture`, holding JSON: generator command, torch version,
seed and, for weights, the config).

Why: the Rust loader must read insightface-style IResNet checkpoints and our GroupFace head, and
its exporter must write files PyTorch reads back. The fixtures pin both directions with weights
small enough to commit (well under 2 MB in all):

* `iresnet.pt` / `iresnet.safetensors`: state dict of a small IResNet with insightface's exact
  key names (see scripts/torch_groupface.py). Two blocks in stage 1 exercise the identity
  shortcut; a stage that keeps its width (16 -> 16) exercises a stride-only projection; a 2x2
  final map exercises the channel-major flatten before `fc`.
* `groupface.pt` / `groupface.safetensors`: the same backbone shape feeding a GroupFace head,
  K = 4 (keys `backbone.*` and `head.*`). Its group classifier is scaled and centred so that the
  six images spread over several groups (see `balance_groups`).
* `io.safetensors`: the input images and every output: `iresnet.embedding`; for `soft`, `hard`
  and `soft_concat`: `embedding` (v̄), `instance` (v_x), `logits`, `probs` (p(G|x)), `feature`
  (the GDN's v̂), `aggregate` (v_x^G), plus `soft.representations` (all v_x^{G_k}) and
  `hard.selected` (int64 argmax group).
* `manifest.json`: model configs, tensor shapes/dtypes, file sizes and SHA-256, versions.

BatchNorm is tested for real: every BN gets random scale/shift and running statistics estimated
from 4 training-mode batches of other images (so they differ from the fixture batch's own
statistics: a loader that ran BN in training mode, or swapped mean and variance, fails), and
every PReLU random per-channel slopes. Images are smooth random colour fields with pixel noise,
quantised to 8 bits and normalised as in SPEC section 4, `(x/255 - 0.5)/0.5`, float32 NCHW.
Models are in eval mode. Reference outputs are computed in float64 from the float32 weights and
stored as float32, so they carry no float32 accumulation error of their own; compare float32
results against them with a relative tolerance around 1e-4.

`--check-export PATH` loads a safetensors file written by the Rust exporter (same keys; PyTorch
layouts: Linear weights [out, in], `head.group_fc.weight` [K, S, D]; `num_batches_tracked` may be
absent), compares every tensor with the fixture's weights, runs the fixture images through it and
prints the max abs difference of every output; it exits 1 when any difference exceeds
`--tolerance` times max(1, max |reference|).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import sys
from pathlib import Path

# The sibling module is imported from scripts/; keep the repository free of __pycache__.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch_groupface import (  # noqa: E402
    GroupFace,
    GroupFaceConfig,
    IResNet,
    IResNetConfig,
)

SEED = 20200614
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "interop"
COMMAND = "python3 scripts/make_interop_fixture.py"
BATCH = 6
CALIBRATION_BATCHES = 4
GDN_SCALE = 4.0

#: The small backbone of both fixtures (the `tiny` preset would make the files ~10x larger).
BACKBONE = IResNetConfig(
    blocks=[2, 1, 1, 1], widths=[8, 16, 16, 32], stem_width=8, input_side=32, output_width=32
)
#: GroupFace on that backbone: S = 64, D = 16, K = 4, GDN 16 -> 8.
GROUPFACE = GroupFaceConfig(
    backbone=BACKBONE, groups=4, embedding=16, shared=64, gdn_hidden=16, gdn_feature=8
)
#: (output prefix, mode, combine) of the GroupFace runs stored in io.safetensors.
RUNS = [("soft", "soft", "sum"), ("hard", "hard", "sum"), ("soft_concat", "soft", "concat")]
GROUP_FIELDS = ("embedding", "instance", "logits", "probs", "feature", "aggregate")


def randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Random BN scale/shift and PReLU slopes, then BN running statistics from training batches.

    Default values (scale 1, shift 0, mean 0, var 1, slope 0.25) would hide a loader that
    drops, swaps or mis-maps these tensors. The running statistics are estimated (cumulative
    average, `momentum=None`) over CALIBRATION_BATCHES batches of other images: random values
    unrelated to the activations would leave the outputs dominated by BN shifts and nearly
    identical across images, and then every image would pick the same group.
    """

    def uniform(t: Tensor, low: float, high: float) -> Tensor:
        return torch.rand(t.shape, generator=gen) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
                module.reset_running_stats()
                module.momentum = None
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(uniform(module.weight, 0.05, 0.5))
        model.train()
        for _ in range(CALIBRATION_BATCHES):
            model(make_images(gen, 16))
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.momentum = 0.1
    model.eval()


def make_images(gen: torch.Generator, count: int = BATCH) -> Tensor:
    """[count, 3, side, side] float32 in [-1, 1], quantised like real 8-bit pixels.

    Smooth random colour fields (4x4 bilinearly upsampled) plus 20% pixel noise: images that
    differ in content, so their embeddings and group choices differ too.
    """
    side = BACKBONE.input_side
    coarse = torch.rand((count, 3, 4, 4), generator=gen)
    smooth = F.interpolate(coarse, size=side, mode="bilinear", align_corners=False)
    noisy = 0.8 * smooth + 0.2 * torch.rand((count, 3, side, side), generator=gen)
    pixels = (noisy * 255.0).round().clamp(0, 255)
    return ((pixels / 255.0 - 0.5) / 0.5).contiguous()


def build_models() -> tuple[IResNet, GroupFace]:
    """Both fixture models, seeded and with randomised norms, in eval mode."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    iresnet = IResNet(BACKBONE)
    randomise_norms(iresnet, gen)
    groupface = GroupFace(GROUPFACE)
    randomise_norms(groupface, gen)
    balance_groups(groupface, gen)
    return iresnet.eval(), groupface.eval()


@torch.no_grad()
def balance_groups(model: GroupFace, gen: torch.Generator) -> None:
    """Makes the GDN decisive and unbiased, like a trained one, so hard mode picks varied groups.

    A fresh GDN is near uniform and its random classifier bias sends every image to the same
    group, which would leave hard mode's per-group gather untested. Scaling the classifier by
    GDN_SCALE sharpens p(G|x); setting its bias to minus the mean logit of a calibration batch
    centres the logits, so no group wins for every image.
    """
    assert model.head is not None
    classifier = model.head.gdn.classifier
    classifier.weight.mul_(GDN_SCALE)
    classifier.bias.zero_()
    feature = model(make_images(gen, 64)).feature
    classifier.bias.copy_(-classifier(feature).mean(dim=0))


def state_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict as independent contiguous tensors (what safetensors requires)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@torch.no_grad()
def reference_outputs(iresnet: IResNet, groupface: GroupFace, images: Tensor) -> dict[str, Tensor]:
    """Every output, computed in float64 from the float32 weights, stored as float32."""
    x = images.double()
    outputs = {"iresnet.embedding": _f32(_double(iresnet)(x))}
    model = _double(groupface)
    assert model.head is not None
    for prefix, mode, combine in RUNS:
        model.head.combine = combine
        out = model(x, mode)
        for name in GROUP_FIELDS:
            outputs[f"{prefix}.{name}"] = _f32(getattr(out, name))
        if out.representations is not None and combine == "sum":
            outputs[f"{prefix}.representations"] = _f32(out.representations)
        if out.selected is not None:
            outputs[f"{prefix}.selected"] = out.selected.to(torch.int64).contiguous()
    model.head.combine = GROUPFACE.combine
    return outputs


def _double(model: nn.Module) -> nn.Module:
    """A float64 copy (exact: every float32 is a float64)."""
    return copy.deepcopy(model).double().eval()


def _f32(t: Tensor) -> Tensor:
    return t.detach().float().contiguous()


def check_hard_mode(outputs: dict[str, Tensor]) -> None:
    """The hard fixture must select several groups, with no near-tie that float32 could flip."""
    selected = outputs["hard.selected"]
    if len(set(selected.tolist())) < 2:
        raise SystemExit(f"hard mode selects one group only ({selected.tolist()}): change SEED")
    top2 = outputs["hard.probs"].double().topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    if margin < 1e-3:
        raise SystemExit(f"hard mode has a near tie (p margin {margin:.2e}): change SEED")


def serialise(tensors: dict[str, Tensor], metadata: dict) -> bytes:
    """safetensors bytes with `metadata` as one JSON string under the key `fixture`.

    One key because safetensors writes its metadata map in hash order, which changes from run
    to run; a single sorted JSON value keeps the files byte-identical.
    """
    return save(tensors, metadata={"fixture": json.dumps(metadata, sort_keys=True)})


def torch_save_bytes(state: dict[str, Tensor]) -> bytes:
    """`torch.save` of a state dict, in memory."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def describe(tensors: dict[str, Tensor]) -> dict[str, dict]:
    """Shape, dtype and max |value| of each tensor, for the manifest and the printout."""
    return {
        k: {
            "shape": list(v.shape),
            "dtype": str(v.dtype).removeprefix("torch."),
            "max_abs": float(v.abs().max()) if v.numel() else 0.0,
        }
        for k, v in sorted(tensors.items())
    }


def generate(out_dir: Path) -> None:
    """Writes every fixture file and prints what it wrote."""
    iresnet, groupface = build_models()
    images = make_images(torch.Generator().manual_seed(SEED + 1))
    outputs = reference_outputs(iresnet, groupface, images)
    check_hard_mode(outputs)
    metadata = {
        "generator": COMMAND,
        "torch": torch.__version__,
        "seed": str(SEED),
    }
    io_tensors = {"images": images, **outputs}
    iresnet_state, groupface_state = state_tensors(iresnet), state_tensors(groupface)
    files = {
        "iresnet.pt": torch_save_bytes(iresnet_state),
        "iresnet.safetensors": serialise(iresnet_state, {**metadata, "config": _asdict(BACKBONE)}),
        "groupface.pt": torch_save_bytes(groupface_state),
        "groupface.safetensors": serialise(
            groupface_state, {**metadata, "config": GROUPFACE.to_dict()}
        ),
        "io.safetensors": serialise(io_tensors, metadata),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    manifest = {
        **metadata,
        "safetensors": safetensors.__version__,
        "iresnet_config": _asdict(BACKBONE),
        "groupface_config": GROUPFACE.to_dict(),
        "runs": [{"prefix": p, "mode": m, "combine": c} for p, m, c in RUNS],
        "reference_precision": "float64 forward of the float32 weights, stored as float32",
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        },
        "io": describe(io_tensors),
        "iresnet_keys": describe(iresnet_state),
        "groupface_keys": describe(groupface_state),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    for name, data in files.items():
        print(f"{name:24} {len(data):8d} bytes")
    print(f"{'manifest.json':24} {(out_dir / 'manifest.json').stat().st_size:8d} bytes")
    print(f"total {total} bytes in {out_dir}")
    print("io.safetensors:")
    for name, info in manifest["io"].items():
        shape = str(info["shape"])
        print(f"  {name:28} {info['dtype']:8} {shape:16} max|x| {info['max_abs']:.4g}")
    print(f"hard.selected = {outputs['hard.selected'].tolist()}")
    verify(out_dir, iresnet_state, groupface_state)


def _asdict(config: IResNetConfig) -> dict:
    return {k: getattr(config, k) for k in config.__dataclass_fields__}


def verify(out_dir: Path, *states: dict[str, Tensor]) -> None:
    """Re-reads both formats and checks they hold exactly the in-memory tensors."""
    for stem, state in zip(("iresnet", "groupface"), states, strict=True):
        from_pt = torch.load(out_dir / f"{stem}.pt", weights_only=True)
        from_st = load_file(out_dir / f"{stem}.safetensors")
        if not (set(from_pt) == set(from_st) == set(state)):
            raise SystemExit(f"{stem}: .pt and .safetensors hold different keys")
        for key, value in state.items():
            for name, other in ((".pt", from_pt[key]), (".safetensors", from_st[key])):
                if other.dtype != value.dtype or not torch.equal(other, value):
                    raise SystemExit(f"{stem}{name}: tensor `{key}` differs from the model")
        print(f"{stem}: .pt and .safetensors hold identical tensors ({len(state)} keys)")


def check_export(path: Path, fixture_dir: Path, tolerance: float) -> int:
    """Round trip: loads a Rust export, compares weights and outputs with the fixture."""
    exported = load_file(path)
    is_groupface = any(k.startswith("head.") for k in exported)
    stem = "groupface" if is_groupface else "iresnet"
    print(f"{path}: {len(exported)} tensors, read as the {stem} fixture")
    model: nn.Module = GroupFace(GROUPFACE) if is_groupface else IResNet(BACKBONE)
    expected = model.state_dict()
    missing = [k for k in expected if k not in exported and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in exported if k not in expected]
    if missing or unexpected:
        print(f"key mismatch: missing {missing}, unexpected {unexpected}")
        return 1
    original = load_file(fixture_dir / f"{stem}.safetensors")
    state = {}
    worst_weight = 0.0
    for key, reference in expected.items():
        if key not in exported:
            state[key] = reference  # num_batches_tracked: Burn has no counterpart
            continue
        value = exported[key]
        if tuple(value.shape) != tuple(reference.shape):
            hint = ""
            if value.dim() == 2 and tuple(value.shape) == tuple(reference.shape)[::-1]:
                hint = " (transposed: Burn's [in, out] Linear layout, not PyTorch's [out, in])"
            got, want = list(value.shape), list(reference.shape)
            print(f"shape mismatch for `{key}`: {got}, expected {want}{hint}")
            return 1
        state[key] = value.to(reference.dtype)
        if reference.is_floating_point():
            diff = (value.double() - original[key].double()).abs().max().item()
            worst_weight = max(worst_weight, diff)
    print(f"max |weight - fixture weight| over all tensors: {worst_weight:.3g}")
    model.load_state_dict(state)
    model = model.double().eval()
    io_tensors = load_file(fixture_dir / "io.safetensors")
    images = io_tensors["images"].double()
    results: dict[str, Tensor] = {}
    with torch.no_grad():
        if isinstance(model, IResNet):
            results["iresnet.embedding"] = model(images)
        else:
            assert model.head is not None
            for prefix, mode, combine in RUNS:
                model.head.combine = combine
                out = model(images, mode)
                for name in (*GROUP_FIELDS, "representations", "selected"):
                    if f"{prefix}.{name}" in io_tensors:
                        results[f"{prefix}.{name}"] = getattr(out, name)
    failed = False
    for name, value in results.items():
        reference = io_tensors[name].double()
        diff = (value.double() - reference).abs().max().item()
        scale = max(1.0, reference.abs().max().item())
        ok = diff <= tolerance * scale
        failed |= not ok
        verdict = "ok" if ok else "FAIL"
        print(f"  {name:28} max abs diff {diff:.3g} (max |ref| {scale:.3g}) {verdict}")
    if not failed:
        print(f"all outputs within {tolerance:g} x max(1, max |ref|)")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture directory")
    parser.add_argument(
        "--check-export",
        type=Path,
        metavar="PATH",
        help="safetensors file exported by groupface to compare with the fixture",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="allowed max abs difference, relative to max(1, max |reference|)",
    )
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: a fixed summation order, identical bytes every run
    if args.check_export is not None:
        return check_export(args.check_export, args.out, args.tolerance)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
