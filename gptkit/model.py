"""The GPT-1 transformer (Radford et al., 2018), in one file.

Read top to bottom against the paper: learned position embeddings added to token embeddings,
12 **post-LayerNorm** decoder blocks (``n = LN(x + attn(x)); h = LN(n + mlp(n))``), tanh-approximated
GELU, no LayerNorm on the embeddings and none after the last block, an LM head tied to the token
embedding, and N(0, 0.02) initialisation. Nothing here knows about files, recipes or training loops.

Where a faster route gives the same numbers, three places marked "fast path" call into
:mod:`gptkit.fastpath`: dropout's keep-mask and attention when training on a CPU, and the LM loss
fused with the tied head over chunks of rows (``lm_loss(..., chunk_size=...)``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from gptkit import fastpath
from gptkit.config import GPTConfig  # sizes and dropouts; torch-free: the recipe's model section extends it


class Dropout(nn.Dropout):
    """``nn.Dropout``: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fast path: on a CPU in eager mode a faster keep-mask draw, else F.dropout (gptkit/fastpath.py)
        return fastpath.dropout(x, self.p, self.training)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``.

    SDPA scales scores by 1/sqrt(head_dim), as the paper does, and picks the flash or
    memory-efficient kernel when the device and dtype allow. Training on a CPU takes the same
    computation written out (:func:`gptkit.fastpath.causal_attention_with_dropout`), faster there.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in column blocks
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.attn_pdrop if self.training else 0.0
        if attn_mask is None and p and q.device.type == "cpu" and not torch.compiler.is_compiling():
            # fast path: CPU training, textbook softmax(q k^T / sqrt(d)) v with dropout (gptkit/fastpath.py)
            y = fastpath.causal_attention_with_dropout(q, k, v, p)
        elif attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd)
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """One post-LN decoder block: ``n = ln_1(x + attn(x)); h = ln_2(n + mlp(n))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        n = self.ln_1(x + self.attn(x, attn_mask))
        return self.ln_2(n + self.mlp(n))


class GPT(nn.Module):
    """The GPT-1 backbone and its tied LM head.

    ``forward`` returns the last block's hidden states ``[B, T, n_embd]``; ``lm_logits`` turns
    them into next-token logits with the token embedding matrix (no bias). Heads for fine-tuning
    read the hidden states, so one backbone serves pretraining and every task.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = replace(config)  # own copy: resize_token_embeddings updates it
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_ctx, config.n_embd)
        self.drop = Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) for every weight matrix and embedding; zero biases; LayerNorm gain 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=self.config.init_std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.config.init_std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of the last block for token ids ``idx`` of shape ``[B, T]``, ``T <= n_ctx``."""
        T = idx.size(1)
        if T > self.config.n_ctx:
            raise ValueError(f"sequence length {T} exceeds the model's context n_ctx={self.config.n_ctx}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tokens_embed(idx) + self.positions_embed(pos))
        for block in self.blocks:
            x = block(x, attn_mask)
        return x

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from hidden states, through the tied token embedding."""
        return F.linear(hidden, self.tokens_embed.weight)

    def resize_token_embeddings(self, vocab_size: int) -> None:
        """Grow (never shrink) the vocabulary; new rows are drawn from N(0, init_std) as in the paper."""
        old = self.tokens_embed.weight
        if vocab_size < old.size(0):
            raise ValueError(f"cannot shrink the vocabulary from {old.size(0)} to {vocab_size}")
        if vocab_size == old.size(0):
            return
        new = nn.Embedding(vocab_size, self.config.n_embd, device=old.device, dtype=old.dtype)
        nn.init.normal_(new.weight, std=self.config.init_std)
        with torch.no_grad():
            new.weight[: old.size(0)] = old
        self.tokens_embed = new
        self.config.vocab_size = vocab_size

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tokens_embed.weight.numel() + self.positions_embed.weight.numel()
        return n

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``idx`` ``[B, T]`` (sliding n_ctx window)."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.n_ctx :]
            logits = self.lm_logits(self(context)[:, -1, :]).float()
            if temperature <= 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
        return idx


def lm_loss(
    model: GPT,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    per_sequence: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The paper's LM objective L1 as a mean: next-token cross-entropy from hidden states
    ``[B, T, C]`` and targets ``[B, T]``.

    Positions whose target is ``ignore_index`` are masked. With ``per_sequence`` the loss is averaged
    per sequence, then over the sequences that have any target (the released fine-tuning code);
    otherwise over all tokens.

    With ``chunk_size`` the tied LM head and the cross-entropy run fused over chunks of rows
    (:func:`gptkit.fastpath.chunked_lm_loss`), so the float32 logits over the whole vocabulary are
    never held for the whole batch; the loss and gradients are the same. Without it, logits are
    materialised and upcast to float32.
    """
    mask = targets != ignore_index
    if per_sequence:  # sequences without any target (e.g. padded answer candidates) do not count
        counts = mask.sum(1, keepdim=True)
        n_seq = (counts > 0).sum().clamp_min(1)
        weights = (mask / counts.clamp_min(1) / n_seq).float()
    else:
        weights = (mask / mask.sum().clamp_min(1)).float()
    if chunk_size:  # fast path: head and loss fused chunk by chunk, same loss (gptkit/fastpath.py)
        return fastpath.chunked_lm_loss(hidden, model.tokens_embed.weight, targets, weights, chunk_size)
    logits = model.lm_logits(hidden).float()
    losses = F.cross_entropy(
        logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    return (losses * weights.view(-1)).sum()
