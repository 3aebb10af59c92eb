#!/usr/bin/env python3
"""Independent count of IResNet / GroupFace forward FLOPs, for checking src/model/summary.rs.

FLOPs = 2 x multiply-adds of convolutions and FC layers for one 112x112 image, the
convention under which the paper prints ArcFace r100 24.2, H-GroupFace 24.4 and
S-GroupFace 24.5 GFLOPs. Run: python3 scripts/count_flops.py
"""


def iresnet_macs(blocks, widths=(64, 128, 256, 512), side=112, stem=64, out=512):
    """Returns (conv MACs, output FC MACs) of insightface's IResNet."""
    macs = 9 * 3 * stem * side * side  # stem conv3x3, stride 1
    h, cin = side, stem
    for count, width in zip(blocks, widths):
        for i in range(count):
            stride = 2 if i == 0 else 1
            ho = h // stride
            macs += 9 * cin * width * h * h  # conv1, stride 1
            macs += 9 * width * width * ho * ho  # conv2, carries the stride
            if stride != 1 or cin != width:
                macs += cin * width * ho * ho  # 1x1 projection shortcut
            h, cin = ho, width
    return macs, cin * h * h * out


def main():
    presets = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}
    for name, blocks in presets.items():
        conv, fc = iresnet_macs(blocks)
        print(f"{name} baseline: conv MACs {conv}, fc MACs {fc}, GFLOPs {2 * (conv + fc) / 1e9:.4f}")
    conv, fc = iresnet_macs(presets["r100"], out=4096)
    s, d, k = 4096, 512, 32
    trunk = 2 * (conv + fc)
    gdn = 2 * (d * 512 + 512 * 256 + 256 * k)
    print(f"r100 H-GroupFace GFLOPs {(trunk + 2 * s * d * 2 + gdn) / 1e9:.4f}")
    print(f"r100 S-GroupFace GFLOPs {(trunk + 2 * s * d * (1 + k) + gdn) / 1e9:.4f}")


if __name__ == "__main__":
    main()
