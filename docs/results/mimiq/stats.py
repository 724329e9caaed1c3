# Per-set statistics for the MimiQ data investigation: pixels (mean, std, fraction at the clamp bounds of the
# normalised [0, 1] range), and the teacher's view (confidence, entropy, class balance of its argmax).
import gzip, json, struct, subprocess, sys, os
import numpy as np
MEAN, STD = 0.2860, 0.3530
LO, HI = (0 - MEAN) / STD, (1 - MEAN) / STD

def read_st(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        dt = {'F32': np.float32, 'I64': np.int64, 'I32': np.int32, 'U8': np.uint8, 'I8': np.int8}[v['dtype']]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).reshape(v['shape'])
    return out, h.get('__metadata__', {})

def write_st(path, tensors):
    header, blobs, off = {}, [], 0
    for k, a in tensors.items():
        raw = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[k] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    h = json.dumps(header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h); [f.write(r) for r in blobs]

def real(n=128, seed=0):
    with gzip.open('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz') as f:
        x = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)[:55000]
    idx = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return ((x[idx].astype(np.float32) / 255 - MEAN) / STD)

def stats(name, x, labels=None):
    tmp_in, tmp_out = f'/tmp/st_{name}_in.safetensors', f'/tmp/st_{name}_out.safetensors'
    for p in (tmp_in, tmp_out):
        if os.path.exists(p): os.remove(p)
    write_st(tmp_in, {'pixel_values': x})
    subprocess.run(os.environ.get('VITQ', './vitq').split() + ['infer', '--input', tmp_in, '--output', tmp_out, '--threads', '1'], check=True, capture_output=True)
    logits = read_st(tmp_out)[0]['logits'].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    ent = -(p * np.log(p + 1e-12)).sum(1)
    hist = np.bincount(p.argmax(1), minlength=10)
    agree = float((p.argmax(1) == labels).mean()) if labels is not None else None
    return dict(set=name, label_agree=agree, n=len(x), mean=float(x.mean()), std=float(x.std()),
                at_lo=float((x <= LO + 1e-4).mean()), at_hi=float((x >= HI - 1e-4).mean()),
                outside=float(((x < LO - 1e-4) | (x > HI + 1e-4)).mean()),
                conf=float(p.max(1).mean()), entropy=float(ent.mean()),
                classes_used=int((hist > 0).sum()), max_class_share=float(hist.max() / len(x)), hist=hist.tolist())

rows = []
for path in sys.argv[1:]:
    if path == 'real':
        rows.append(stats('real', real()))
    else:
        t, _ = read_st(path)
        x = t.get('images', t.get('pixel_values'))
        rows.append(stats(os.path.basename(path).replace('.safetensors', ''), x.astype(np.float32), t.get('labels')))
for r in rows: print(json.dumps(r))
