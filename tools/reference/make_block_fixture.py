#!/usr/bin/env python3
"""Golden fixture for the engine's neural-network ops: a tiny ViT forward/backward in PyTorch.

Writes tests/ViTQuant.Tests/fixtures/block_parity.safetensors, read by TorchParityTests.cs.
Run once by hand with Debian's python3-torch (1.13); never run by CI:

    /usr/bin/python3 tools/reference/make_block_fixture.py

What it computes (from seed 20240601, all maths in float64, stored as float32):
  image [B=2, 3, 8, 8] --patch_embed (conv 4x4 stride 4, 12 channels)--> [2, 4, 12]
  prepend cls token, add pos_embed                                       -> x [2, 5, 12]
  one pre-norm block exactly as timm's vision_transformer.Block:
    x = x + proj(softmax(q k^T * hd^-0.5) v)   with LayerNorm(eps=1e-6), qkv Linear with bias, 3 heads
    x = x + fc2(GELU(fc1(LayerNorm(x))))        exact-erf GELU, MLP hidden 24
  final LayerNorm(eps=1e-6), head Linear on the cls token -> logits [2, 5]
  loss = cross_entropy(logits, labels, label_smoothing=0.1)
and the gradient of the loss with respect to the image, the block input and every parameter.
Three small extra cases pin loss semantics: KL distillation (T=2), soft-target cross-entropy, and
cosine similarity with per-norm eps clamping (one tiny and one zero row).

Tensors are inputs/parameters under their timm names, "out.*" for forward results and "grad.*" for
gradients. The safetensors container is written by hand (8-byte little-endian header length, JSON
header padded with spaces to 8 bytes, raw little-endian data) so the safetensors package is not needed.
"""
import json
import os
import struct

import torch
import torch.nn.functional as F

SEED = 20240601
B, CIN, IMG, P = 2, 3, 8, 4
C, HEADS, HIDDEN, CLASSES = 12, 3, 24, 5
N = (IMG // P) ** 2 + 1
EPS = 1e-6
SMOOTHING = 0.1

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ViTQuant.Tests", "fixtures", "block_parity.safetensors")


def rand(*shape, std=1.0, mean=0.0):
    # Drawn in float32 so the stored float32 values are exactly what the maths used.
    return (torch.randn(*shape, dtype=torch.float32) * std + mean).double().requires_grad_(True)


def main():
    torch.manual_seed(SEED)
    params = {
        "patch_embed.proj.weight": rand(C, CIN, P, P, std=0.2),
        "patch_embed.proj.bias": rand(C, std=0.1),
        "cls_token": rand(1, 1, C, std=0.5),
        "pos_embed": rand(1, N, C, std=0.5),
        "blocks.0.norm1.weight": rand(C, std=0.2, mean=1.0),
        "blocks.0.norm1.bias": rand(C, std=0.1),
        "blocks.0.attn.qkv.weight": rand(3 * C, C, std=0.4),
        "blocks.0.attn.qkv.bias": rand(3 * C, std=0.1),
        "blocks.0.attn.proj.weight": rand(C, C, std=0.3),
        "blocks.0.attn.proj.bias": rand(C, std=0.1),
        "blocks.0.norm2.weight": rand(C, std=0.2, mean=1.0),
        "blocks.0.norm2.bias": rand(C, std=0.1),
        "blocks.0.mlp.fc1.weight": rand(HIDDEN, C, std=0.4),
        "blocks.0.mlp.fc1.bias": rand(HIDDEN, std=0.1),
        "blocks.0.mlp.fc2.weight": rand(C, HIDDEN, std=0.3),
        "blocks.0.mlp.fc2.bias": rand(C, std=0.1),
        "norm.weight": rand(C, std=0.2, mean=1.0),
        "norm.bias": rand(C, std=0.1),
        "head.weight": rand(CLASSES, C, std=0.5),
        "head.bias": rand(CLASSES, std=0.1),
    }
    image = rand(B, CIN, IMG, IMG)
    labels = torch.tensor([3, 1], dtype=torch.int64)
    p = params

    tokens = F.conv2d(image, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)
    x = torch.cat([p["cls_token"].expand(B, -1, -1), tokens], dim=1) + p["pos_embed"]
    x.retain_grad()
    block_in = x

    # timm Block (pre-norm), Attention with qkv_bias=True
    hd = C // HEADS
    h = F.layer_norm(x, (C,), p["blocks.0.norm1.weight"], p["blocks.0.norm1.bias"], eps=EPS)
    qkv = F.linear(h, p["blocks.0.attn.qkv.weight"], p["blocks.0.attn.qkv.bias"]).reshape(B, N, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = (q @ k.transpose(-2, -1)) * hd ** -0.5
    attn = attn.softmax(dim=-1)
    o = (attn @ v).transpose(1, 2).reshape(B, N, C)
    x = x + F.linear(o, p["blocks.0.attn.proj.weight"], p["blocks.0.attn.proj.bias"])
    h = F.layer_norm(x, (C,), p["blocks.0.norm2.weight"], p["blocks.0.norm2.bias"], eps=EPS)
    h = F.linear(F.gelu(F.linear(h, p["blocks.0.mlp.fc1.weight"], p["blocks.0.mlp.fc1.bias"])), p["blocks.0.mlp.fc2.weight"], p["blocks.0.mlp.fc2.bias"])
    x = x + h
    block_out = x
    x = F.layer_norm(x, (C,), p["norm.weight"], p["norm.bias"], eps=EPS)
    logits = F.linear(x[:, 0], p["head.weight"], p["head.bias"])
    loss = F.cross_entropy(logits, labels, label_smoothing=SMOOTHING)
    loss.backward()

    out = {}
    out["image"] = image
    out["labels"] = labels
    for name, t in params.items():
        out[name] = t
    out["out.patch_tokens"] = tokens
    out["out.attn"] = attn
    out["out.block"] = block_out
    out["out.logits"] = logits
    out["out.loss"] = loss.reshape(1)
    out["grad.image"] = image.grad
    out["grad.block_in"] = block_in.grad
    for name, t in params.items():
        out["grad." + name] = t.grad

    # KL distillation, T = 2: F.kl_div(log_softmax(s/T), softmax(t/T), 'batchmean') * T^2
    T = 2.0
    s, t = rand(3, 7, std=2.0), rand(3, 7, std=2.0)
    kd = F.kl_div(F.log_softmax(s / T, dim=-1), F.softmax(t / T, dim=-1), reduction="batchmean") * T * T
    kd.backward()
    out.update({"kd.student": s, "kd.teacher": t, "kd.loss": kd.reshape(1), "kd.grad_student": s.grad, "kd.grad_teacher": t.grad})

    # soft-target cross-entropy: mean over rows of -sum(target * log_softmax(logits))
    z = rand(4, 6, std=1.5)
    tgt = torch.softmax(torch.randn(4, 6, dtype=torch.float32).double() * 2, dim=-1).float().double().requires_grad_(True)
    sce = (-(tgt * F.log_softmax(z, dim=-1)).sum(-1)).mean()
    sce.backward()
    out.update({"sce.logits": z, "sce.target": tgt, "sce.loss": sce.reshape(1), "sce.grad_logits": z.grad, "sce.grad_target": tgt.grad})

    # cosine similarity over the last axis; row 1 of a has a norm below eps, row 2 is zero
    a = torch.randn(4, 6, dtype=torch.float32)
    a[1] *= 1e-9
    a[2] = 0
    a = a.double().requires_grad_(True)
    bvec = rand(4, 6)
    cos = F.cosine_similarity(a, bvec, dim=-1, eps=1e-8)
    wcos = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (cos * wcos).sum().backward()
    out.update({"cos.a": a, "cos.b": bvec, "cos.weights": wcos, "cos.out": cos, "cos.grad_a": a.grad, "cos.grad_b": bvec.grad})

    write_safetensors(OUT, out, {"generator": "tools/reference/make_block_fixture.py", "torch": torch.__version__, "seed": str(SEED),
                                 "precision": "computed in float64, stored as float32"})
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes, {len(out)} tensors), loss {loss.item():.6f}")


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        t = t.detach()
        if t.dtype == torch.int64:
            dtype, raw = "I64", t.contiguous().numpy().astype("<i8").tobytes()
        else:
            dtype, raw = "F32", t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
