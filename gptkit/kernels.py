"""Triton kernels for the CUDA fast path (imported only where Triton is installed).

``cross_entropy_and_grad`` is the softmax/gradient step of the fused LM loss
(:class:`gptkit.model.ChunkedLinearCrossEntropy`): for a chunk of logits it returns the weighted
cross-entropy sum and writes ``w * (softmax - onehot)`` over the logits, in place. One program per
row reads the row twice, once for an online max and sum (the log-sum-exp) and once to write the
gradient, and stores nothing else of the row's size. On an H200 it takes 0.57 ms for a chunk of
8,192 x 40,512 bf16 logits, where ``torch.compile`` of the same function in PyTorch ops
(``gptkit.model._cross_entropy_and_grad``, which writes the gradient to a new block) took 1.18 ms.

``dropout_mask`` draws the keep-mask of dropout inside a compiled model (:func:`gptkit.model.dropout`,
off until its speed is measured on a GPU). ``torch.compile`` draws each element's uniform with its
own call of Philox (10 rounds of 32-bit multiplies, of which it keeps one output of four), which a GPU
profile suggests is what the fused ``add + dropout + LayerNorm`` kernels spend most of their time on;
this kernel keeps all four outputs of each call.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

# Columns per iteration and warps per row: on an H200 the fastest of (32768, 32), (16384, 16),
# (8192, 16) and (4096, 8) at GPT-1's vocabulary. Fixed rather than autotuned so that every run
# reduces in the same order (autotuning also timed a copy of the 0.66 GB block with each config).
BLOCK, NUM_WARPS = 4096, 8


@triton.jit
def _ce_grad_kernel(logits_ptr, targets_ptr, weights_ptr, loss_ptr, stride, n_cols, n_valid, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    target = tl.load(targets_ptr + row)
    w = tl.load(weights_ptr + row)
    # pass 1: online log-sum-exp over the vocabulary (columns >= n_valid are padding)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    for start in range(0, n_valid, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < n_valid, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    target_logit = tl.load(base + target).to(tl.float32)
    tl.store(loss_ptr + row, (lse - target_logit) * w)
    # pass 2: the gradient w * (softmax - onehot) over the row, padding columns 0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < n_valid, other=float("-inf")).to(tl.float32)
        g = tl.exp(x - lse)
        g = tl.where(cols == target, g - 1.0, g) * w
        tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < n_cols)


def cross_entropy_and_grad(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, n_valid: int, block: int = BLOCK
):
    """``(sum_i w_i * CE(logits_i, y_i), w * (softmax - onehot))``; the gradient overwrites ``logits``.

    ``logits`` is ``[rows, cols]`` with a unit column stride; only its first ``n_valid`` columns are
    vocabulary, and every target must be below ``n_valid``. ``targets`` (int) and ``weights`` are
    ``[rows]``. ``block`` is the columns per iteration (the tests use small ones to cover the loops).
    """
    rows, cols = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("cross_entropy_and_grad needs logits with contiguous rows")
    if targets.shape != (rows,) or weights.shape != (rows,):
        raise ValueError(f"targets and weights must be [{rows}], got {list(targets.shape)} and {list(weights.shape)}")
    targets, weights = targets.contiguous(), weights.float().contiguous()
    row_loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
    if rows:
        with torch.cuda.device(logits.device) if logits.is_cuda else contextlib.nullcontext():
            _ce_grad_kernel[(rows,)](logits, targets, weights, row_loss, logits.stride(0), cols, n_valid,
                                     BLOCK=block, num_warps=NUM_WARPS)
    return row_loss.sum(), logits


# Philox counters per program; each counter gives four mask elements.
DROPOUT_BLOCK = 1024


@triton.jit
def _store_keep(mask_ptr, idx, r, threshold, n, EVEN: tl.constexpr):
    keep = ((r >> 8) >= threshold).to(tl.uint8)
    if EVEN:  # every program's elements are in range: no bounds checks
        tl.store(mask_ptr + idx, keep)
    else:
        tl.store(mask_ptr + idx, keep, mask=idx < n)


@triton.jit
def _dropout_mask_kernel(seed_ptr, mask_ptr, n, threshold, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    # Four 32-bit outputs per Philox counter; the top 24 bits of each are a uniform in [0, 2^24). The
    # 64-bit counter goes in as two 32-bit words: given an int64 offset, tl.randint4x before Triton 3.4
    # ran the 64-bit Philox, whose outputs would all pass the threshold (no dropout at all).
    counter = pid * BLOCK + tl.arange(0, BLOCK)
    lo = counter.to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(tl.load(seed_ptr), lo, (counter >> 32).to(tl.uint32), lo * 0, lo * 0)
    tl.static_assert(r0.dtype == tl.uint32)
    idx = pid * 4 * BLOCK + tl.arange(0, BLOCK)
    _store_keep(mask_ptr, idx, r0, threshold, n, EVEN)
    _store_keep(mask_ptr, idx + BLOCK, r1, threshold, n, EVEN)
    _store_keep(mask_ptr, idx + 2 * BLOCK, r2, threshold, n, EVEN)
    _store_keep(mask_ptr, idx + 3 * BLOCK, r3, threshold, n, EVEN)


def dropout_mask(seed: torch.Tensor, shape, p: float) -> torch.Tensor:
    """A bool keep-mask of ``shape``: each element is True with probability ``1 - p``, independently.

    Each element compares a 24-bit uniform with ``p`` (float32's ``rand() >= p`` has the same
    resolution), so the keep probability is ``1 - ceil(p * 2^24) / 2^24``. ``seed`` is a one-element
    int64 tensor on the mask's device (read by the kernel, so drawing it needs no host sync); the
    same seed gives the same mask.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if seed.numel() != 1 or seed.dtype != torch.int64:
        raise ValueError(f"seed must be a one-element int64 tensor, got {seed.dtype} of shape {list(seed.shape)}")
    mask = torch.empty(shape, dtype=torch.bool, device=seed.device)
    n = mask.numel()
    if n:
        grid = (triton.cdiv(n, 4 * DROPOUT_BLOCK),)
        with torch.cuda.device(seed.device) if seed.is_cuda else contextlib.nullcontext():
            _dropout_mask_kernel[grid](seed, mask.view(torch.uint8), n, math.ceil(p * 2**24), BLOCK=DROPOUT_BLOCK,
                                       EVEN=n % (4 * DROPOUT_BLOCK) == 0)
    return mask
