"""Fast paths of :mod:`gptkit.model`: the same numbers as the plain code there, in less time or memory.

:mod:`gptkit.model` is the paper's model. At three places it calls in here, where a faster way to
compute the same thing applies:

- :func:`dropout`, from ``model.Dropout``: on a CPU in eager mode the keep-mask is a uniform draw
  compared with ``p`` instead of PyTorch's serial Bernoulli sampler; elsewhere ``F.dropout``.
- :func:`causal_attention_with_dropout`, from ``model.CausalSelfAttention`` when training on a CPU:
  the textbook product-softmax-dropout-product, faster there than SDPA's math fallback.
- :func:`chunked_lm_loss`, from ``model.lm_loss(..., chunk_size=...)`` (recipe switch
  ``objective.chunked_lm_loss``; :func:`lm_loss_chunk_rows` picks the chunk size): the tied LM head
  and the cross-entropy fused over chunks of rows (:class:`ChunkedLinearCrossEntropy`). Its
  softmax/gradient step is Triton's kernel on CUDA (:mod:`gptkit.kernels`) and an eager in-place
  one elsewhere, which on a CPU works on a logits block kept between steps (:func:`_workspace`).

What each saves is measured in docs/performance.md.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    On a CPU in eager mode the keep-mask is a float32 uniform draw compared with ``p``: PyTorch's CPU
    dropout samples its mask with a serial Bernoulli sampler that costs 2.3x as long as the uniform
    draw, and dropout is about 8% of a small model's CPU training step. The mask has the same
    distribution (to float32's 2^-24 resolution). Elsewhere (CUDA, whose eager kernel already draws
    four uniforms per Philox call; other accelerators; compiled graphs) this is ``F.dropout``.
    """
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1 or torch.compiler.is_compiling():
        return F.dropout(x, p, True)
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1 / (1 - p))


def causal_attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + causal mask)``, then :func:`dropout`, times ``v``: the textbook path.

    Used for training on a CPU: there SDPA has no fused kernel that does dropout, and its math
    fallback draws the mask with the slow Bernoulli sampler (see :func:`dropout`); this is 1.2x faster.
    """
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)).mul_(1 / math.sqrt(q.size(-1)))
    scores.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1), float("-inf"))
    return dropout(torch.softmax(scores, dim=-1), p) @ v


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


def chunked_lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """``sum_i weights_i * CE(hidden_i @ weight^T, targets_i)`` over ``[B, T]`` positions, through
    :class:`ChunkedLinearCrossEntropy` in chunks of ``chunk_size`` rows.

    ``weight`` is the tied head ``[vocab, C]``. Positions with weight 0 contribute nothing; their
    targets may be negative (``ignore_index``), and are read as token 0.
    """
    return ChunkedLinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.size(-1)), weight,
        targets.reshape(-1).clamp_min(0), weights.reshape(-1), chunk_size,
    )


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
