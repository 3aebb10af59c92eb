"""PyTorch twin of groupface's Rust model (src/model/backbone.rs, src/model/mod.rs), for interop and benches.

Why it exists: the Rust crate must load insightface checkpoints, export weights that PyTorch can
read back, and be compared with PyTorch for speed. This file is the reference side of all three:
the same IResNet and GroupFace head, written from SPEC.md section 1, with state-dict keys chosen
so that a checkpoint moves between the two with a fixed, documented key mapping.

Backbone keys (insightface's `iresnet.py` names, so its checkpoints load with `strict=True`)
--------------------------------------------------------------------------------------------

| PyTorch key                                  | Rust field (src/model/backbone.rs)        |
|----------------------------------------------|-------------------------------------|
| `conv1.weight` [C0,3,3,3]                    | `stem.weight`                       |
| `bn1.{weight,bias,running_mean,running_var}` | `stem_bn.{gamma,beta,running_*}`    |
| `prelu.weight` [C0]                          | `stem_act.alpha`                    |
| `layer{s}.{j}.bn1` / `conv1` / `bn2`         | `blocks[n].bn1` / `conv1` / `bn2`   |
| `layer{s}.{j}.prelu.weight`                  | `blocks[n].act.alpha`               |
| `layer{s}.{j}.conv2` / `bn3`                 | `blocks[n].conv2` / `bn3`           |
| `layer{s}.{j}.downsample.0.weight` (1x1)     | `blocks[n].downsample.conv.weight`  |
| `layer{s}.{j}.downsample.1.*` (BN)           | `blocks[n].downsample.bn.*`         |
| `bn2.*` (BatchNorm2d on the last map)        | `out_bn.*`                          |
| `fc.weight` [out, C*h*w], `fc.bias`          | `fc.weight` [C*h*w, out], `fc.bias` |
| `features.*` (BatchNorm1d)                   | `features.*`                        |

`s` counts stages from 1 and `j` blocks within a stage from 0; Rust's flat `blocks[n]` index is
`sum(blocks[:s-1]) + j`. Every BatchNorm also has `num_batches_tracked` (int64, unused by Burn).

GroupFace keys (`GroupFace` module: `backbone.` + the keys above, then `head.`)
------------------------------------------------------------------------------

The head mirrors the Rust field names of `GroupHead`, `GroupFc` and `GroupDecisionNetwork`, so the
key of a tensor is its Rust path with PyTorch's leaf names:

| PyTorch key                            | shape        | Rust field (src/model/mod.rs)            |
|----------------------------------------|--------------|--------------------------------------|
| `head.instance_fc.weight` / `.bias`    | [D,S] / [D]  | `head.instance_fc` (FC_inst)         |
| `head.instance_bn.*`                   | [D]          | `head.instance_bn`                   |
| `head.group_fc.weight`                 | [K,S,D]      | `head.group_fc.weight` (as is)       |
| `head.group_fc.bias`                   | [K,D]        | `head.group_fc.bias`                 |
| `head.group_fc.bn.*`                   | [K*D]        | `head.group_fc.bn` (group-major)     |
| `head.gdn.bn_in.*`                     | [D]          | `head.gdn.bn_in`                     |
| `head.gdn.fc1.weight` / `.bias`        | [H,D] / [H]  | `head.gdn.fc1`                       |
| `head.gdn.act.weight`                  | [H]          | `head.gdn.act.alpha` (PReLU)         |
| `head.gdn.bn_hidden.*`                 | [H]          | `head.gdn.bn_hidden`                 |
| `head.gdn.fc2.weight` / `.bias`        | [F,H] / [F]  | `head.gdn.fc2` (to v̂)               |
| `head.gdn.classifier.weight` / `.bias` | [K,F] / [K]  | `head.gdn.classifier` (to logits)    |

With `groups = 0` (the ArcFace baseline) there are no `head.` keys at all.

Layout rules for a loader: `nn.Linear` weights are [out, in] here and [in, out] in Burn
(transpose); `head.group_fc.weight` is a plain parameter kept in Burn's [K, S, D] layout (no
transpose); conv weights are [out, in, kh, kw] on both sides; BatchNorm `weight`/`bias` are Burn's
`gamma`/`beta`; PReLU `weight` is Burn's `alpha`. burn-store 0.21's PyTorch adapters do the
Linear transpose (modules of type Linear only, so not `group_fc.weight`) and the BatchNorm renames
in both directions, but neither the PReLU `weight`/`alpha` rename nor the backbone's module-path
renames (`conv1`/`stem`, `layer{s}.{j}`/`blocks.{n}`, `downsample.0`/`downsample.conv`, ...):
those need key remapping (`backbone_key_map` below lists the module paths).

insightface differences kept on purpose: insightface freezes `features.weight` at 1 during
training; we train it, like the Rust model (`freeze_feature_scale=True` restores insightface's).
insightface runs the trunk under fp16 autocast when asked; here precision is the caller's choice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: BatchNorm epsilon of every normalisation, as in insightface and src/model/backbone.rs.
BN_EPS = 1e-5

MODES = ("soft", "hard")
COMBINES = ("sum", "concat")


@dataclass
class IResNetConfig:
    """Backbone hyper-parameters, field for field the Rust `IResNetConfig`."""

    blocks: list[int]
    widths: list[int]
    stem_width: int = 64
    input_side: int = 112
    output_width: int = 512
    dropout: float = 0.0

    @classmethod
    def preset(cls, name: str) -> IResNetConfig:
        """The Rust presets by name: r18, r34, r50, r100, tiny, small."""
        paper = [64, 128, 256, 512]
        presets = {
            "r18": lambda: cls([2, 2, 2, 2], paper),
            "r34": lambda: cls([3, 4, 6, 3], paper),
            "r50": lambda: cls([3, 4, 14, 3], paper),
            "r100": lambda: cls([3, 13, 30, 3], paper),
            "tiny": lambda: cls([1, 1, 1, 1], [16, 32, 64, 128], 16, 32, 128),
            "small": lambda: cls([2, 2, 2, 2], [32, 64, 128, 256], 32, 64, 256),
        }
        if name not in presets:
            raise ValueError(f"backbone: expected one of {'|'.join(presets)}, found `{name}`")
        return presets[name]()

    @property
    def final_side(self) -> int:
        """Side of the last feature map (`input_side / 2^stages`)."""
        return self.input_side >> len(self.blocks)

    def validate(self) -> None:
        """Raises ValueError naming the field, as the Rust `validate` does."""
        if not self.blocks or min(self.blocks) < 1:
            raise ValueError(
                f"backbone.blocks: one or more stages of >= 1 block, found {self.blocks}"
            )
        if len(self.widths) != len(self.blocks):
            raise ValueError(
                f"backbone.widths: one width per stage ({len(self.blocks)}), found {self.widths}"
            )
        if min(self.widths) < 1 or self.stem_width < 1 or self.output_width < 1:
            raise ValueError(f"backbone.widths: positive widths, found {self.widths}")
        divisor = 1 << len(self.blocks)
        if self.input_side <= 0 or self.input_side % divisor:
            raise ValueError(
                f"backbone.input_side: a positive multiple of {divisor}, found {self.input_side}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"backbone.dropout: a probability in [0, 1), found {self.dropout}")


@dataclass
class GroupFaceConfig:
    """Head hyper-parameters, field for field the Rust `GroupFaceConfig`."""

    backbone: IResNetConfig
    groups: int = 32
    mode: str = "soft"
    combine: str = "sum"
    embedding: int = 512
    shared: int = 4096
    gdn_hidden: int = 512
    gdn_feature: int = 256

    @classmethod
    def preset(cls, name: str, groups: int) -> GroupFaceConfig:
        """`tiny` and `small` shrink the head like the Rust presets; others are the paper's."""
        backbone = IResNetConfig.preset(name)
        if name == "tiny":
            return cls(backbone, groups, embedding=64, shared=256, gdn_hidden=64, gdn_feature=32)
        if name == "small":
            return cls(backbone, groups, embedding=128, shared=1024, gdn_hidden=128, gdn_feature=64)
        return cls(backbone, groups)

    @property
    def is_baseline(self) -> bool:
        """`groups = 0`: plain ArcFace, the backbone emits the embedding."""
        return self.groups == 0

    def backbone_config(self) -> IResNetConfig:
        """The backbone with its output width set for this head (D or S)."""
        width = self.embedding if self.is_baseline else self.shared
        return dataclasses.replace(self.backbone, output_width=width)

    @property
    def output_width(self) -> int:
        """Width of v̄: D, or 2D with concatenation."""
        concat = not self.is_baseline and self.combine == "concat"
        return 2 * self.embedding if concat else self.embedding

    def validate(self) -> None:
        """Raises ValueError naming the key."""
        self.backbone_config().validate()
        for key in ("embedding", "shared", "gdn_hidden", "gdn_feature"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: a positive width, found {getattr(self, key)}")
        if not 0 <= self.groups <= 4096:
            raise ValueError(f"groups: 0 (baseline) to 4096, found {self.groups}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected {'|'.join(MODES)}, found `{self.mode}`")
        if self.combine not in COMBINES:
            raise ValueError(f"combine: expected {'|'.join(COMBINES)}, found `{self.combine}`")

    def to_dict(self) -> dict:
        """Plain JSON-able form (for fixture manifests)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GroupFaceConfig:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["backbone"] = IResNetConfig(**data["backbone"])
        return cls(**data)


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def _bn1d(width: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(width, eps=BN_EPS)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN, conv3x3, BN, PReLU, conv3x3(stride), BN, plus the shortcut; no activation after the add.

    The stride sits on the second convolution (insightface's choice), so the first one runs at
    the input resolution; a 1x1 projection shortcut exists only when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = _bn2d(cin)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = _bn2d(cout)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = _bn2d(cout)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), _bn2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        """[B, cin, h, w] -> [B, cout, h / stride, w / stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.bn1(x))
        out = self.prelu(self.bn2(out))
        out = self.bn3(self.conv2(out))
        return out + identity


class IResNet(nn.Module):
    """insightface's IResNet with configurable stages, widths and input side.

    Stages are `layer1..layerN` (N = len(blocks)); every stage starts with stride 2.
    """

    def __init__(self, config: IResNetConfig, freeze_feature_scale: bool = False) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.conv1 = _conv3x3(3, config.stem_width)
        self.bn1 = _bn2d(config.stem_width)
        self.prelu = nn.PReLU(config.stem_width)
        cin = config.stem_width
        stages = zip(config.blocks, config.widths, strict=True)
        for stage, (count, width) in enumerate(stages, start=1):
            # The first block of a stage halves the resolution and changes the width.
            blocks = [
                IBasicBlock(cin if j == 0 else width, width, 2 if j == 0 else 1)
                for j in range(count)
            ]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = _bn2d(cin)
        self.dropout = nn.Dropout(p=config.dropout)
        self.fc = nn.Linear(cin * config.final_side**2, config.output_width)
        self.features = _bn1d(config.output_width)
        self._init_like_insightface(freeze_feature_scale)

    def _init_like_insightface(self, freeze_feature_scale: bool) -> None:
        # Convs N(0, 0.1) as insightface and src/model/backbone.rs; BN scale 1, shift 0 (PyTorch's
        # default); Linear keeps PyTorch's default, which equals Burn's LinearConfig default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
        if freeze_feature_scale:
            nn.init.constant_(self.features.weight, 1.0)
            self.features.weight.requires_grad = False

    def stages(self) -> list[nn.Sequential]:
        """`layer1..layerN` in order."""
        return [getattr(self, f"layer{s}") for s in range(1, len(self.config.blocks) + 1)]

    def forward(self, images: Tensor) -> Tensor:
        """[B, 3, side, side] (pixels in [-1, 1]) -> [B, output_width]."""
        x = self.prelu(self.bn1(self.conv1(images)))
        for stage in self.stages():
            x = stage(x)
        x = self.dropout(self.bn2(x))
        # [B, C, h, w] -> [B, C*h*w], channel-major: the layout `fc.weight` expects.
        x = torch.flatten(x, 1)
        return self.features(self.fc(x))


class GroupFc(nn.Module):
    """The K group FC-BN layers as one [K, S, D] weight and one BN over K*D (group-major).

    One batched weight (not K modules) so that all groups run as a single batched matmul, as
    SPEC section 1 asks and as the Rust `GroupFc` does; keeping Burn's [K, S, D] layout means a
    loader copies it without a transpose.
    """

    def __init__(self, groups: int, shared: int, embedding: int) -> None:
        super().__init__()
        bound = shared**-0.5  # nn.Linear's default range, like the Rust GroupFcConfig
        self.weight = nn.Parameter(torch.empty(groups, shared, embedding).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, embedding).uniform_(-bound, bound))
        self.bn = _bn1d(groups * embedding)

    @property
    def groups(self) -> int:
        """K."""
        return self.weight.shape[0]

    def forward_all(self, shared: Tensor) -> Tensor:
        """All K representations: [B, S] -> [B, K, D]."""
        k, _, d = self.weight.shape
        batch = shared.shape[0]
        # [B, S] x [K, S, D] -> [K, B, D] (matmul broadcasts the batch over K)
        y = torch.matmul(shared, self.weight) + self.bias.unsqueeze(1)
        # [K, B, D] -> [B, K*D]: each (group, unit) has its own BN statistics
        y = y.transpose(0, 1).reshape(batch, k * d)
        return self.bn(y).reshape(batch, k, d)

    def forward_selected(self, shared: Tensor, selected: Tensor) -> Tensor:
        """Only the selected group's FC per sample (H-GroupFace inference): [B, S] -> [B, D].

        Uses the BN running statistics, so it is an inference path, exactly like Rust's
        `forward_selected`; it touches one [S, D] slice per sample instead of all K.
        """
        k, _, d = self.weight.shape
        out = shared.new_empty(shared.shape[0], d)
        mean = self.bn.running_mean.view(k, d)
        var = self.bn.running_var.view(k, d)
        gamma = self.bn.weight.view(k, d)
        beta = self.bn.bias.view(k, d)
        for group in torch.unique(selected).tolist():
            rows = (selected == group).nonzero(as_tuple=True)[0]
            y = shared[rows] @ self.weight[group] + self.bias[group]
            scale = gamma[group] / torch.sqrt(var[group] + self.bn.eps)
            out[rows] = (y - mean[group]) * scale + beta[group]
        return out


class GroupDecisionNetwork(nn.Module):
    """v_x -> (v̂, group logits): BN, FC, PReLU, BN, FC (v̂, no activation), FC (K logits).

    Field names are the Rust `GroupDecisionNetwork`'s, so keys map one to one.
    """

    def __init__(self, embedding: int, groups: int, hidden: int = 512, feature: int = 256) -> None:
        super().__init__()
        self.bn_in = _bn1d(embedding)
        self.fc1 = nn.Linear(embedding, hidden)
        self.act = nn.PReLU(hidden)
        self.bn_hidden = _bn1d(hidden)
        self.fc2 = nn.Linear(hidden, feature)
        self.classifier = nn.Linear(feature, groups)

    def forward(self, instance: Tensor) -> tuple[Tensor, Tensor]:
        """[B, D] -> (v̂ [B, F], logits [B, K])."""
        x = self.fc1(self.bn_in(instance))
        x = self.bn_hidden(self.act(x))
        feature = self.fc2(x)
        return feature, self.classifier(feature)


class GroupHead(nn.Module):
    """FC_inst (FC-BN), the K group FCs and the GDN; mode and combine are not weights."""

    def __init__(self, config: GroupFaceConfig) -> None:
        super().__init__()
        self.instance_fc = nn.Linear(config.shared, config.embedding)
        self.instance_bn = _bn1d(config.embedding)
        self.group_fc = GroupFc(config.groups, config.shared, config.embedding)
        self.gdn = GroupDecisionNetwork(
            config.embedding, config.groups, config.gdn_hidden, config.gdn_feature
        )
        self.mode = config.mode
        self.combine = config.combine


class GroupFaceOutput(NamedTuple):
    """What the forward pass produces; names follow Rust's `GroupFaceOutput`/`GroupOutput`.

    embedding: v̄ [B, D] or [B, 2D]; instance: v_x [B, D]; logits: group logits [B, K];
    probs: p(G_k|x) [B, K]; feature: the GDN's v̂ [B, F]; representations: all v_x^{G_k}
    [B, K, D] (None under hard inference); aggregate: v_x^G [B, D]; selected: the argmax group
    per sample [B] (int64, hard mode only). Group fields are None for the baseline.
    """

    embedding: Tensor
    instance: Tensor
    logits: Tensor | None = None
    probs: Tensor | None = None
    feature: Tensor | None = None
    representations: Tensor | None = None
    aggregate: Tensor | None = None
    selected: Tensor | None = None


class GroupFace(nn.Module):
    """GroupFace, or the plain ArcFace baseline when `groups = 0` (then `head` is None)."""

    def __init__(self, config: GroupFaceConfig, freeze_feature_scale: bool = False) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.backbone = IResNet(config.backbone_config(), freeze_feature_scale)
        self.head: GroupHead | None = None if config.is_baseline else GroupHead(config)

    @property
    def groups(self) -> int:
        """K (0 for the baseline)."""
        return 0 if self.head is None else self.head.group_fc.groups

    def forward(self, images: Tensor, mode: str | None = None) -> GroupFaceOutput:
        """[B, 3, side, side] -> GroupFaceOutput.

        `mode` overrides the configured one, so a soft-trained model can be read with hard
        inference. Hard mode computes all K group FCs in training mode (each group's BN then sees
        the whole batch, as in Rust) and only the selected group's FC in eval mode.
        """
        shared = self.backbone(images)
        head = self.head
        if head is None:
            return GroupFaceOutput(embedding=shared, instance=shared)
        mode = head.mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode: expected {'|'.join(MODES)}, found `{mode}`")
        instance = head.instance_bn(head.instance_fc(shared))
        feature, logits = head.gdn(instance)
        probs = torch.softmax(logits, dim=1)  # over the group axis, never the batch
        selected = None
        if mode == "soft":
            representations = head.group_fc.forward_all(shared)
            # [B, K, 1] * [B, K, D] summed over K -> [B, D]
            aggregate = (probs.unsqueeze(2) * representations).sum(dim=1)
        else:
            selected = probs.argmax(dim=1)  # ties go to the lowest index, as in Rust
            if self.training:
                representations = head.group_fc.forward_all(shared)
                index = selected.view(-1, 1, 1).expand(-1, 1, representations.shape[2])
                aggregate = representations.gather(1, index).squeeze(1)
            else:
                representations = None
                aggregate = head.group_fc.forward_selected(shared, selected)
        if head.combine == "sum":
            embedding = instance + aggregate
        else:
            embedding = torch.cat([instance, aggregate], dim=1)
        return GroupFaceOutput(
            embedding, instance, logits, probs, feature, representations, aggregate, selected
        )


def backbone_key_map(config: IResNetConfig, prefix: str = "") -> dict[str, str]:
    """PyTorch module path -> Rust module path for every backbone module (not leaf names).

    For loaders and docs: e.g. `layer2.0.downsample.0` -> `blocks[1].downsample.conv`.
    """
    mapping = {
        "conv1": "stem",
        "bn1": "stem_bn",
        "prelu": "stem_act",
        "bn2": "out_bn",
        "fc": "fc",
        "features": "features",
    }
    n = 0
    for stage, count in enumerate(config.blocks, start=1):
        for j in range(count):
            torch_block, rust_block = f"layer{stage}.{j}", f"blocks.{n}"
            for name in ("bn1", "conv1", "bn2", "conv2", "bn3"):
                mapping[f"{torch_block}.{name}"] = f"{rust_block}.{name}"
            mapping[f"{torch_block}.prelu"] = f"{rust_block}.act"
            mapping[f"{torch_block}.downsample.0"] = f"{rust_block}.downsample.conv"
            mapping[f"{torch_block}.downsample.1"] = f"{rust_block}.downsample.bn"
            n += 1
    return {prefix + k: prefix + v for k, v in mapping.items()}


# ---------------------------------------------------------------------------------------------
# Training pieces shared by the bench (SPEC section 2), mirroring src/objective/loss.rs and src/objective/labels.rs.
# ---------------------------------------------------------------------------------------------


class MarginSoftmax(nn.Module):
    """ArcFace margin softmax with exact gradients and the th/mm guard (src/objective/loss.rs).

    Target logit `s*cos(theta + m)`, replaced by `s*(cos theta - m*sin m)` where
    `theta + m > pi`; W is bias-free and L2-normalised row-wise in the forward pass.
    """

    def __init__(self, classes: int, width: int, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__()
        std = (2.0 / (classes + width)) ** 0.5  # Xavier-normal, like MarginSoftmaxConfig::init
        self.weight = nn.Parameter(torch.randn(classes, width) * std)
        self.scale = scale
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.threshold = -self.cos_m  # cos(pi - m)
        self.fallback = self.sin_m * margin  # sin(pi - m) * m

    def forward(self, embedding: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        """[B, width], [B] -> mean cross-entropy (scalar).

        `index` (Partial FC, see `partial_fc_sample`): the sorted rows of W to classify against,
        `labels` then being positions in `index`; None uses every row. The rows are gathered
        from the one Parameter, so its gradient is dense and zero outside `index`.
        """
        x = F.normalize(embedding, dim=1, eps=1e-12)
        weight = self.weight if index is None else self.weight[index]
        w = F.normalize(weight, dim=1, eps=1e-12)
        cosine = (x @ w.t()).clamp(-1.0, 1.0)
        target = cosine.gather(1, labels.view(-1, 1))
        # Clamping away from 0 keeps the sqrt's gradient finite at |cos| = 1.
        sine = torch.sqrt((1.0 - target * target).clamp_min(1e-12))
        phi = target * self.cos_m - sine * self.sin_m
        margined = torch.where(target <= self.threshold, target - self.fallback, phi)
        one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        logits = (cosine + one_hot * (margined - target)) * self.scale
        return F.cross_entropy(logits, labels)


def partial_fc_sample(labels: Tensor, classes: int, sample_rate: float) -> tuple[Tensor, Tensor]:
    """arcface_torch's PartialFC_V2 class sampling on one process: (index, remapped labels).

    The batch's classes (positives) plus random other classes, `int(sample_rate * classes)` in
    all (never fewer than the positives), as sorted row indices of W; labels become positions
    in that index (`searchsorted`). Uses the global torch RNG.
    """
    positive = torch.unique(labels, sorted=True)
    num_sample = int(sample_rate * classes)
    if num_sample >= positive.numel():
        perm = torch.rand(classes, device=labels.device)
        perm[positive] = 2.0
        index = torch.topk(perm, k=num_sample)[1].sort()[0]
    else:
        index = positive
    return index, torch.searchsorted(index, labels)


class SelfDistributedLabeler:
    """G* = argmax((p - E[p]) / K + 1/K), E[p] the mean of the last `window` batch means.

    Kept on detached probabilities, like the Rust `GroupLabeler` with `self-distributed`.
    """

    def __init__(self, window: int = 32) -> None:
        self.window = max(1, window)
        self.history: list[Tensor] = []

    def __call__(self, probs: Tensor) -> Tensor:
        """[B, K] -> [B] int64 labels; updates the window."""
        probs = probs.detach().float()
        self.history.append(probs.mean(dim=0))
        self.history = self.history[-self.window :]
        expected = torch.stack(self.history).mean(dim=0)
        k = probs.shape[1]
        return ((probs - expected) / k + 1.0 / k).argmax(dim=1)


class TrainModel(nn.Module):
    """Model + class weights as one module, so one optimiser covers both (src/train/step.rs)."""

    def __init__(self, config: GroupFaceConfig, classes: int, lam: float = 0.1) -> None:
        super().__init__()
        self.model = GroupFace(config)
        self.criterion = MarginSoftmax(classes, config.output_width)
        self.lam = lam

    def loss(
        self,
        out: GroupFaceOutput,
        classes: Tensor,
        group_labels: Tensor | None,
        index: Tensor | None = None,
    ) -> Tensor:
        """Total loss L1 + lambda*L2, in float32 (L2 only when group labels are given).

        Separate from the forward pass so that a caller can compile `self.model` alone: the
        labeler's Python-side window would otherwise force a recompilation every step. `index`
        restricts L1 to those class rows (Partial FC; `classes` are then positions in it).
        """
        loss = self.criterion(out.embedding.float(), classes, index)
        if out.logits is not None and group_labels is not None:
            loss = loss + self.lam * F.cross_entropy(out.logits.float(), group_labels)
        return loss

    def forward(self, images: Tensor, classes: Tensor, labeler: SelfDistributedLabeler) -> Tensor:
        """Forward pass, group labels (which update the labeler's window) and total loss."""
        out = self.model(images)
        group_labels = None if out.probs is None else labeler(out.probs)
        return self.loss(out, classes, group_labels)
