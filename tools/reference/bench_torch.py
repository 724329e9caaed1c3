"""PyTorch side of `make bench-compare`: the same measurements as `vitq bench --json`, same shapes.

    /usr/bin/python3 tools/reference/bench_torch.py --arch vit_fmnist --batch 64 --threads 2 --iters 5
Prints one JSON object with forward_img_per_s, train_img_per_s, input_grad_img_per_s and the process CPU
seconds per step (forward_cpu_s, train_cpu_s, input_grad_cpu_s).
"""
import argparse, json, os, statistics, sys, time
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(__file__))
from torch_vit import build, ARCHS

ap = argparse.ArgumentParser()
ap.add_argument("--arch", default="vit_fmnist", choices=sorted(ARCHS))
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=5)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = build(a.arch)
cfg = dict(img_size=224, patch_size=16, in_chans=3, num_classes=1000)
cfg.update({k: v for k, v in ARCHS[a.arch].items() if k in cfg})
x = torch.randn(a.batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
y = torch.randint(0, cfg["num_classes"], (a.batch,))
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.05)


cpu, fastest = {}, {}


def median(fn):
    """Median wall seconds per call; the median process CPU seconds go to cpu[fn name], the fastest call's to fastest[fn name]."""
    fn()
    ts, cs = [], []
    for _ in range(a.iters):
        c = time.process_time(); t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
    cpu[fn.__name__] = statistics.median(cs)
    fastest[fn.__name__] = min(ts)
    return statistics.median(ts)


def fwd():
    with torch.no_grad():
        m(x)


def train():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    opt.step()


def input_grad():
    xi = x.clone().requires_grad_(True)
    F.cross_entropy(m(xi), y).backward()


res = {"framework": f"pytorch {torch.__version__}", "arch": a.arch, "batch": a.batch, "threads": torch.get_num_threads()}
res["forward_img_per_s"] = a.batch / median(fwd)
res["train_img_per_s"] = a.batch / median(train)
for p in m.parameters():
    p.requires_grad_(False)
res["input_grad_img_per_s"] = a.batch / median(input_grad)
# process CPU seconds per step (all threads): with --threads 1 a measure of the work that other processes' load leaves alone
res["forward_cpu_s"], res["train_cpu_s"], res["input_grad_cpu_s"] = cpu["fwd"], cpu["train"], cpu["input_grad"]
# the fastest call of each (as `vitq bench --json`): load from other processes only ever slows a call
for k, f in (("forward", "fwd"), ("train", "train"), ("input_grad", "input_grad")):
    res[f"{k}_fastest_img_per_s"] = a.batch / fastest[f]
print(json.dumps(res))
