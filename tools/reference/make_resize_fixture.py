#!/usr/bin/python3
"""Golden fixtures for ViTQuant's resize and evaluation transform (run once by hand, never by CI).

Needs Debian's python3-torch, python3-pil and python3-numpy (use /usr/bin/python3, not a pyenv shim).
Writes, little-endian, into tests/ViTQuant.Tests/fixtures/:

resize_torch.bin  b"RSZT", int32 count, then per case: int32 C, inH, inW, outH, outW,
                  float32 input[C*inH*inW], float32 output[C*outH*outW]
                  output = torch.nn.functional.interpolate(x[None], (outH, outW), mode='bicubic',
                           antialias=True, align_corners=False)[0]
resize_pil.bin    b"RSZP", int32 count, then per case: int32 channels, inW, inH, outW, outH,
                  uint8 input[inH*inW*channels] (HWC), uint8 output[outH*outW*channels] (HWC)
                  output = PIL.Image.resize((outW, outH), Image.BICUBIC) on mode L / RGB
resize_eval.bin   b"RSZE", int32 count, then per case: int32 nbytes, uint8 file[nbytes] (JPEG/PNG),
                  int32 size, float64 crop_pct, int32 C, uint8 expected[C*size*size] (CHW)
                  expected = torchvision's eval pipeline done with PIL by hand: open, convert('RGB'),
                  resize shorter side to floor(size/crop_pct) with BICUBIC, CenterCrop(size)
"""
import io
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "ViTQuant.Tests", "fixtures")
rng = np.random.default_rng(20240611)


def smooth_noise(h, w, c):
    """Low-frequency structure plus noise and hard edges, so both smooth and clipping paths are hit."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (3 + k) + yy / (5 + 2 * k) + k) for k in range(c)], -1)
    img = 127.5 + 90 * base + rng.normal(0, 30, (h, w, c))
    img[h // 3: h // 2, :, :] = 255  # a hard white band: bicubic over/undershoot gets clipped
    img[:, w // 4: w // 4 + 2, :] = 0
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_torch(path):
    cases = [(3, 37, 29, 11, 13), (1, 7, 5, 16, 12), (2, 40, 40, 40, 17), (1, 64, 48, 8, 6), (3, 20, 30, 9, 45)]
    with open(path, "wb") as f:
        f.write(b"RSZT" + struct.pack("<i", len(cases)))
        for c, ih, iw, oh, ow in cases:
            x = torch.from_numpy(rng.random((c, ih, iw), dtype=np.float32))
            y = F.interpolate(x[None], size=(oh, ow), mode="bicubic", antialias=True, align_corners=False)[0]
            f.write(struct.pack("<5i", c, ih, iw, oh, ow))
            f.write(x.numpy().astype("<f4").tobytes())
            f.write(y.numpy().astype("<f4").tobytes())


def write_pil(path):
    # (channels, inW, inH, outW, outH)
    cases = [(3, 37, 29, 11, 13), (1, 50, 33, 71, 20), (3, 120, 90, 32, 24), (3, 16, 16, 16, 40), (1, 9, 7, 9, 7)]
    with open(path, "wb") as f:
        f.write(b"RSZP" + struct.pack("<i", len(cases)))
        for c, iw, ih, ow, oh in cases:
            a = smooth_noise(ih, iw, c)
            img = Image.fromarray(a[:, :, 0] if c == 1 else a, "L" if c == 1 else "RGB")
            out = np.asarray(img.resize((ow, oh), Image.BICUBIC)).reshape(oh, ow, c)
            f.write(struct.pack("<5i", c, iw, ih, ow, oh))
            f.write(a.tobytes())
            f.write(out.astype(np.uint8).tobytes())


def torchvision_eval(data, size, crop_pct):
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = math.floor(size / crop_pct)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = scale, int(scale * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    assert size <= nw and size <= nh
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img).transpose(2, 0, 1).copy()


def encode(arr, mode, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, fmt, **kw)
    return buf.getvalue()


def write_eval(path):
    rgb = smooth_noise(61, 75, 3)
    gray = smooth_noise(70, 50, 1)[:, :, 0]
    rgba = np.concatenate([smooth_noise(33, 40, 3), rng.integers(0, 256, (33, 40, 1), dtype=np.uint8)], -1)
    rgb2 = smooth_noise(53, 67, 3)
    cmyk = smooth_noise(30, 26, 4)
    cases = [
        (encode(rgb, "RGB", "JPEG", quality=90), 32, 0.875),          # 4:2:0 chroma upsampling
        (encode(gray, "L", "JPEG", quality=95), 24, 0.9),             # gray → RGB replication
        (encode(rgba, "RGBA", "PNG"), 20, 1.0),                       # alpha dropped, not composited
        (encode(rgb2, "RGB", "JPEG", quality=100, subsampling=0), 29, 0.95),  # top = round(0.5) = 0
        (encode(cmyk, "CMYK", "JPEG", quality=95), 16, 0.875),        # Adobe CMYK → RGB
    ]
    with open(path, "wb") as f:
        f.write(b"RSZE" + struct.pack("<i", len(cases)))
        for data, size, crop in cases:
            exp = torchvision_eval(data, size, crop)
            f.write(struct.pack("<i", len(data)) + data)
            f.write(struct.pack("<idi", size, crop, exp.shape[0]))
            f.write(exp.astype(np.uint8).tobytes())


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("resize_torch.bin", write_torch), ("resize_pil.bin", write_pil), ("resize_eval.bin", write_eval)]:
        p = os.path.join(OUT, name)
        fn(p)
        print(f"{p}: {os.path.getsize(p)} bytes")
    print("torch", torch.__version__, "PIL", Image.__version__)
