#!/usr/bin/env python3
"""Writes the ViT/DeiT parity fixtures tests/ViTQuant.Tests/fixtures/vit_*: PyTorch 1.13 logits and
attention probabilities of three models built with torch_vit.py (timm's names and math).

Run once by hand with Debian's python3-torch (never by CI):
    /usr/bin/python3 tools/reference/make_vit_fixtures.py

Weights and input images come from a counter-based hash that the C# tests recompute bit for bit
(tests/ViTQuant.Tests/Models/HashInit.cs), so the big models need not be stored:
    splitmix64(x):  z = x + 0x9E3779B97F4A7C15;  z = (z ^ z>>30)·0xBF58476D1CE4E5B9;
                    z = (z ^ z>>27)·0x94D049BB133111EB;  z ^ z>>31        (all mod 2^64)
    u_j = (splitmix64(seed·2^32 + j) >> 40) · 2^-24                       (exact in float32)
    r_j = 2·u_j − 1                                                        (exact in float32)
j runs over the concatenation of all parameters in state-dict order (images: over the flattened
[B, C, H, W] input). Each value is computed in float64 and rounded once to float32:
    *norm*.weight (LayerNorm gains)   1 + 0.1·r
    other 1-D tensors (biases)        0.02·r
    cls_token, dist_token, pos_embed  0.02·r
    matrices / conv kernels           r·sqrt(3 / fan_in),  fan_in = numel / shape[0]
    images                            r
The references are computed in float64 (the float32 weights and images widened exactly), then
stored as float32: an independent "true" answer for the float32 C# engine.

Outputs (all F32; the metadata names the seeds and the parameter order):
  vit_deit_tiny.safetensors          (a) deit_tiny_patch16_224, weights seed 1, images seed 101, B = 2.
                                     logits [2, 1000]; blocks.{0,5,11}.attn.probs of image 0, query
                                     rows 0, 14, …, 196 only: [3, 15, 197] (full maps are 465 KB each).
                                     __metadata__ "param_bits": per parameter, the sum mod 2^64 of the
                                     float32 bit patterns, so C# can prove its generator is bit-exact.
  vit_deit_tiny_distilled/           (b) deit_tiny_distilled_patch16_224 with model_args depth 2,
                                     weights seed 2, images seed 102. config.json (timm layout) and
                                     expected.safetensors: logits [2, 1000], blocks.{0,1}.attn.probs of
                                     image 0, rows 0, 14, …, 196: [3, 15, 198]. The C# test writes the
                                     hashed weights as model.safetensors next to a copy of config.json.
  vit_odd/                           (c) vit_tiny_patch16_224 reshaped by model_args: 3×20×20 input,
                                     patch 4 (5×5 grid), embed 66, 6 heads (head dim 11), depth 2,
                                     mlp_ratio 3, 7 classes; weights seed 3, images seed 103.
                                     model.safetensors (weights, written here by hand), config.json,
                                     expected.safetensors: logits [2, 7], blocks.{0,1}.attn.probs
                                     [2, 6, 26, 26] (all of it), and gradients of the mean
                                     cross-entropy against labels GRAD_LABELS: grad.pixel_values and
                                     grad.{name} for the parameters in GRAD_PARAMS.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_vit  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ViTQuant.Tests", "fixtures")
MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
ROW_STRIDE = 14


def splitmix64(x):
    """Vectorised splitmix64 over a uint64 array (numpy wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_r(seed, start, count):
    """r_j = 2·u_j − 1 for j in [start, start + count), as float64 (exact float32 values)."""
    j = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) << np.uint64(32)) + j
    u = (splitmix64(x) >> np.uint64(40)).astype(np.float64) * 2.0 ** -24
    return 2.0 * u - 1.0


def param_values(name, shape, r):
    if name.endswith("norm.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
        v = 1.0 + 0.1 * r
    elif name in ("cls_token", "dist_token", "pos_embed"):
        v = 0.02 * r
    elif len(shape) == 1:
        v = 0.02 * r
    else:
        fan_in = int(np.prod(shape[1:]))
        v = r * np.sqrt(3.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def hash_init(model, seed):
    """Overwrites every parameter of model (state-dict order) from the hash; returns name → float32 array."""
    values, j = {}, 0
    with torch.no_grad():
        for name, t in model.state_dict().items():
            n = t.numel()
            v = param_values(name, tuple(t.shape), hash_r(seed, j, n))
            j += n
            t.copy_(torch.from_numpy(v))
            values[name] = v
    return values


def hash_images(seed, shape):
    return hash_r(seed, 0, int(np.prod(shape))).astype(np.float32).reshape(shape)


def bits_sum(v):
    return int(v.view(np.uint32).astype(np.uint64).sum(dtype=np.uint64))


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def run(model, x):
    """Float64 reference forward: logits and the per-block attention probabilities."""
    m64 = model.double().eval()
    taps = []
    with torch.no_grad():
        logits = m64(torch.from_numpy(x).double(), taps)
    # float32 PyTorch on the same weights, to report how far float32 rounding alone moves the logits
    m32 = model.float()
    with torch.no_grad():
        l32 = m32(torch.from_numpy(x))
    rel = (l32.double() - logits).abs().max().item() / max(logits.abs().max().item(), 1e-6)
    return logits.numpy(), [t.numpy() for t in taps], rel


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def param_order(model):
    return json.dumps([[k, list(v.shape)] for k, v in model.state_dict().items()], separators=(",", ":"))


def base_meta(arch, wseed, iseed, model):
    return {"source": "tools/reference/make_vit_fixtures.py", "torch": torch.__version__, "architecture": arch,
            "weight_seed": str(wseed), "image_seed": str(iseed), "row_stride": str(ROW_STRIDE),
            "param_order": param_order(model), "reference_dtype": "float64"}


def deit_tiny():
    arch, wseed, iseed = "deit_tiny_patch16_224", 1, 101
    model = torch_vit.build(arch)
    vals = hash_init(model, wseed)
    x = hash_images(iseed, (2, 3, 224, 224))
    logits, probs, rel = run(model, x)
    out = {"logits": logits}
    for i in (0, 5, 11):
        out[f"blocks.{i}.attn.probs"] = probs[i][0, :, ::ROW_STRIDE, :]
    meta = base_meta(arch, wseed, iseed, model)
    meta["param_bits"] = json.dumps({k: str(bits_sum(v)) for k, v in vals.items()}, separators=(",", ":"))
    write_safetensors(os.path.join(FIXTURES, "vit_deit_tiny.safetensors"), out, meta)
    print(f"{arch}: logits max {np.abs(logits).max():.3f}, float32 torch vs float64 rel {rel:.2e}")


def deit_tiny_distilled():
    arch, wseed, iseed = "deit_tiny_distilled_patch16_224", 2, 102
    model = torch_vit.build(arch, depth=2)
    hash_init(model, wseed)
    x = hash_images(iseed, (2, 3, 224, 224))
    logits, probs, rel = run(model, x)
    d = os.path.join(FIXTURES, "vit_deit_tiny_distilled")
    os.makedirs(d, exist_ok=True)
    out = {"logits": logits}
    for i in range(2):
        out[f"blocks.{i}.attn.probs"] = probs[i][0, :, ::ROW_STRIDE, :]
    write_safetensors(os.path.join(d, "expected.safetensors"), out, base_meta(arch, wseed, iseed, model))
    # timm's config.json as published on the Hugging Face hub, with depth reduced through model_args
    write_json(os.path.join(d, "config.json"), {
        "architecture": arch, "num_classes": 1000, "num_features": 192, "global_pool": "token",
        "model_args": {"depth": 2},
        "pretrained_cfg": {
            "tag": "fb_in1k", "custom_load": False, "input_size": [3, 224, 224], "fixed_input_size": True,
            "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "num_classes": 1000,
            "pool_size": None, "first_conv": "patch_embed.proj", "classifier": ["head", "head_dist"],
        },
    })
    print(f"{arch} (depth 2): logits max {np.abs(logits).max():.3f}, float32 torch vs float64 rel {rel:.2e}")


ODD_ARGS = dict(img_size=20, patch_size=4, in_chans=3, embed_dim=66, depth=2, num_heads=6, mlp_ratio=3.0, num_classes=7)
ODD_LABELS = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]
GRAD_LABELS = [3, 5]
GRAD_PARAMS = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.norm1.weight",
               "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.1.attn.proj.weight", "blocks.1.norm2.bias",
               "blocks.1.mlp.fc1.bias", "blocks.1.mlp.fc2.bias", "norm.weight", "head.weight", "head.bias"]


def grads(model, x):
    """Float64 gradients of mean cross-entropy(logits, GRAD_LABELS) w.r.t. the input and GRAD_PARAMS."""
    m64 = model.double()
    xin = torch.from_numpy(x).double().requires_grad_(True)
    m64.zero_grad()
    loss = torch.nn.functional.cross_entropy(m64(xin), torch.tensor(GRAD_LABELS))
    loss.backward()
    params = dict(m64.named_parameters())
    out = {"grad.pixel_values": xin.grad.numpy()}
    for name in GRAD_PARAMS:
        out["grad." + name] = params[name].grad.numpy()
    model.float()
    return out, loss.item()


def odd():
    arch, wseed, iseed = "vit_tiny_patch16_224", 3, 103
    model = torch_vit.build(arch, **ODD_ARGS)
    vals = hash_init(model, wseed)
    x = hash_images(iseed, (2, 3, 20, 20))
    logits, probs, rel = run(model, x)
    d = os.path.join(FIXTURES, "vit_odd")
    os.makedirs(d, exist_ok=True)
    out = {"logits": logits}
    for i, p in enumerate(probs):
        out[f"blocks.{i}.attn.probs"] = p
    g, loss = grads(model, x)
    out.update(g)
    meta = base_meta(arch, wseed, iseed, model)
    meta["grad_labels"] = json.dumps(GRAD_LABELS)
    meta["grad_loss"] = repr(loss)
    write_safetensors(os.path.join(d, "expected.safetensors"), out, meta)
    # timm writes model.safetensors with {"format": "pt"} metadata and the state-dict names
    write_safetensors(os.path.join(d, "model.safetensors"), vals, {"format": "pt"})
    model_args = {k: v for k, v in ODD_ARGS.items() if k != "num_classes"}
    write_json(os.path.join(d, "config.json"), {
        "architecture": arch, "num_classes": 7, "num_features": 66, "global_pool": "token",
        "model_args": model_args, "label_names": ODD_LABELS,
        "pretrained_cfg": {
            "input_size": [3, 20, 20], "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
            "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3], "num_classes": 7, "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    })
    print(f"odd {ODD_ARGS}: logits {np.round(logits, 4).tolist()}, float32 torch vs float64 rel {rel:.2e}")


if __name__ == "__main__":
    # self-check of the generator against splitmix64's published first output for seed 0 (state += γ)
    assert int(splitmix64(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    os.makedirs(FIXTURES, exist_ok=True)
    odd()
    deit_tiny_distilled()
    deit_tiny()
