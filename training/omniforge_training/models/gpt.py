"""A GPT-style decoder: pre-LN blocks, fused scaled-dot-product attention, tied embeddings.

The forward pass takes an optional KV cache so the same module trains on full sequences
and, once exported to ONNX, decodes one token at a time.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 256       # longest context the model is trained for
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True           # bias in Linear and LayerNorm layers
    rope: bool = True           # rotary position embedding (else learned absolute positions)
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.head_size % 8:
            # onnxruntime's GroupQueryAttention, which the exported graph decodes with, needs it
            raise ValueError(f"head size n_embd/n_head = {self.head_size} must be a multiple of 8 so the model "
                             f"can be exported and served; e.g. n_embd={self.n_head * 8 * max(1, self.head_size // 8)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.scale = 1.0 / math.sqrt(config.head_size)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, past_kv=None, attn_mask=None, rotary=None):
        B, T, C = x.shape
        # split, not indexing: indexing's backward writes each slice's gradient into zeros
        qk, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).split([2, 1], dim=2)
        if rotary is not None:
            qk = apply_rotary(qk, *rotary)                              # q and k in one pass
        q, k = qk.unbind(2)
        # three of (B, nh, T, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2)
        if past_kv is not None:
            # append this step's keys and values to the cache: (B, nh, P + T, hs)
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        dropout_p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # decoding with a cache (and the exported graph): attention written out so the
            # scale applies to q only and the key transpose fuses into the matmul; exported
            # SDPA would scale and transpose the whole key cache at every step
            att = (q * self.scale) @ k.transpose(-2, -1)                      # (B, nh, T, P + T)
            att = att.masked_fill(~attn_mask, float("-inf")).softmax(dim=-1)
            y = att @ v                                                       # (B, nh, T, hs)
        # (B, nh, T, hs) -> (B, T, C)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), (k, v)


def rotary_tables(position_ids, head_size: int, base: float):
    """Each position's rotation as (cos, cos) and (-sin, sin) over the head dimension's two
    halves: (B, T, 1, 1, hs) each, to broadcast over (B, T, 2, nh, hs) queries and keys."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, device=position_ids.device).float() / head_size))
    angles = position_ids.float()[..., None] * inv_freq          # (B, T, hs/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], -1)[:, :, None, None], torch.cat([-sin, sin], -1)[:, :, None, None]


def apply_rotary(x, cos, sin):
    """Rotates each pair (x1, x2) = (x[i], x[i + hs/2]) of the head dimension by its position's
    angle (RoFormer eq. 34): (x1 cos - x2 sin, x1 sin + x2 cos), as x * cos + swap(x) * sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([x2, x1], dim=-1) * sin


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, past_kv=None, attn_mask=None, rotary=None):
        a, present = self.attn(self.ln_1(x), past_kv, attn_mask, rotary)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        if not config.rope:
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output projection is the token embedding
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # scaled init of residual projections (GPT-2 paper)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx=None, targets=None, *, position_ids=None, past_key_values=None,
                attention_mask=None, inputs_embeds=None):
        """Training: idx (B, T) [+ targets] -> logits, loss.

        Decoding: also pass position_ids (B, T), past_key_values (a (key, value) pair of
        (B, nh, P, hs) per layer) and attention_mask (B, P + T), 1 = attend, 0 = padding.
        Returns logits (B, T, V), loss or None, and the new cache. `inputs_embeds` (B, T, C)
        replaces idx where a prefix is not tokens (the captioner's image prefix).
        """
        B, T = idx.shape if inputs_embeds is None else inputs_embeds.shape[:2]
        device = (idx if inputs_embeds is None else inputs_embeds).device
        if position_ids is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
            position_ids = torch.arange(T, device=device).unsqueeze(0)
        attn_mask = None
        if attention_mask is not None:
            # causal mask over the cache plus the new tokens, combined with padding:
            # query i (absolute position P + i) sees key j iff j <= P + i and key j is real
            S = attention_mask.shape[1]
            P = S - T
            q_pos = torch.arange(T, device=device).unsqueeze(1) + P       # (T, 1)
            k_pos = torch.arange(S, device=device).unsqueeze(0)           # (1, S)
            causal = k_pos <= q_pos                                        # (T, S)
            keep = attention_mask.bool()[:, None, None, :]                 # (B, 1, 1, S)
            # every query also sees itself, so a padding position never has an all-masked
            # row (whose softmax is NaN); real tokens never attend to padding either way
            attn_mask = (causal[None, None] & keep) | (k_pos == q_pos)[None, None]   # (B, 1, T, S)
        x = self.transformer.wte(idx) if inputs_embeds is None else inputs_embeds
        rotary = None
        if self.config.rope:
            rotary = rotary_tables(position_ids, self.config.head_size, self.config.rope_base)
        else:
            x = x + self.transformer.wpe(position_ids)
        x = self.transformer.drop(x)
        presents = []
        for i, block in enumerate(self.transformer.h):
            past = past_key_values[i] if past_key_values is not None else None
            x, present = block(x, past, attn_mask, rotary)
            presents.append(present)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)                                           # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, presents

    def configure_optimizer(self, *, lr: float, weight_decay: float, betas=(0.9, 0.95)):
        """AdamW with weight decay on matrices only (not on biases, norms or embeddings' rows)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # the fused kernel updates each tensor in one pass instead of ~10 (CPU and CUDA have it):
        # 0.7 vs 3.5 ms a step for 0.8M parameters on a 2-core CPU
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
