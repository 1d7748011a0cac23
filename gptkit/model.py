"""The GPT-1 transformer (Radford et al., 2018), in one file.

Read top to bottom against the paper: learned position embeddings added to token embeddings,
12 **post-LayerNorm** decoder blocks (``n = LN(x + attn(x)); h = LN(n + mlp(n))``), tanh-approximated
GELU, no LayerNorm on the embeddings and none after the last block, an LM head tied to the token
embedding, and N(0, 0.02) initialisation. Nothing here knows about files, recipes or training loops.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    """Sizes of a GPT-1 style model. The defaults are the paper's 117M model."""

    vocab_size: int = 40481  # 40,478 BPE tokens + _start_, _delimiter_, _classify_
    n_ctx: int = 512
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int | None = None  # MLP width; None means 4 * n_embd (3072 in the paper)
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)


# Devices whose compiled dropout takes its keep-mask from the Triton kernel (:func:`dropout_mask`).
# Empty until the kernel's speed is measured on a GPU (benchmarks/profile_step.py, variant
# "mask-kernel"); the tests add "cpu", where Triton's interpreter runs it.
_MASK_KERNEL_DEVICES: set[str] = set()


def _dropout_mask(seed: torch.Tensor, shape: list[int], p: float) -> torch.Tensor:
    """A bool keep-mask of ``shape``, True with probability ``1 - p``: :func:`gptkit.kernels.dropout_mask`.

    Registered as the custom op ``gptkit::dropout_mask`` (:data:`dropout_mask`), so ``torch.compile``
    keeps the Triton kernel as one call in the graph and fuses the product with the mask into its own
    kernels; the same ``seed`` gives the same mask.
    """
    from gptkit.kernels import dropout_mask as kernel

    return kernel(seed, shape, p)


# The schema is spelled out: torch 2.4 cannot read this module's string annotations.
dropout_mask = torch.library.custom_op(
    "gptkit::dropout_mask", _dropout_mask, mutates_args=(), schema="(Tensor seed, SymInt[] shape, float p) -> Tensor"
)
dropout_mask.register_fake(lambda seed, shape, p: seed.new_empty(shape, dtype=torch.bool))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    On a CPU in eager mode the keep-mask is a float32 uniform draw compared with ``p``: PyTorch's CPU
    dropout samples its mask with a serial Bernoulli sampler that costs 2.3x as long as the uniform
    draw, and dropout is about 8% of a small model's CPU training step. The mask has the same
    distribution (to float32's 2^-24 resolution).

    Compiled on a device in ``_MASK_KERNEL_DEVICES`` (none by default: meant for CUDA, not yet measured
    there), the mask comes from :data:`dropout_mask`, a Triton kernel that draws four elements per
    Philox call where ``torch.compile``'s own dropout draws one; the product with the mask still fuses
    into the surrounding kernel (the residual add and LayerNorm). Elsewhere (CUDA eager, whose kernel
    already draws four per call; other accelerators; compiled) this is ``F.dropout``.
    """
    if not training or p == 0:
        return x
    if torch.compiler.is_compiling() and x.device.type in _MASK_KERNEL_DEVICES and p < 1:
        seed = torch.randint(0, 2**62, (), device=x.device)
        return x * dropout_mask(seed, x.shape, p) * (1 / (1 - p))
    if x.device.type != "cpu" or p >= 1 or torch.compiler.is_compiling():
        return F.dropout(x, p, True)
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1 / (1 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def causal_attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + causal mask)``, then :func:`dropout`, times ``v``: the textbook path.

    Used for training on a CPU: there SDPA has no fused kernel that does dropout, and its math
    fallback draws the mask with the slow Bernoulli sampler (see :func:`dropout`).
    """
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)).mul_(1 / math.sqrt(q.size(-1)))
    scores.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1), float("-inf"))
    return dropout(torch.softmax(scores, dim=-1), p) @ v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``.

    SDPA scales scores by 1/sqrt(head_dim), as the paper does, and picks the flash or
    memory-efficient kernel when the device and dtype allow. Training on a CPU takes
    :func:`causal_attention_with_dropout` instead, which is 1.2x faster there.
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
            y = causal_attention_with_dropout(q, k, v, p)
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
    """Next-token cross-entropy from hidden states ``[B, T, C]`` and targets ``[B, T]``.

    Positions whose target is ``ignore_index`` are masked. With ``per_sequence`` the loss is averaged
    per sequence, then over the sequences that have any target (the released fine-tuning code);
    otherwise over all tokens.

    With ``chunk_size`` the tied LM head and the cross-entropy run fused over chunks of rows
    (:class:`ChunkedLinearCrossEntropy`), so the float32 logits over the whole vocabulary are never
    held for the whole batch; the loss and gradients are the same. Without it, logits are
    materialised and upcast to float32.
    """
    mask = targets != ignore_index
    if per_sequence:  # sequences without any target (e.g. padded answer candidates) do not count
        counts = mask.sum(1, keepdim=True)
        n_seq = (counts > 0).sum().clamp_min(1)
        weights = (mask / counts.clamp_min(1) / n_seq).float()
    else:
        weights = (mask / mask.sum().clamp_min(1)).float()
    if chunk_size:
        return ChunkedLinearCrossEntropy.apply(
            hidden.reshape(-1, hidden.size(-1)), model.tokens_embed.weight,
            targets.reshape(-1).clamp_min(0), weights.reshape(-1), chunk_size,
        )
    logits = model.lm_logits(hidden).float()
    losses = F.cross_entropy(
        logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    return (losses * weights.view(-1)).sum()


def _cross_entropy_and_grad(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, n_valid: int):
    """Weighted CE sum over rows and its gradient w.r.t. the logits, ``w * (softmax - onehot)``.

    Only the first ``n_valid`` columns are vocabulary; the rest are padding (zero gradient). Written as
    plain pointwise and reduction ops: the readable reference for the kernels
    (:mod:`gptkit.kernels` and :func:`_cross_entropy_and_grad_inplace`), and compilable by
    ``torch.compile``. A float64 input is computed in float64.
    """
    cols = torch.arange(logits.size(1), device=logits.device)
    x = torch.where(cols[None, :] < n_valid, logits.to(torch.promote_types(logits.dtype, torch.float32)), float("-inf"))
    lse = torch.logsumexp(x, dim=-1)
    loss = ((lse - x.gather(1, targets[:, None]).squeeze(1)) * weights).sum()
    grad = (torch.exp(x - lse[:, None]) - (cols[None, :] == targets[:, None]).float()) * weights[:, None]
    return loss, grad.to(logits.dtype)


def _cross_entropy_and_grad_inplace(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, n_valid: int):
    """The same as :func:`_cross_entropy_and_grad`, eagerly and in place: the kernel off CUDA.

    The float32 logits block is overwritten by its gradient: subtract the row max and exponentiate in
    place, then scale each row by ``w / sum``. That is four cheap passes over the block and no
    temporaries of its size (``torch.logsumexp`` and ``log_softmax`` allocate two or three), which on
    a CPU cost more than the passes themselves. The loss is ``log(sum) + max - x_target``, exactly as
    a log-sum-exp gives it, so large losses do not underflow.
    """
    x = logits if logits.dtype == torch.float32 else logits.float()
    if n_valid < x.size(1):
        x[:, n_valid:] = float("-inf")
    target_logit = x.gather(1, targets[:, None]).squeeze(1)
    row_max = x.amax(dim=-1)
    x.sub_(row_max[:, None]).exp_()
    row_sum = x.sum(dim=-1)
    loss = ((row_sum.log() + row_max - target_logit) * weights).sum()
    x.mul_((weights / row_sum)[:, None])
    x.scatter_add_(1, targets[:, None], -weights[:, None].to(x.dtype))
    return loss, x.to(logits.dtype)


def _ce_kernel(device: torch.device):
    """The fused CE step: Triton's two-pass kernel on CUDA (:mod:`gptkit.kernels`), else eager in place."""
    if device.type == "cuda" and (kernel := _triton_kernel()) is not None:
        return kernel
    return _cross_entropy_and_grad_inplace


@functools.cache
def _triton_kernel():
    try:
        from gptkit.kernels import cross_entropy_and_grad
    except ImportError:  # no Triton: torch.compile would need it too on CUDA
        return None
    return cross_entropy_and_grad


_workspaces: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """A flat buffer for a chunk's logits, kept between steps on a CPU; None elsewhere.

    A CPU allocator hands a block this large (60 MB to 250 MB) back to the OS when it is freed, so a
    fresh one each step is paid again in page faults: 15% of the fused loss on a 2-core CPU. CUDA's
    caching allocator already reuses the block. One loss at a time per process uses it (as training
    does); two threads computing the fused loss at once would share it.
    """
    if device.type != "cpu":
        return None
    buffer = _workspaces.get((device, dtype))
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor even if the first call is under inference mode
            buffer = _workspaces[(device, dtype)] = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel]


def lm_loss_chunk_rows(device: torch.device, vocab_size: int) -> int:
    """Rows per chunk of the fused LM loss on ``device``.

    On CUDA, 8192 rows keep the matrix products large (8192 x 40,481 bf16 logits is 0.66 GB). On a
    CPU the gain is doing the softmax in place rather than blocking for the cache (small chunks make
    every chunk re-read the whole ``dW``), so chunks are as large as 256 MB of float32 logits allow:
    8,192 rows at an 8k vocabulary, 1,536 at GPT-1's 40k.
    """
    if device.type == "cuda":
        return 8192
    return max(256, (64 << 20) // vocab_size // 256 * 256)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum_i w_i * CE(h_i @ W^T, y_i)`` computed chunk by chunk, gradients included.

    The loss is the end of the graph, so each chunk's gradients (``softmax - onehot``, times the row
    weight) are formed right after its logits and multiplied into ``dH`` and ``dW`` at once; the
    chunk's logits are then freed. Peak extra memory is one ``chunk x vocab`` block instead of
    ``rows x vocab`` float32 logits, with the same matrix products as the plain forward and backward
    (no recomputation). Matrix products follow the surrounding autocast dtype; the softmax and the
    accumulated ``dW`` are float32.

    The head matrix is padded to a multiple of 64 rows for the products: with GPT-1's odd vocabulary
    (40,481) the ``[rows, vocab]`` blocks would be misaligned and cuBLAS falls back to kernels about
    5x slower on Hopper (MKL's product is 20% slower too). Padded columns are masked out of the softmax.

    On CUDA the softmax/gradient step is a Triton kernel that overwrites the chunk's logits with their
    gradient (:mod:`gptkit.kernels`). Elsewhere (and on CUDA without Triton) it runs eagerly in place,
    on a CPU on a logits block kept between steps (:func:`_workspace`), which is what makes this
    faster than the plain loss on a CPU as well.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, weights, chunk_size):
        need_grad = hidden.requires_grad or weight.requires_grad
        device = hidden.device
        kernel = _ce_kernel(device)
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hidden.dtype
        n_vocab = weight.size(0)
        w = F.pad(weight.to(dtype), (0, 0, 0, -n_vocab % 64))  # [vocab padded to 64, C], one copy per step
        rows = min(chunk_size, hidden.size(0))
        block = _workspace(rows * w.size(0), dtype, device)
        # Row weights are about 1 / tokens; scaled so the largest is 1 (a power of two: exact), the
        # gradient block stays well inside fp16's range instead of underflowing to zero in 16-mixed.
        unit = torch.exp2(torch.ceil(torch.log2(weights.max().float().clamp_min(1e-30))))
        weights = weights / unit
        loss = torch.zeros((), device=device, dtype=torch.float32)
        d_hidden = torch.empty(hidden.shape, device=device, dtype=dtype) if need_grad else None
        d_weight = torch.zeros(w.shape, device=device, dtype=torch.float32) if need_grad else None
        for start in range(0, hidden.size(0), chunk_size):
            h = hidden[start : start + chunk_size].to(dtype)
            y, rw = targets[start : start + chunk_size], weights[start : start + chunk_size]
            out = None if block is None else block[: h.size(0) * w.size(0)].view(h.size(0), w.size(0))
            chunk_loss, grad = kernel(torch.mm(h, w.t(), out=out), y, rw, n_vocab)
            loss += chunk_loss
            if need_grad:
                torch.mm(grad, w, out=d_hidden[start : start + chunk_size])
                if grad.dtype == d_weight.dtype:
                    d_weight.addmm_(grad.t(), h)
                else:
                    d_weight += (grad.t() @ h).float()
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.save_for_backward(d_hidden, d_weight[:n_vocab] if need_grad else None, unit)
        return loss * unit

    @staticmethod
    def backward(ctx, grad_output):
        d_hidden, d_weight, unit = ctx.saved_tensors
        scale = grad_output * unit  # in float32: a loss scale (65536) would overflow fp16
        return (d_hidden.float() * scale).to(ctx.hidden_dtype), (d_weight * scale).to(ctx.weight_dtype), None, None, None
