#!/usr/bin/env python3
"""DeiT-Base shapes for the calibration memory measurement (issue 18): a timm folder with seeded random
weights (tools/reference/torch_vit.py, timm's names), 1,000 named classes, and 16 random 224x224 PNGs in 4
class folders for the (unused) evaluation step. Run with Debian's python3-torch (never by CI):
    /usr/bin/python3 docs/results/ptq-exact/deit-base-memory/make_model.py OUT_DIR
"""
import json, os, struct, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../../tools/reference"))
import numpy as np
from PIL import Image
from torch_vit import build, randomize

out = sys.argv[1]
m = randomize(build("deit_base_patch16_224"), 7)
sd = {k: v.detach().float().contiguous().numpy() for k, v in m.state_dict().items()}
os.makedirs(f"{out}/deit_base", exist_ok=True)
hdr, off, blobs = {}, 0, []
for k, a in sd.items():
    b = a.tobytes()
    hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    off += len(b)
    blobs.append(b)
h = json.dumps(hdr).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(f"{out}/deit_base/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for b in blobs:
        f.write(b)
json.dump({"architecture": "deit_base_patch16_224", "num_classes": 1000, "label_names": [f"c{i}" for i in range(1000)],
           "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
          open(f"{out}/deit_base/config.json", "w"))
rng = np.random.default_rng(0)
for c in range(4):
    os.makedirs(f"{out}/imgs/c{c}", exist_ok=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(f"{out}/imgs/c{c}/{i}.png")
