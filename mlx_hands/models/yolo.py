"""YOLOv8-pose (ultralytics) in MLX: WiLoR's hand detector network, NHWC, BatchNorm folded.

Follows ultralytics 8.1.x `nn/tasks.py` (parse_model over yolov8-pose.yaml), `nn/modules/block.py`
(C2f, SPPF, DFL) and `nn/modules/head.py` (Detect/Pose decoding in eval mode). Parameter names are
the ultralytics state-dict names (`model.<layer>....`) after Conv+BN fusion, so the converter only
folds and transposes. Letterbox, NMS and rescaling live in `mlx_hands.pipeline.detection`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import DetectorConfig
from . import cpu_math
from .compiled import CompiledForward, compile_enabled

STRIDES = (8, 16, 32)  # P3, P4, P5 of yolov8-pose
_SKIPS = {4: "p3", 6: "p4"}  # backbone outputs that the neck concatenates later


class Conv(nn.Module):
    """ultralytics Conv after fusion: Conv2d (with the folded BN as bias) + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, kernel_size=k, stride=s, padding=k // 2, bias=True)
        # the CPU formulations: SiLU from models/cpu_math.py, a 1x1 convolution as one matrix product (MLX's
        # CPU convolution pads and copies its input first); None: on the CPU only
        self.cpu_math: bool | None = None

    def __call__(self, x: mx.array) -> mx.array:
        if not cpu_math.use(self.cpu_math):
            # nn.silu is an mx.compile'd function: on CUDA it JIT-compiles a kernel even in an eager forward,
            # seconds of a cold start; the same formula as plain ops runs on MLX's precompiled kernels
            y = self.conv(x)
            return y * mx.sigmoid(y)
        w = self.conv.weight  # (c2, k, k, c1)
        if w.shape[1] == w.shape[2] == 1 and self.conv.stride == (1, 1):
            y = mx.addmm(self.conv.bias, x.reshape(-1, w.shape[-1]), w.reshape(w.shape[0], -1).T)
            y = y.reshape(*x.shape[:-1], w.shape[0])
        else:
            y = self.conv(x)
        return cpu_math.silu(y)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def __call__(self, x: mx.array) -> mx.array:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convs: split cv1's output, chain n bottlenecks, concat everything."""

    def __init__(self, c1: int, c2: int, n: int, shortcut: bool):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = [Bottleneck(self.c, shortcut) for _ in range(n)]

    def __call__(self, x: mx.array) -> mx.array:
        y = self.cv1(x)
        ys = [y[..., : self.c], y[..., self.c :]]
        for m in self.m:
            ys.append(m(ys[-1]))
        return self.cv2(mx.concatenate(ys, axis=-1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(4 * c_, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)  # -inf padding, like torch

    def __call__(self, x: mx.array) -> mx.array:
        ys = [self.cv1(x)]
        for _ in range(3):
            ys.append(self.m(ys[-1]))
        return self.cv2(mx.concatenate(ys, axis=-1))


class Upsample(nn.Module):
    """Nearest-neighbour x2 (torch nn.Upsample(scale_factor=2, mode='nearest'))."""

    def __call__(self, x: mx.array) -> mx.array:
        return mx.repeat(mx.repeat(x, 2, axis=1), 2, axis=2)


class Concat(nn.Module):
    def __call__(self, xs: list[mx.array]) -> mx.array:
        return mx.concatenate(xs, axis=-1)


class Pose(nn.Module):
    """Detect + keypoint head. cv2: box DFL logits, cv3: class logits, cv4: keypoints."""

    def __init__(self, cfg: DetectorConfig, ch: tuple[int, ...]):
        super().__init__()
        nc, nk, rm = cfg.num_classes, cfg.num_keypoint_channels, cfg.reg_max
        c2 = max(16, ch[0] // 4, 4 * rm)
        c3 = max(ch[0], min(nc, 100))
        c4 = max(ch[0] // 4, nk)
        self.cv2 = [[Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * rm, 1)] for c in ch]
        self.cv3 = [[Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)] for c in ch]
        self.cv4 = [[Conv(c, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, nk, 1)] for c in ch]

    def __call__(self, feats: list[mx.array]) -> mx.array:
        """feats: P3, P4, P5 (B, h, w, C) -> raw (B, A, 4*reg_max + nc + nk), anchors row-major per level."""
        outs = []
        for i, x in enumerate(feats):
            B, h, w, _ = x.shape
            branch = []
            for seq in (self.cv2[i], self.cv3[i], self.cv4[i]):
                y = x
                for layer in seq:
                    y = layer(y)
                branch.append(y)
            outs.append(mx.concatenate(branch, axis=-1).reshape(B, h * w, -1))
        return mx.concatenate(outs, axis=1)


def make_anchors(shapes: list[tuple[int, int]], strides=STRIDES) -> tuple[mx.array, mx.array]:
    """Grid-cell centres (A, 2) as (x, y) in feature units, and the stride of each anchor (A, 1)."""
    points, stride_col = [], []
    for (h, w), s in zip(shapes, strides):
        sx = mx.arange(w, dtype=mx.float32) + 0.5
        sy = mx.arange(h, dtype=mx.float32) + 0.5
        gy, gx = mx.meshgrid(sy, sx, indexing="ij")
        points.append(mx.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1))
        stride_col.append(mx.full((h * w, 1), float(s)))
    return mx.concatenate(points, axis=0), mx.concatenate(stride_col, axis=0)


class YOLOPose(nn.Module):
    """YOLOv8-pose built from DetectorConfig; `model.<i>` mirrors ultralytics' layer list (23 layers)."""

    def __init__(self, config: DetectorConfig, *, compile: bool | None = None):
        super().__init__()
        self.config = config
        self.compile = compile  # mx.compile the forward; None: on a GPU only (models/compiled.py)
        self._compiled = CompiledForward()
        ch, n = config.channels, config.repeats
        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        h12, h15, h18, h21 = ch(512), ch(256), ch(512), ch(1024)
        self.model = [
            Conv(3, c1, 3, 2),  # 0  P1/2
            Conv(c1, c2, 3, 2),  # 1  P2/4
            C2f(c2, c2, n(3), True),  # 2
            Conv(c2, c3, 3, 2),  # 3  P3/8
            C2f(c3, c3, n(6), True),  # 4
            Conv(c3, c4, 3, 2),  # 5  P4/16
            C2f(c4, c4, n(6), True),  # 6
            Conv(c4, c5, 3, 2),  # 7  P5/32
            C2f(c5, c5, n(3), True),  # 8
            SPPF(c5, c5, 5),  # 9
            Upsample(),  # 10
            Concat(),  # 11 cat P4
            C2f(c5 + c4, h12, n(3), False),  # 12
            Upsample(),  # 13
            Concat(),  # 14 cat P3
            C2f(h12 + c3, h15, n(3), False),  # 15 (P3/8 out)
            Conv(h15, ch(256), 3, 2),  # 16
            Concat(),  # 17 cat 12
            C2f(ch(256) + h12, h18, n(3), False),  # 18 (P4/16 out)
            Conv(h18, ch(512), 3, 2),  # 19
            Concat(),  # 20 cat 9
            C2f(ch(512) + c5, h21, n(3), False),  # 21 (P5/32 out)
            Pose(config, (h15, h18, h21)),  # 22
        ]
        self.eval()  # no layer behaves differently in training, but compile_enabled stays off while training

    def __call__(self, x: mx.array, decode: bool = True) -> mx.array:
        """x (B, H, W, 3) RGB in [0, 1], H and W multiples of 32; or uint8 0..255 (divided by 255 here, in
        float32, as ultralytics does on the host).

        decode=True -> (B, 4 + nc + nk, A) float32 as ultralytics' Pose head in eval: xywh boxes and
        keypoint x, y in input pixels, class and keypoint-visibility sigmoids. decode=False -> the raw head
        (B, 4*reg_max + nc + nk, A): DFL logits, class logits, undecoded keypoints.
        A = sum over strides 8/16/32 of (H/s)*(W/s).
        """
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] % 32 or x.shape[2] % 32:
            raise ValueError(f"YOLOPose expects (B, H, W, 3) with H, W multiples of 32, got {tuple(x.shape)}")
        if compile_enabled(self.compile, self.training) and self._compiled.ready(decode):
            return self._compiled.get(lambda t: self._forward(t, decode), self, decode)(x)
        return self._forward(x, decode)

    def _forward(self, x: mx.array, decode: bool = True) -> mx.array:
        m = self.model
        # run in the weights' dtype: a float32 image against bfloat16 weights would promote every
        # convolution (and a cast of every weight) to float32
        if x.dtype == mx.uint8:
            x = x.astype(mx.float32) / 255.0
        x = x.astype(m[0].conv.weight.dtype)
        saved = {}
        for i in range(10):
            x = m[i](x)
            if i in _SKIPS:
                saved[_SKIPS[i]] = x
        p5 = x
        h12 = m[12](m[11]([m[10](p5), saved["p4"]]))
        out3 = m[15](m[14]([m[13](h12), saved["p3"]]))
        out4 = m[18](m[17]([m[16](out3), h12]))
        out5 = m[21](m[20]([m[19](out4), p5]))
        raw = m[22]([out3, out4, out5])  # (B, A, no)
        if not decode:
            return raw.transpose(0, 2, 1)
        shapes = [tuple(f.shape[1:3]) for f in (out3, out4, out5)]
        return self.decode(raw, shapes)

    def decode(self, raw: mx.array, shapes: list[tuple[int, int]]) -> mx.array:
        """raw (B, A, 4*reg_max + nc + nk) -> (B, 4 + nc + nk, A), ultralytics Detect/Pose eval decoding."""
        cfg = self.config
        raw = raw.astype(mx.float32)  # pixel coordinates need fp32 even when the weights are fp16
        B, A, _ = raw.shape
        rm, nc = cfg.reg_max, cfg.num_classes
        nkp, ndim = cfg.kpt_shape
        anchors, strides = make_anchors(shapes)  # (A, 2), (A, 1)

        # DFL: expected bin index of a softmax over reg_max bins, per box side (l, t, r, b).
        dist = mx.softmax(raw[..., : 4 * rm].reshape(B, A, 4, rm), axis=-1)
        dist = dist @ mx.arange(rm, dtype=mx.float32)  # (B, A, 4)
        x1y1 = anchors - dist[..., :2]
        x2y2 = anchors + dist[..., 2:]
        box = mx.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1) * strides

        cls = mx.sigmoid(raw[..., 4 * rm : 4 * rm + nc])

        kpt = raw[..., 4 * rm + nc :].reshape(B, A, nkp, ndim)
        xy = (kpt[..., :2] * 2.0 + (anchors[:, None, :] - 0.5)) * strides[:, None, :]
        parts = [xy, mx.sigmoid(kpt[..., 2:3])] if ndim == 3 else [xy]
        kpt = mx.concatenate(parts, axis=-1).reshape(B, A, nkp * ndim)

        return mx.concatenate([box, cls, kpt], axis=-1).transpose(0, 2, 1)
