#!/usr/bin/env python3
"""Writes tests/ViTQuant.Tests/fixtures/optim_pytorch.safetensors: PyTorch 1.13 reference runs of the
optimisers, schedulers and gradient clipping that src/ViTQuant/Nn reimplements, plus the parameter /
buffer / state-dict name orders of a small nn.Module tree.

Run once by hand with Debian's python3-torch (never by CI):
    /usr/bin/python3 tools/reference/make_optim_fixture.py

The optimiser runs are driven by a pre-recorded gradient sequence (not by a loss) so that the test
isolates the update rules. Two parameters, W [7, 5] and b [5], start from the same seed in every run;
at step 3, b has no gradient (grad = None), which must leave b and its optimiser state untouched.

Tensors (F32 unless noted):
    init.W, init.b                     initial parameters
    grad.{t}.W, grad.{t}.b             gradient fed at step t (grad.3.b absent)
    {run}.lr                           F64 [T, groups]: each group's lr used for step t
    {run}.{t}.W, {run}.{t}.b           parameters after step t
    sgd_nesterov.norm                  F64 [T]: total grad norm returned by clip_grad_norm_ at step t
Runs (hyper-parameters repeated in the C# test, and in __metadata__["runs"]):
    sgd_nesterov   SGD(lr .1, momentum .9, nesterov, wd 1e-4) + CosineAnnealingLR(T_max 8, eta_min 1e-3)
                   + clip_grad_norm_(max_norm 8) before each step
    sgd_damp       SGD(lr .05, momentum .8, dampening .25, wd 1e-3) + MultiStepLR([2, 5, 5], gamma .3)
    adam           Adam(betas (.9, .999), eps 1e-8) with groups {W: lr 1e-2, wd 1e-2}, {b: lr 2e-2, wd 0}
                   + MultiStepLR([4], gamma .5)
    adam_amsgrad   Adam(lr 5e-3, betas (.8, .99), eps 1e-6, amsgrad), constant lr
    adamw          AdamW(lr 1e-2, wd .05) + LambdaLR implementing linear warm-up (3 steps from 1e-4)
                   then cosine to 1e-4 at step 8
"""
import json
import math
import os
import struct

import torch
from torch import nn

T = 8
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "tests", "ViTQuant.Tests", "fixtures", "optim_pytorch.safetensors")


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.float64: "F64"}[t.dtype]
        raw = t.numpy().tobytes()  # little-endian on x86
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def warmup_cosine(step, base=1e-2, warmup=3, total=8, min_lr=1e-4, start=1e-4):
    if step < warmup:
        return start + (base - start) * step / warmup
    if step >= total:
        return min_lr
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def main():
    torch.manual_seed(1234)
    init = {"W": torch.randn(7, 5), "b": torch.randn(5)}
    scales = [0.5, 3.0, 1.0, 4.0, 0.2, 2.5, 1.0, 6.0]
    grads = []
    for t in range(T):
        g = {"W": torch.randn(7, 5) * scales[t], "b": torch.randn(5) * scales[t]}
        if t == 3:
            g["b"] = None
        grads.append(g)

    out = {"init.W": init["W"], "init.b": init["b"]}
    for t, g in enumerate(grads):
        for k, v in g.items():
            if v is not None:
                out[f"grad.{t}.{k}"] = v

    def run(name, make_opt, make_sched, clip=None):
        W = nn.Parameter(init["W"].clone())
        b = nn.Parameter(init["b"].clone())
        opt = make_opt(W, b)
        sched = make_sched(opt) if make_sched else None
        lrs, norms = [], []
        for t in range(T):
            W.grad = grads[t]["W"].clone()
            b.grad = None if grads[t]["b"] is None else grads[t]["b"].clone()
            if clip is not None:
                norms.append(float(torch.nn.utils.clip_grad_norm_([W, b], clip)))
            lrs.append([g["lr"] for g in opt.param_groups])
            opt.step()
            if sched:
                sched.step()
            out[f"{name}.{t}.W"] = W.detach().clone()
            out[f"{name}.{t}.b"] = b.detach().clone()
        out[f"{name}.lr"] = torch.tensor(lrs, dtype=torch.float64)
        if clip is not None:
            out[f"{name}.norm"] = torch.tensor(norms, dtype=torch.float64)

    run("sgd_nesterov",
        lambda W, b: torch.optim.SGD([W, b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, foreach=False),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=1e-3), clip=8.0)
    run("sgd_damp",
        lambda W, b: torch.optim.SGD([W, b], lr=0.05, momentum=0.8, dampening=0.25, weight_decay=1e-3, foreach=False),
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5], gamma=0.3))
    run("adam",
        lambda W, b: torch.optim.Adam([{"params": [W], "lr": 1e-2, "weight_decay": 1e-2},
                                       {"params": [b], "lr": 2e-2}],
                                      betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False),
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[4], gamma=0.5))
    run("adam_amsgrad",
        lambda W, b: torch.optim.Adam([W, b], lr=5e-3, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, foreach=False),
        None)
    run("adamw",
        lambda W, b: torch.optim.AdamW([W, b], lr=1e-2, weight_decay=0.05, foreach=False),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: warmup_cosine(s) / 1e-2))

    metadata = {"runs": __doc__.split("__metadata__[\"runs\"]):")[1].strip(), "torch": torch.__version__}
    metadata.update(module_orders())
    write_safetensors(OUT, out, metadata)
    print(f"wrote {os.path.normpath(OUT)}: {len(out)} tensors")


def module_orders():
    """Name orders of a module tree mirrored by ModuleTests.Net in the C# tests."""
    class Leaf(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_parameter("weight", nn.Parameter(torch.zeros(3, 2)))
            self.register_buffer("scale", torch.zeros(3))
            self.register_parameter("bias", nn.Parameter(torch.zeros(3)))

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("qkv", Leaf())
            self.register_parameter("rel_bias", nn.Parameter(torch.zeros(2)))
            self.add_module("proj", Leaf())

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("norm1", Leaf())
            self.add_module("attn", Attn())
            self.register_buffer("mask", torch.zeros(2, 2))

    class Tied(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.register_parameter("weight", w)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_parameter("cls_token", nn.Parameter(torch.zeros(1, 2)))
            self.add_module("blocks", nn.ModuleList([Block(), Block()]))
            self.add_module("head", Leaf())
            self.register_buffer("pos", torch.zeros(4))
            self.add_module("tied", Tied(self.head.weight))

    net = Net()
    return {
        "named_parameters": ",".join(n for n, _ in net.named_parameters()),
        "named_buffers": ",".join(n for n, _ in net.named_buffers()),
        "state_dict": ",".join(net.state_dict().keys()),
        "named_modules": ",".join(n for n, _ in net.named_modules()),
        "parameter_count": str(sum(p.numel() for p in net.parameters())),
    }


if __name__ == "__main__":
    main()
