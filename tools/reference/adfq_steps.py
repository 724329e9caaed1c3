#!/usr/bin/python3
"""Independent check of ViTQuant's ADFQ-ViT calibration against the published quantizer formulas.

The reference below is written from the formulas of the published ADFQ-ViT code (llwx593/adfq-vit,
quant/quant_layer.py): TokenQuantizer (per-patch outlier-aware, per token over x[:, t, :]),
FC2Quantizer (Shift-Log2: x - x.min() + 1e-6, then the log-sqrt2 step search), LogSqrt2Quantizer
(post-softmax) and UniformAffineQuantizer's 2-D 'mse' search (q, k, v). Quantiles are torch.quantile
('linear' interpolation), with np.percentile (also 'linear') above torch's 2^24-element limit, as the
published code falls back. PyTorch is only used here, never by the toolkit.

  make-calib OUT_DIR [--count 256] [--seed 0]
      picks COUNT Fashion-MNIST training images, writes them as PNG class folders (OUT_DIR/images, for
      `vitq quantize --calib folder:OUT_DIR/images`) and as normalised pixel_values
      (OUT_DIR/pixel_values.safetensors, for `vitq infer --input`).
  compare TAPS.safetensors QUANT.safetensors [--bits 4]
      TAPS: `vitq infer --model <float model> --taps all` on the calibration images (input.POINT);
      QUANT: the checkpoint `vitq quantize --method adfq` wrote. Prints, per kind of point, the median
      and max relative step difference |ours - published| / published over the blocks (per-patch: over
      blocks x tokens), and exits 1 when a gated point (per-patch, Shift-Log2, post-softmax) is outside
      1 % median / 3 % max.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch

MEAN, STD = 0.2860, 0.3530  # ViTConfig.FashionMnistDefault
PCTS = [0.999, 0.9999, 0.99999]


# ---------------------------------------------------------------- safetensors (no extra package)
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64, "U8": np.uint8, "I8": np.int8}.get(info["dtype"])
        if dt is None:
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dt).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        b = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_png_gray(path, img):
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].astype(np.uint8).tobytes() for r in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def make_calib(args):
    d = "/usr/share/datasets/fashion-mnist"
    with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
        imgs = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    idx = np.sort(np.random.default_rng(args.seed).choice(len(imgs), args.count, replace=False))
    for k, i in enumerate(idx):
        folder = os.path.join(args.out, "images", str(int(labels[i])))
        os.makedirs(folder, exist_ok=True)
        write_png_gray(os.path.join(folder, f"{k:05d}.png"), imgs[i])
    x = ((imgs[idx].astype(np.float32) / np.float32(255)) - np.float32(MEAN)) / np.float32(STD)
    write_safetensors(os.path.join(args.out, "pixel_values.safetensors"), {"pixel_values": x[:, None, :, :]})
    print(f"wrote {args.count} images to {args.out}/images and {args.out}/pixel_values.safetensors")


# ---------------------------------------------------------------- the published formulas
def quantile(x, q):
    x = x.reshape(-1)
    if x.numel() <= (1 << 24):
        return torch.quantile(x, q)
    return torch.tensor(np.percentile(x.numpy(), q * 100), dtype=torch.float32)


def lp_all(a, b, p):
    return (a - b).abs().pow(p).mean()


def uniform_q(x, mx, mn, bits):
    delta = (mx - mn) / (2 ** bits - 1)
    zp = (-mn / delta).round()
    return (torch.clamp(torch.round(x / delta) + zp, 0, 2 ** bits - 1) - zp) * delta


def token_step(x, bits):
    """TokenQuantizer.init_quantization_scale(token_wise=False) on one token's values."""
    best, delta, zp = 1e10, None, None
    for p in PCTS:
        mx, mn = quantile(x, p), quantile(x, 1.0 - p)
        s = lp_all(x, uniform_q(x, mx, mn, bits), 2)
        if s < best:
            best, delta = s, (mx - mn) / (2 ** bits - 1)
            zp = (-mn / delta).round()
    return float(delta), float(zp)


def log_sqrt2_q(x, delta, bits):
    from math import sqrt
    xi = torch.round(-1 * (x / delta).log2() * 2)
    mask = xi >= 2 ** bits
    xq = torch.clamp(xi, 0, 2 ** bits - 1)
    odd = (xq % 2) * (sqrt(2) - 1) + 1
    y = 2 ** (-1 * torch.ceil(xq / 2)) * odd * delta
    y[mask] = 0
    return y


def log_step(x, bits):
    """LogSqrt2Quantizer / FC2Quantizer.init_quantization_scale."""
    best, delta = 1e10, x.max()
    for p in PCTS:
        d = quantile(x, p)
        s = lp_all(x, log_sqrt2_q(x, d, bits), 2)
        if s < best:
            best, delta = s, d
    return float(delta)


def affine_2d(x, bits, num=100, p=2.4):
    """UniformAffineQuantizer.perform_2D_search (two-sided data): returns (delta, zero point)."""
    mn, mx = x.min(), x.max()
    if mn >= 0 or mx <= 0:
        return None
    xrange, best, res = mx - mn, 1e10, None
    for i in range(1, num + 1):
        d = (xrange / num * i) / (2 ** bits - 1)
        for zp in range(2 ** bits):
            xq = (torch.clamp(torch.round(x / d) + zp, 0, 2 ** bits - 1) - zp) * d
            s = lp_all(x, xq, p)
            if s < best:
                best, res = s, (float(d), zp)
    return res


def compare(args):
    taps, ck = read_safetensors(args.taps), read_safetensors(args.quant)
    blocks = sorted({int(n.split(".")[2]) for n in taps if n.startswith("input.blocks.")})
    rows = {}

    def add(kind, ours, ref):
        rows.setdefault(kind, []).append(abs(ours - ref) / abs(ref))

    for i in blocks:
        for point in ("attn.qkv", "mlp.fc1"):
            x = torch.from_numpy(taps[f"input.blocks.{i}.{point}"].copy())
            x[x.abs() > args.alpha] = 0  # the outliers are zeroed before calibration
            ours = ck[f"quant.act.blocks.{i}.{point}.scale"]
            for t in range(x.shape[1]):
                add(f"per-patch, {point.split('.')[1]} input", float(ours[t]), token_step(x[:, t, :], args.bits)[0])
        x = torch.from_numpy(taps[f"input.blocks.{i}.mlp.fc2"].copy())
        add("Shift-Log2, fc2 input", float(ck[f"quant.act.blocks.{i}.mlp.fc2.delta"][0]), log_step(x - x.min() + 1e-6, args.bits))
        add("post-softmax log-sqrt2", float(ck[f"quant.act.blocks.{i}.attn.probs.delta"][0]),
            log_step(torch.from_numpy(taps[f"input.blocks.{i}.attn.probs"].copy()), args.bits))
        if i in args.qkv_blocks:
            for p in ("q", "k", "v"):
                x = torch.from_numpy(taps[f"input.blocks.{i}.attn.{p}"].copy())
                r = affine_2d(x, args.bits)
                if r is not None:
                    add("q / k / v (uniform, 2-D)", float(ck[f"quant.act.blocks.{i}.attn.{p}.scale"][0]), r[0])
    gated = ("per-patch", "Shift-Log2", "post-softmax")
    ok = True
    print(f"| point | n | step, median | step, max | gate |")
    print(f"|---|---|---|---|---|")
    for kind, d in rows.items():
        d = np.array(d) * 100
        g = kind.startswith(gated)
        passed = (np.median(d) <= 1 and d.max() <= 3) if g else None
        ok = ok and (passed is None or bool(passed))
        print(f"| {kind} | {len(d)} | {np.median(d):.3f} % | {d.max():.3f} % | {'pass' if passed else 'FAIL' if g else '-'} |")
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-calib")
    m.add_argument("out")
    m.add_argument("--count", type=int, default=256)
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("taps")
    c.add_argument("quant")
    c.add_argument("--bits", type=int, default=4)
    c.add_argument("--alpha", type=float, default=5.0)
    c.add_argument("--qkv-blocks", type=int, nargs="*", default=[0], help="blocks whose q/k/v 2-D search is re-run (slow: 1,600 candidates at 4 bits)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    make_calib(a) if a.cmd == "make-calib" else compare(a)


if __name__ == "__main__":
    main()
