"""A minimal timm-compatible SwinTransformer in plain PyTorch (timm is not packaged in Debian).

Written from current timm's timm/models/swin_transformer.py (non-fused attention path, strict image size,
no dropout / drop path): the same parameter names (patch_embed.{proj,norm}, layers.{s}.downsample.{norm,
reduction}, layers.{s}.blocks.{b}.{norm1, attn.relative_position_bias_table, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}, norm, head.fc), the same window shrink/shift rule (_calc_window_shift), the same
shifted-window mask (get_attn_mask, built for the declared input resolution), padding of maps not divisible
by the window, and PatchMerging's padding and 2×2 gather order. Used by make_swin_fixtures.py.
"""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    "swin_tiny_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "swin_small_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "swin_base_patch4_window7_224": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def window_reverse(windows, ws, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def relative_position_index(ws):
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, ws):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(ws), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None, taps=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, N, N)
        attn = attn.softmax(dim=-1)
        if taps is not None:
            taps.append(attn)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, res, heads, window, shift, mlp_ratio):
        super().__init__()
        # timm's _calc_window_shift (always_partition=False)
        self.ws = res if res <= window else window
        self.shift = 0 if res <= self.ws else shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, self.ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", self.get_attn_mask(res), persistent=False)

    def get_attn_mask(self, res):
        if not self.shift:
            return None
        ws, s = self.ws, self.shift
        H = W = math.ceil(res / ws) * ws
        img_mask = torch.zeros((1, H, W, 1))
        cnt = 0
        for h in ((0, -ws), (-ws, -s), (-s, None)):
            for w in ((0, -ws), (-ws, -s), (-s, None)):
                img_mask[:, h[0]:h[1], w[0]:w[1], :] = cnt
                cnt += 1
        mw = window_partition(img_mask, ws).view(-1, ws * ws)
        m = mw.unsqueeze(1) - mw.unsqueeze(2)
        return m.masked_fill(m != 0, float(-100.0)).masked_fill(m == 0, float(0.0))

    def _attn(self, x, taps):
        B, H, W, C = x.shape
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        pad_h = (self.ws - H % self.ws) % self.ws
        pad_w = (self.ws - W % self.ws) % self.ws
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        _, Hp, Wp, _ = x.shape
        xw = window_partition(x, self.ws).view(-1, self.ws * self.ws, C)
        mask = self.attn_mask.to(x.dtype) if self.attn_mask is not None else None
        aw = self.attn(xw, mask, taps).view(-1, self.ws, self.ws, C)
        x = window_reverse(aw, self.ws, Hp, Wp)[:, :H, :W, :].contiguous()
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x

    def forward(self, x, taps=None):
        B, H, W, C = x.shape
        x = x + self._attn(self.norm1(x), taps)
        x = x.reshape(B, -1, C)
        x = x + self.mlp(self.norm2(x))
        return x.reshape(B, H, W, C)


class PatchMerging(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        _, H, W, _ = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    def __init__(self, dim, out_dim, in_res, depth, downsample, heads, window, mlp_ratio):
        super().__init__()
        out_res = in_res // 2 if downsample else in_res
        if downsample:
            self.downsample = PatchMerging(dim, out_dim)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.ModuleList([
            Block(out_dim, out_res, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth)])

    def forward(self, x, taps=None):
        x = self.downsample(x)
        for b in self.blocks:
            x = b(x, taps)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NHWC


class SwinTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        grid = img_size // patch_size
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        layers, in_dim, scale = [], dims[0], 1
        for i in range(len(depths)):
            layers.append(Stage(in_dim, dims[i], grid // scale, depths[i], i > 0, num_heads[i], window_size, mlp_ratio))
            in_dim = dims[i]
            if i > 0:
                scale *= 2
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Module()
        self.head.fc = nn.Linear(dims[-1], num_classes)

    def forward(self, x, taps=None):
        x = self.patch_embed(x)
        for s in self.layers:
            x = s(x, taps)
        x = self.norm(x).mean(dim=(1, 2))
        return self.head.fc(x)


def build(arch, **overrides):
    args = dict(ARCHS[arch]) if arch in ARCHS else {}
    args.update(overrides)
    return SwinTransformer(**args)
