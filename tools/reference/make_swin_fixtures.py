#!/usr/bin/env python3
"""Writes the Swin parity fixtures tests/ViTQuant.Tests/fixtures/swin_*: float64 PyTorch 1.13 logits, window
attention probabilities and gradients of models built with torch_swin.py (timm's names and math).

Run once by hand with Debian's python3-torch (never by CI):
    /usr/bin/python3 tools/reference/make_swin_fixtures.py

Weights and images come from the counter-based hash of make_vit_fixtures.py (same rules: *norm*.weight
1 + 0.1·r, 1-D tensors 0.02·r, matrices — relative_position_bias_table included, fan_in = heads —
r·sqrt(3 / fan_in), images r), which the C# tests recompute bit for bit (HashInit.cs).

Outputs:
  swin_odd/     swin_tiny_patch4_window7_224 reshaped by model_args: 1×28×28 input, patch 2 (14×14 grid),
                embed 12, depths (2, 2, 2), heads (2, 3, 4), window 4, mlp_ratio 2, 5 classes — stage 0 pads
                14 → 16 for its windows and shifts with the mask; stage 1 runs on 7×7 (pad 8); stage 2's
                declared map is 3×3 (window shrunk to 3, no shift) while merging pads 7 → 8 → 4×4 (pad 6).
                Weights seed 11, images seed 111, B = 2. model.safetensors (torch-written weights),
                config.json (timm layout), expected.safetensors: logits [2, 5], every block's attention
                probabilities layers.{s}.blocks.{b}.attn.probs [B·nW, heads, M², M²], and gradients of the
                mean cross-entropy against GRAD_LABELS (grad.pixel_values, grad.{name} for GRAD_PARAMS).
  swin_tiny.safetensors
                swin_tiny_patch4_window7_224, weights seed 12, images seed 112, B = 1: logits [1, 1000],
                layers.0.blocks.1.attn.probs of windows 0, 7 and 63 ([3, 3, 49, 49], the shifted stage) and
                layers.3.blocks.1.attn.probs [1, 24, 49, 49]; param_bits as in the ViT fixture.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_swin  # noqa: E402
from make_vit_fixtures import FIXTURES, bits_sum, hash_images, hash_init, param_order, write_json, write_safetensors  # noqa: E402

ODD_ARGS = dict(img_size=28, patch_size=2, in_chans=1, embed_dim=12, depths=(2, 2, 2), num_heads=(2, 3, 4),
                window_size=4, mlp_ratio=2.0, num_classes=5)
GRAD_LABELS = [1, 4]
GRAD_PARAMS = ["patch_embed.proj.weight", "patch_embed.norm.weight", "layers.0.blocks.1.attn.relative_position_bias_table",
               "layers.0.blocks.1.attn.qkv.weight", "layers.1.downsample.norm.bias", "layers.1.downsample.reduction.weight",
               "layers.2.blocks.0.attn.relative_position_bias_table", "layers.2.blocks.1.mlp.fc2.weight", "norm.weight",
               "head.fc.bias"]


def meta(arch, wseed, iseed, model):
    return {"source": "tools/reference/make_swin_fixtures.py", "torch": torch.__version__, "architecture": arch,
            "weight_seed": str(wseed), "image_seed": str(iseed), "param_order": param_order(model),
            "reference_dtype": "float64"}


def forward64(model, x):
    m = model.double().eval()
    taps = []
    with torch.no_grad():
        logits = m(torch.from_numpy(x).double(), taps)
    return logits.numpy(), [t.numpy() for t in taps]


def block_names(model):
    return [f"layers.{s}.blocks.{b}" for s, st in enumerate(model.layers) for b in range(len(st.blocks))]


def odd():
    arch, wseed, iseed = "swin_tiny_patch4_window7_224", 11, 111
    model = torch_swin.build(arch, **ODD_ARGS)
    vals = hash_init(model, wseed)
    x = hash_images(iseed, (2, 1, 28, 28))
    logits, probs = forward64(model, x)
    out = {"logits": logits}
    for name, p in zip(block_names(model), probs):
        out[name + ".attn.probs"] = p
    m64 = model.double()
    xin = torch.from_numpy(x).double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(m64(xin), torch.tensor(GRAD_LABELS))
    loss.backward()
    params = dict(m64.named_parameters())
    out["grad.pixel_values"] = xin.grad.numpy()
    for n in GRAD_PARAMS:
        out["grad." + n] = params[n].grad.numpy()
    d = os.path.join(FIXTURES, "swin_odd")
    os.makedirs(d, exist_ok=True)
    m = meta(arch, wseed, iseed, model)
    m["grad_labels"] = json.dumps(GRAD_LABELS)
    m["grad_loss"] = repr(loss.item())
    write_safetensors(os.path.join(d, "expected.safetensors"), out, m)
    write_safetensors(os.path.join(d, "model.safetensors"), vals, {"format": "pt"})
    model_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ODD_ARGS.items() if k != "num_classes"}
    write_json(os.path.join(d, "config.json"), {
        "architecture": arch, "num_classes": 5, "num_features": 48, "global_pool": "avg",
        "model_args": model_args, "label_names": ["a", "b", "c", "d", "e"],
        "pretrained_cfg": {
            "input_size": [1, 28, 28], "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
            "mean": [0.5], "std": [0.25], "num_classes": 5, "first_conv": "patch_embed.proj", "classifier": "head.fc",
        },
    })
    print(f"swin odd: logits {np.round(logits, 4).tolist()}, loss {loss.item():.6f}")


def tiny():
    arch, wseed, iseed = "swin_tiny_patch4_window7_224", 12, 112
    model = torch_swin.build(arch)
    vals = hash_init(model, wseed)
    x = hash_images(iseed, (1, 3, 224, 224))
    logits, probs = forward64(model, x)
    names = block_names(model)
    out = {"logits": logits,
           "layers.0.blocks.1.attn.probs": probs[names.index("layers.0.blocks.1")][[0, 7, 63]],
           "layers.3.blocks.1.attn.probs": probs[names.index("layers.3.blocks.1")]}
    m = meta(arch, wseed, iseed, model)
    m["param_bits"] = json.dumps({k: str(bits_sum(v)) for k, v in vals.items()}, separators=(",", ":"))
    write_safetensors(os.path.join(FIXTURES, "swin_tiny.safetensors"), out, m)
    print(f"{arch}: logits max {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    odd()
    tiny()
