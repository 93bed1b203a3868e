"""Vision transformers with timm's layer names: patch embedding, class token, position embedding,
pre-norm blocks (``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``) and a linear head.

The names and shapes follow ``timm.models.vision_transformer`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``,
``norm``, ``head``), so a timm ViT-Tiny state dict loads into ``vit_tiny``. One difference, on
purpose: the attention reshapes by ``-1`` (not by the input width), so a model with fewer heads
is the same module with a smaller ``num_heads`` (the ``head`` kind removes heads that way).
"""

from __future__ import annotations

import torch
from torch import nn

from sss.models.registry import register_model


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch × patch`` patches to ``dim``-wide tokens (a strided conv)."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection, as timm's ``Attention``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} does not split into {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``: the hidden neurons are ``channel`` structures."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: two residual branches, attention then MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifying from the class token."""

    def __init__(self, *, num_classes: int, in_channels: int, img_size: int, patch_size: int, embed_dim: int,
                 depth: int, num_heads: int, mlp_ratio: float) -> None:  # fmt: skip
        super().__init__()
        tokens = (img_size // patch_size) ** 2  # a strided conv: a remainder of the image is not read
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, embed_dim))
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        # Linear layers keep torch's default init, not timm's trunc_normal(0.02): sss trains with
        # SGD, and from timm's init (made for AdamW) vit_fmnist reaches 45% after 2 epochs on
        # 12k Fashion-MNIST images against 70% from torch's (the same loop, lr 0.03).

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


@register_model
def vit_tiny(*, num_classes: int = 1000, in_channels: int = 3, img_size: int = 224) -> VisionTransformer:
    """ViT-Tiny/16 (timm's ``vit_tiny_patch16_224`` and DeiT-Tiny sizes): 192 wide, 12 blocks, 3 heads."""
    return VisionTransformer(num_classes=num_classes, in_channels=in_channels, img_size=img_size, patch_size=16,
                             embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)  # fmt: skip


@register_model
def vit_fmnist(*, num_classes: int = 10, in_channels: int = 1, img_size: int = 28, embed_dim: int = 64,
               depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0) -> VisionTransformer:  # fmt: skip
    """A small ViT for 28×28 images (the demo's data): 4×4 patches (49 tokens + class token)."""
    return VisionTransformer(num_classes=num_classes, in_channels=in_channels, img_size=img_size, patch_size=4,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)  # fmt: skip
