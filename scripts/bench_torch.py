#!/usr/bin/env python3
"""PyTorch counterpart of `cargo run --release --bin bench`: training-step throughput.

Why: to say how fast groupface's Burn training step is, we need the same step in PyTorch on the
same machine. Same model (scripts/torch_groupface.py mirrors src/model/mod.rs), same data (uniform
[-1, 1] images, labels `i % classes`), same step as src/app/bench.rs + src/train/step.rs: forward,
ArcFace margin softmax (s = 64, m = 0.5, exact gradient) over `classes` identities, plus
0.1 x the self-grouping loss with self-distributed labels (window 32) when groups > 0, backward,
SGD (lr 0.01, momentum 0.9, dampening 0, weight decay 5e-4) over the model and the class weights.

`sample_rate` < 1 turns the margin softmax into arcface_torch's Partial FC (PartialFC_V2, here on
one process): every step keeps the batch's classes plus random others, int(sample_rate * classes)
in all, and computes the margin softmax against those rows of W only (labels remapped with
`searchsorted`). W stays one Parameter, so its gradient is dense (zero outside the sampled rows)
and SGD's weight decay and momentum still update every row, as in arcface_torch v2. With 1.0
(the default) the loss runs over all classes, as the Rust bench's does.

Usage (key=value like the Rust binaries; `backbone` and `groups` take comma-separated lists):

    python3 scripts/bench_torch.py backbone=tiny groups=0,32 batch=32 steps=5 threads=2
    python3 scripts/bench_torch.py backbone=r18 groups=0 batch=32 device=cuda amp=bf16
    python3 scripts/bench_torch.py backbone=tiny groups=0 batch=64 classes=1000000 sample_rate=0.1

Prints one JSON object per configuration with the Rust bench's fields (backbone, groups, mode,
batch, steps, backend, side, images_per_second, step_seconds, peak_memory_bytes, last_loss) and
PyTorch's extras (framework, device, amp, compile, threads, classes, sample_rate, warmup, torch).
`peak_memory_bytes` is the process's peak RSS (VmHWM) on CPU, the same quantity as the Rust
bench's, and so, as there, it covers the whole process: configurations run later in one
invocation include the peaks of earlier ones. On CUDA it is `torch.cuda.max_memory_allocated()`,
reset before each configuration (device memory, unlike the Rust bench's host-only figure).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The sibling module is imported from scripts/; keep the repository free of __pycache__.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch_groupface import (  # noqa: E402
    COMBINES,
    MODES,
    GroupFaceConfig,
    SelfDistributedLabeler,
    TrainModel,
    partial_fc_sample,
)

#: key -> (default, accepted values, help); mirrors src/bin/bench.rs and cli::model_keys.
KEYS: dict[str, tuple[str | None, str, str]] = {
    "backbone": ("tiny", "r18|r34|r50|r100|tiny|small, comma-separated", "IResNet preset(s)"),
    "groups": ("32", "integers >= 0, comma-separated", "number of groups K; 0 = ArcFace"),
    "mode": ("soft", "|".join(MODES), "S-GroupFace (soft) or H-GroupFace (hard)"),
    "combine": ("sum", "|".join(COMBINES), "aggregation or concatenation"),
    "input_side": (None, "multiple of 16", "input side (preset's if absent)"),
    "embedding": (None, "integer > 0", "embedding width D (preset's if absent)"),
    "shared": (None, "integer > 0", "shared width S (preset's if absent)"),
    "gdn_hidden": (None, "integer > 0", "GDN hidden width (preset's if absent)"),
    "gdn_feature": (None, "integer > 0", "GDN feature width (preset's if absent)"),
    "batch": ("32", "integer > 0", "images per step"),
    "steps": ("5", "integer > 0", "timed steps"),
    "warmup": ("2", "integer >= 0", "untimed steps first"),
    "classes": ("1000", "integer >= 2", "identities of the classifier"),
    "sample_rate": (
        "1.0",
        "number in (0, 1]",
        "Partial FC: share of the classes in each step's margin softmax (1.0 = all)",
    ),
    "threads": (None, "integer > 0", "torch.set_num_threads (torch's default if absent)"),
    "device": ("cpu", "cpu|cuda|cuda:N", "where to run"),
    "amp": ("none", "none|bf16", "bfloat16 autocast of the forward pass"),
    "compile": ("none", "none|default|reduce-overhead|max-autotune", "torch.compile mode"),
    "cudnn_benchmark": (
        "true",
        "true|false",
        "torch.backends.cudnn.benchmark on CUDA: cuDNN times its convolution algorithms on the "
        "first step, as Burn's autotune does, so the warm-up steps hold that search",
    ),
    "seed": ("0", "integer", "torch.manual_seed"),
}


def usage() -> str:
    """The --help text: every key with its default and accepted values."""
    lines = [__doc__.split("\n", 1)[0], "", "keys:"]
    for key, (default, accepts, help_text) in KEYS.items():
        default_text = default or "(none)"
        lines.append(f"  {key:12} {help_text}; accepts: {accepts}; default: {default_text}")
    return "\n".join(lines)


def parse(words: list[str]) -> dict[str, str | None]:
    """key=value words -> values; unknown, repeated and malformed words exit with a message."""
    values: dict[str, str | None] = {k: v[0] for k, v in KEYS.items()}
    given: set[str] = set()
    for word in words:
        if word in ("--help", "-h", "help"):
            print(usage())
            sys.exit(0)
        key, sep, value = word.partition("=")
        if not sep:
            sys.exit(f"error: argument `{word}` is not of the form key=value (see --help)")
        if key not in KEYS:
            sys.exit(f"error: unknown key `{key}`; accepted keys: {', '.join(KEYS)}")
        if key in given:
            sys.exit(f"error: key `{key}` is given twice")
        given.add(key)
        values[key] = value
    return values


def rate(values: dict[str, str | None], key: str) -> float:
    """A number in (0, 1], or exit naming the key."""
    raw = values[key]
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        value = 0.0
    if not 0.0 < value <= 1.0:  # also refuses nan
        sys.exit(f"error: bad value `{raw}` for key `{key}`: expected {KEYS[key][1]}")
    return value


def integer(values: dict[str, str | None], key: str, minimum: int) -> int:
    """An integer key, checked against its minimum, or exit naming the key."""
    raw = values[key]
    try:
        value = int(raw) if raw is not None else minimum - 1
    except ValueError:
        value = minimum - 1
    if value < minimum:
        sys.exit(f"error: bad value `{raw}` for key `{key}`: expected {KEYS[key][1]}")
    return value


@dataclass
class BenchCase:
    """One configuration, as src/app/bench.rs's BenchCase."""

    backbone: str
    model: GroupFaceConfig
    classes: int
    sample_rate: float
    batch: int
    steps: int
    warmup: int
    device: torch.device
    amp: str
    compile: str
    seed: int


def model_config(values: dict[str, str | None], backbone: str, groups: int) -> GroupFaceConfig:
    """The preset plus overrides, validated (cli::model_config's logic)."""
    try:
        config = GroupFaceConfig.preset(backbone, groups)
    except ValueError as err:
        sys.exit(f"error: {err}")
    config.mode = values["mode"] or "soft"
    config.combine = values["combine"] or "sum"
    if values["input_side"] is not None:
        config.backbone.input_side = integer(values, "input_side", 16)
    for key in ("embedding", "shared", "gdn_hidden", "gdn_feature"):
        if values[key] is not None:
            setattr(config, key, integer(values, key, 1))
    try:
        config.validate()
    except ValueError as err:
        sys.exit(f"error: {err}")
    return config


def peak_memory_bytes(device: torch.device) -> int:
    """CPU: peak RSS of the process; CUDA: peak allocated.

    On Linux the CPU figure is VmHWM, as in the Rust bench. `ru_maxrss` would be wrong when
    `bench torch=true` starts this script: it keeps the parent's peak from before `exec`.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronize(device: torch.device) -> None:
    """Waits for queued kernels, so the clock measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    model: TrainModel, optimizer: torch.optim.Optimizer, case: BenchCase
) -> Callable[[torch.Tensor, torch.Tensor, SelfDistributedLabeler], float]:
    """One training step: forward, loss, backward, SGD update; returns the loss.

    Reading the loss back (`.item()`) every step mirrors the Rust bench's `into_scalar`, which
    also forces the step to finish before the next one is timed. `compile` compiles the model
    (backbone and head) only: the labeler keeps a Python-side window that would make every step
    recompile. With `amp=bf16` the model runs under bfloat16 autocast and the loss in float32.
    """
    network = model.model
    if case.compile != "none":
        network = torch.compile(network, mode=None if case.compile == "default" else case.compile)
    use_amp = case.amp == "bf16"
    sample = case.sample_rate < 1.0

    def step(images: torch.Tensor, classes: torch.Tensor, labeler: SelfDistributedLabeler) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(case.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = network(images)
        group_labels = None if out.probs is None else labeler(out.probs)
        index = None
        if sample:
            # Partial FC: drawn anew every step, inside the timed step, as arcface_torch does.
            index, classes = partial_fc_sample(classes, case.classes, case.sample_rate)
        loss = model.loss(out, classes, group_labels, index)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    return step


def run(case: BenchCase) -> dict:
    """Builds the model and data, times `steps` steps after `warmup` untimed ones."""
    torch.manual_seed(case.seed)
    model = TrainModel(case.model, case.classes).to(case.device).train()
    # Dampening 0 as PyTorch's default; src/train/step.rs sets Burn's to 0 to match.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    labeler = SelfDistributedLabeler(window=32)
    side = case.model.backbone.input_side
    images = torch.rand(case.batch, 3, side, side, device=case.device) * 2.0 - 1.0
    classes = torch.arange(case.batch, device=case.device) % case.classes
    if case.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(case.device)
    step = make_step(model, optimizer, case)
    last_loss = float("nan")
    start = time.perf_counter()
    for i in range(case.warmup + case.steps):
        if i == case.warmup:
            synchronize(case.device)
            start = time.perf_counter()
        last_loss = step(images, classes, labeler)
    synchronize(case.device)
    elapsed = time.perf_counter() - start
    return {
        "backbone": case.backbone,
        "groups": case.model.groups,
        "mode": case.model.mode,
        "batch": case.batch,
        "steps": case.steps,
        "backend": f"torch-{case.device.type}",
        "side": side,
        "images_per_second": case.batch * case.steps / elapsed,
        "step_seconds": elapsed / case.steps,
        "peak_memory_bytes": peak_memory_bytes(case.device),
        # What the caching allocator held from the driver: what nvidia-smi shows, less the
        # CUDA context.
        "peak_reserved_bytes": (
            int(torch.cuda.max_memory_reserved(case.device)) if case.device.type == "cuda" else None
        ),
        "last_loss": last_loss,
        "framework": "pytorch",
        "device": str(case.device),
        "amp": case.amp,
        "compile": case.compile,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "threads": torch.get_num_threads(),
        "classes": case.classes,
        "sample_rate": case.sample_rate,
        "warmup": case.warmup,
        "torch": torch.__version__,
    }


def main() -> None:
    values = parse(sys.argv[1:])
    if values["threads"] is not None:
        torch.set_num_threads(integer(values, "threads", 1))
    device = torch.device(values["device"] or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: device=cuda but torch.cuda.is_available() is False")
    if device.type not in ("cpu", "cuda"):
        sys.exit(f"error: bad value `{device}` for key `device`: expected {KEYS['device'][1]}")
    amp = values["amp"] or "none"
    if amp not in ("none", "bf16"):
        sys.exit(f"error: bad value `{amp}` for key `amp`: expected none|bf16")
    compile_mode = values["compile"] or "none"
    if compile_mode not in KEYS["compile"][1].split("|"):
        accepts = KEYS["compile"][1]
        sys.exit(f"error: bad value `{compile_mode}` for key `compile`: expected {accepts}")
    benchmark = values["cudnn_benchmark"] or "true"
    if benchmark not in ("true", "false"):
        sys.exit(f"error: bad value `{benchmark}` for key `cudnn_benchmark`: expected true|false")
    torch.backends.cudnn.benchmark = device.type == "cuda" and benchmark == "true"
    group_list = []
    for raw in (values["groups"] or "").split(","):
        if not raw.isdigit():
            accepts = KEYS["groups"][1]
            sys.exit(f"error: bad value `{values['groups']}` for key `groups`: expected {accepts}")
        group_list.append(int(raw))
    for backbone in (values["backbone"] or "").split(","):
        for groups in group_list:
            case = BenchCase(
                backbone=backbone,
                model=model_config(values, backbone, groups),
                classes=integer(values, "classes", 2),
                sample_rate=rate(values, "sample_rate"),
                batch=integer(values, "batch", 1),
                steps=integer(values, "steps", 1),
                warmup=integer(values, "warmup", 0),
                device=device,
                amp=amp,
                compile=compile_mode,
                seed=integer(values, "seed", -(2**63)),
            )
            print(json.dumps(run(case)), flush=True)


if __name__ == "__main__":
    main()
