"""SD2Net: single-frame Spatial Difference Decomposition Network (Hu et al., arXiv 2512.03470).

Three stacked U-modules: an RSU-7 stem, a four-level U-Net whose down-sampling is SD3M (difference
decomposition of each 2x2 cell) and whose skips are enhanced by SD2M (difference decomposition of each
pixel's neighbourhood), and an RSU-7 tail with a small head. Both decomposition modules are the Basis
Decomposition Module (BDM): a learned target feature is projected onto fixed, L2-normalised
difference bases and rebuilt from them, which keeps what looks like a small bright spot and drops
smooth background. The canonical configuration (spec sd2net.md §2-§6) has 262,442 parameters.

Example:
    >>> model = SD2Net().eval()
    >>> logits = model(torch.rand(2, 1, 256, 256))  # frames normalised to [0, 1]
    >>> logits.shape
    torch.Size([2, 1, 256, 256])

STD2Net reuses this class as its per-frame backbone (``head=False``, 32 output channels).
"""

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``reference`` (align_corners=False)."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (with bias) -> BatchNorm -> ReLU; U²-Net's REBNCONV."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class RSU7(nn.Module):
    """U-module: U²-Net residual U-block of depth 7 (sd2net.md §3, "3 stacked U-modules")."""

    depth = 6  # encoder levels before the bottom convolution; five of them pooled

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.input_conv = ConvBNReLU(in_channels, out_channels)
        self.encoder = nn.ModuleList(
            [ConvBNReLU(out_channels, mid_channels)]
            + [ConvBNReLU(mid_channels, mid_channels) for _ in range(self.depth - 1)]
        )
        self.bottom = ConvBNReLU(mid_channels, mid_channels)
        self.decoder = nn.ModuleList(
            [ConvBNReLU(2 * mid_channels, mid_channels) for _ in range(self.depth - 1)]
            + [ConvBNReLU(2 * mid_channels, out_channels)]
        )
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.input_conv(x)
        skips = []
        h = residual
        for level, conv in enumerate(self.encoder):
            h = conv(self.pool(h) if level else h)
            skips.append(h)
        deepest = skips.pop()
        h = self.decoder[0](torch.cat([self.bottom(deepest), deepest], dim=1))
        for conv, skip in zip(self.decoder[1:], reversed(skips), strict=True):
            h = conv(torch.cat([upsample_to(h, skip), skip], dim=1))
        return h + residual


class ResBlock(nn.Module):
    """Encoder residual block: two 3x3 conv+BN with LeakyReLU(0.01), 1x1 projection shortcut (§3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.01)
        h = self.bn2(self.conv2(h))
        return F.leaky_relu(h + self.shortcut(x), 0.01)


def basis_decomposition(target: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """BDM (§4): project the target feature onto L2-normalised bases and rebuild it from them.

    target: (B, G, H, W); bases: (B, G, K, H, W) -> (B, G, H, W). The bases are not orthogonalised:
    the coefficients are projection scores s_k = <t, P̂_k>, and the output is Σ_k s_k P̂_k.
    Norms are taken in fp32 or wider (eps 1e-12, as torch's normalize): in fp16 a whole frame's sum of squares
    overflows and the eps underflows, which turned the all-zero bases of a stream's first frames
    (current minus identical earlier frames) into NaN.
    """
    batch, groups, height, width = target.shape
    flat_bases = bases.flatten(3)  # (B, G, K, N)
    norms = _frame_norms(bases)
    inverse_norms = norms.clamp_min(1e-12).reciprocal().clamp_max(torch.finfo(bases.dtype).max)
    unit_bases = flat_bases * inverse_norms.to(bases.dtype)
    scores = target.reshape(batch, groups, 1, height * width) @ unit_bases.transpose(-1, -2)
    return (scores @ unit_bases).view(batch, groups, height, width)


def _frame_norms(bases: torch.Tensor) -> torch.Tensor:
    """L2 norm of each basis (B, G, K, H, W) over its frame, in fp32 or wider: (B, G, K, 1).

    In an ONNX export the squares are summed along rows, then the row sums: ONNX Runtime's
    ReduceL2 sums a whole frame in one float32 accumulator, which at 640x512 made its SD2Net logits
    differ from float64 by 1.4e-2 (torch's: 9e-4); rows first brings it to the level of torch's.
    """
    wide = torch.promote_types(bases.dtype, torch.float32)  # float64 stays float64
    if torch.onnx.is_in_onnx_export():
        row_sums = bases.to(wide).square().sum(dim=-1)  # (B, G, K, H)
        return row_sums.sum(dim=-1, keepdim=True).sqrt()
    return torch.linalg.vector_norm(bases.flatten(3), dim=-1, keepdim=True, dtype=wide)


def difference_kernels() -> torch.Tensor:
    """The 8 "centre minus neighbour" 3x3 kernels of SD2M (§5): TL, T, TR, R, then their 180° flips."""
    first_half = torch.zeros(4, 3, 3)
    for index, (row, col) in enumerate([(0, 0), (0, 1), (0, 2), (1, 2)]):
        first_half[index, 1, 1] = 1.0
        first_half[index, row, col] = -1.0
    return torch.cat([first_half, first_half.flip(-1, -2)]).unsqueeze(1)  # (8, 1, 3, 3)


def haar_kernels() -> torch.Tensor:
    """The 3 unnormalised Haar detail kernels of SD3M (§6): left-right, top-bottom, diagonal."""
    return torch.tensor(
        [[[1.0, -1.0], [1.0, -1.0]], [[1.0, 1.0], [-1.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]]
    ).unsqueeze(1)  # (3, 1, 2, 2)


class SD2M(nn.Module):
    """Spatial Difference Decomposition Module (§5): BDM over local max-minus-mean and directional
    differences at several dilations, on a channel-reduced map; used to enhance the U-Net skips."""

    kernels: torch.Tensor

    def __init__(self, channels: int, reduction: int, dilations: Sequence[int] = (1, 3)) -> None:
        super().__init__()
        hidden = channels // reduction
        self.hidden = hidden
        self.dilations = tuple(dilations)
        self.reduce = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden))
        self.target = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.expand = nn.Sequential(
            nn.Conv2d(hidden, hidden, 1), nn.BatchNorm2d(hidden), nn.Conv2d(hidden, channels, 1)
        )
        self.register_buffer(
            "kernels", difference_kernels().repeat(hidden, 1, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.reduce(x)  # (B, h, H, W)
        batch, hidden, height, width = z.shape
        contrast = F.max_pool2d(z, 3, 1, 1) - F.avg_pool2d(z, 3, 1, 1)
        differences = [
            F.conv2d(z, self.kernels, padding=d, dilation=d, groups=hidden).view(
                batch, hidden, 8, height, width
            )
            for d in self.dilations
        ]
        bases = torch.cat([contrast.unsqueeze(2), *differences], dim=2)  # (B, h, 17, H, W)
        return self.expand(basis_decomposition(self.target(z), bases))


class SD3M(nn.Module):
    """Spatial Difference Decomposition Down-sampling Module (§6): BDM over the 2x2 max and the three
    Haar details of each cell, with the target from a 1x1 conv of the 2x2 average; halves H and W."""

    kernels: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.target = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(channels, channels, 1))
        self.register_buffer("kernels", haar_kernels().repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        details = F.conv2d(x, self.kernels, stride=2, groups=channels)
        bases = torch.cat(
            [
                F.max_pool2d(x, 2).unsqueeze(2),
                details.view(batch, channels, 3, height // 2, width // 2),
            ],
            dim=2,
        )  # (B, C, 4, H/2, W/2)
        return basis_decomposition(self.target(x), bases)


class InceptionPool(nn.Module):
    """Down-sampling wrapper (§6); the canonical SD2Net applies SD3M to all channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sd3m = SD3M(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sd3m(x)


class DecoderBlock(nn.Module):
    """U-Net decoder stage (§3 "Up"): upsample + raw skip, gated by the SD2M-enhanced skip, then
    [SD2M skip, gated feature] -> two 3x3 conv+BN+ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(in_channels // 2, in_channels // 2, 1)
        self.convs = nn.Sequential(
            ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels)
        )

    def forward(
        self, deeper: torch.Tensor, enhanced_skip: torch.Tensor, skip: torch.Tensor
    ) -> torch.Tensor:
        gated = torch.sigmoid(self.gate(enhanced_skip)) * (upsample_to(deeper, skip) + skip)
        return self.convs(torch.cat([enhanced_skip, gated], dim=1))


class Head(nn.Module):
    """Output head (§3): grouped 7x7 conv to 2 maps, concatenated with its input, 1x1 conv to 1."""

    def __init__(self, in_channels: int = 8) -> None:
        super().__init__()
        self.context = nn.Conv2d(in_channels, 2, 7, padding=3, groups=2, bias=False)
        self.out = nn.Conv2d(in_channels + 2, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.context(x), x], dim=1))


class SD2Net(nn.Module):
    """SD2Net (§2): RSU-7 stem, SD3M/ResBlock encoder, SD2M-gated decoder, RSU-7 tail and head.

    Input (B, 1, H, W) in [0, 1] with H and W multiples of 16 (see ``models.padding``); output logits
    (B, 1, H, W), or with ``head=False`` the tail's ``out_channels`` feature maps (STD2Net backbone).
    """

    frames = 1
    size_multiple = 16

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 8,
        stage_channels: Sequence[int] = (16, 16, 32, 64, 64),
        sd2m_reductions: Sequence[int] = (2, 4, 8, 16),
        sd2m_dilations: Sequence[int] = (1, 3),
        out_channels: int = 8,
        head: bool = True,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = stage_channels
        self.stem = RSU7(in_channels, base_channels, c1)
        self.downsamples = nn.ModuleList([InceptionPool(c) for c in (c1, c2, c3, c4)])
        self.encoders = nn.ModuleList(
            [ResBlock(c1, c2), ResBlock(c2, c3), ResBlock(c3, c4), ResBlock(c4, c5)]
        )
        self.skip_enhancers = nn.ModuleList(
            [
                SD2M(c, r, sd2m_dilations)
                for c, r in zip((c1, c2, c3, c4), sd2m_reductions, strict=True)
            ]
        )
        self.decoders = nn.ModuleList(
            [
                DecoderBlock(2 * c4, c3),  # (B, c3, H/8, W/8)
                DecoderBlock(2 * c3, c2),  # (B, c2, H/4, W/4)
                DecoderBlock(2 * c2, c1),  # (B, c1, H/2, W/2)
                DecoderBlock(2 * c1, c1),  # (B, c1, H, W)
            ]
        )
        self.tail = RSU7(c1, base_channels, out_channels)
        self.head: nn.Module = Head(out_channels) if head else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]  # x1 (B, 16, H, W)
        for downsample, encoder in zip(self.downsamples, self.encoders, strict=True):
            skips.append(encoder(downsample(skips[-1])))  # x2, x3, x4, then d5 (B, 64, H/16, W/16)
        h = skips.pop()
        enhanced = [sd2m(skip) for sd2m, skip in zip(self.skip_enhancers, skips, strict=True)]
        for decoder, enhanced_skip, skip in zip(
            self.decoders, reversed(enhanced), reversed(skips), strict=True
        ):
            h = decoder(h, enhanced_skip, skip)
        return self.head(self.tail(h))


def _renumber(offset: int, sign: int, template: str) -> Callable[[re.Match[str]], str]:
    """Replacement that renumbers the reference's module counter: ``offset + sign * number``."""
    return lambda match: template.format(offset + sign * int(match.group(1)), *match.groups()[1:])


# Rules from the authors' SDecNet keys to ours, applied in order. The reference counts the
# down/encoder/contras stages 1..4, the decoders 4..1 (deepest first), RSU-7 levels 1..6 and 6d..1d.
_REFERENCE_KEY_RULES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^inc\.", "stem."),
    (r"^outc\.0\.", "tail."),
    (r"^outc\.1\.head\.0\.", "head.context."),
    (r"^outc\.1\.out_conv\.0\.", "head.out."),
    (r"^down(\d)\.sdecd\.origin_conv\.", _renumber(-1, 1, "downsamples.{}.sd3m.target.")),
    (r"^encoder(\d)\.0\.", _renumber(-1, 1, "encoders.{}.")),
    (r"^contras(\d)\.down_layer\.", _renumber(-1, 1, "skip_enhancers.{}.reduce.")),
    (r"^contras(\d)\.origin_conv\.", _renumber(-1, 1, "skip_enhancers.{}.target.")),
    (r"^contras(\d)\.out_conv\.", _renumber(-1, 1, "skip_enhancers.{}.expand.")),
    (r"^decoder(\d)\.sattn\.0\.", _renumber(4, -1, "decoders.{}.gate.")),
    (r"^decoder(\d)\.nConvs\.(\d)\.conv\.", _renumber(4, -1, "decoders.{}.convs.{}.conv.")),
    (r"^decoder(\d)\.nConvs\.(\d)\.norm\.", _renumber(4, -1, "decoders.{}.convs.{}.bn.")),
    (r"\.rebnconvin\.", ".input_conv."),
    (r"\.rebnconv7\.", ".bottom."),
    (r"\.rebnconv([1-6])d\.", _renumber(6, -1, ".decoder.{}.")),
    (r"\.rebnconv([1-6])\.", _renumber(-1, 1, ".encoder.{}.")),
    (r"\.conv_s1\.", ".conv."),
    (r"\.bn_s1\.", ".bn."),
]


def convert_reference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state_dict of the authors' ``SDecNet`` (IRSTD_HC_Platform) to this module's keys.

    Lets weights trained with the reference code (converted to safetensors) load with strict=True.
    """
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in _REFERENCE_KEY_RULES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted
