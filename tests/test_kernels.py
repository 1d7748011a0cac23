"""The Triton kernel of the fused LM loss, where Triton is installed: on a GPU if there is one, else
through Triton's CPU interpreter.

CI's CPU-only PyTorch has no Triton, so there these are skipped; ``benchmarks/cuda_checks.py
ce_kernel`` checks the same kernel on a GPU against a float64 reference.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fused_loss_matches_plain

from gptkit.model import _cross_entropy_and_grad

if importlib.util.find_spec("triton") is None:
    pytest.skip("Triton is not installed", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton reads TRITON_INTERPRET when it is first imported, which the suite does early (through
# Lightning); so on a CPU these tests run in a subprocess that sets it from the start.
IN_PROCESS = DEVICE == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
in_process = pytest.mark.skipif(not IN_PROCESS, reason="run by test_kernels_under_the_interpreter")


@pytest.mark.skipif(IN_PROCESS, reason="the kernel tests run in this process")
def test_kernels_under_the_interpreter():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def kernel():
    from gptkit.kernels import cross_entropy_and_grad

    return cross_entropy_and_grad


@in_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cols,n_valid,block", [(70, 64, 32), (1000, 1000, 256), (1024, 1000, 4096)])
def test_triton_loss_kernel_matches_the_reference(kernel, dtype, cols, n_valid, block):
    torch.manual_seed(0)
    logits = (torch.randn(9, cols) * 4).to(dtype).to(DEVICE)
    targets = torch.tensor([0, 5, n_valid - 1, 1, 2, 3, 7, 8, 9], device=DEVICE)
    weights = torch.tensor([0.5, 0.0, 1.0, 0.25, 1.0, 2.0, 0.1, 0.3, 1e-4], device=DEVICE)  # a zero-weight row
    ref_loss, ref_grad = _cross_entropy_and_grad(logits.double(), targets, weights.double(), n_valid)
    work = logits.clone()
    loss, grad = kernel(work, targets, weights, n_valid, block=block)
    assert grad.data_ptr() == work.data_ptr() and grad.dtype == dtype  # written over the logits
    assert torch.allclose(loss.double(), ref_loss, rtol=1e-6)
    assert torch.allclose(loss, (F.cross_entropy(logits[:, :n_valid].float(), targets, reduction="none")
                                 * weights).sum(), rtol=1e-5)
    rtol = 1e-5 if dtype == torch.float32 else 2**-7  # bf16: one unit of the stored gradient (the interpreter truncates)
    assert torch.allclose(grad.double(), ref_grad, rtol=rtol, atol=1e-7)
    assert torch.all(grad[:, n_valid:] == 0) and torch.all(grad[1] == 0)


@in_process
def test_triton_loss_kernel_keeps_large_logits_finite(kernel):
    """The online log-sum-exp rescales the running sum: logits of 1e4 must not overflow to inf."""
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4, 0.0] * 100], device=DEVICE)
    targets, weights = torch.tensor([1], device=DEVICE), torch.tensor([1.0], device=DEVICE)
    loss, grad = kernel(logits.clone(), targets, weights, 400, block=64)
    ref_loss, ref_grad = _cross_entropy_and_grad(logits.double(), targets, weights.double(), 400)
    # float32 holds 1e4 to about 1e-3, which bounds the loss's accuracy
    assert torch.isfinite(loss) and torch.allclose(loss.double(), ref_loss, atol=2e-3)
    assert torch.allclose(grad.double(), ref_grad, atol=1e-3)


@in_process
def test_fused_loss_through_the_triton_kernel_matches_the_plain_loss(kernel, monkeypatch):
    """The CUDA path of the fused loss with Triton's kernel: loss and every gradient as the plain loss."""
    assert_fused_loss_matches_plain(monkeypatch, lambda *args: kernel(*args, block=64), DEVICE)


@pytest.fixture(scope="module")
def mask_kernel():
    from gptkit.kernels import dropout_mask

    return dropout_mask


def _keep_rate_is(mask: torch.Tensor, p: float) -> bool:
    """Within 5 standard deviations of a Bernoulli(1 - p) mean (the seeds are fixed, so no flakiness)."""
    return abs(mask.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / mask.numel()) ** 0.5


@in_process
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("extra", [13, 0])  # a last program mostly out of range, or programs that fit exactly
def test_dropout_mask_kernel_keeps_each_element_with_probability_one_minus_p(mask_kernel, p, extra):
    from gptkit.kernels import DROPOUT_BLOCK

    seed = torch.tensor(1234, device=DEVICE)
    shape = (97, 4 * DROPOUT_BLOCK + extra)
    mask = mask_kernel(seed, shape, p)
    assert mask.shape == shape and mask.dtype == torch.bool and mask.device.type == DEVICE
    assert _keep_rate_is(mask, p)
    assert torch.equal(mask, mask_kernel(seed.clone(), shape, p))  # the seed decides the mask
    # another seed, also one that differs only above bit 32: an independent mask (they agree w.p. 1 - 2p(1-p))
    for other_seed in (1235, 1234 + 2**32):
        other = mask_kernel(torch.tensor(other_seed, device=DEVICE), shape, p)
        assert _keep_rate_is(mask == other, 2 * p * (1 - p)), other_seed
    # The four outputs of each Philox call fill four blocks of a program: they must be independent
    # of each other, and every block must be written (the tail too).
    whole = mask.numel() // (4 * DROPOUT_BLOCK) * 4 * DROPOUT_BLOCK  # elements of the full programs
    blocks = mask.flatten()[:whole].float().view(-1, 4, DROPOUT_BLOCK)
    streams = blocks.transpose(0, 1).reshape(4, -1)
    assert torch.corrcoef(streams).sub(torch.eye(4, device=DEVICE)).abs().max() < 5 / streams.size(1) ** 0.5
    if p == 0.5:  # ... and no two programs share counters: no run of 64 elements (64 random bits) repeats
        runs = blocks.flatten().view(-1, 64).long() << torch.arange(64, device=DEVICE)
        assert runs.sum(1).unique().numel() == runs.size(0)
    assert whole == mask.numel() if extra == 0 else _keep_rate_is(mask.flatten()[whole:], p)


@in_process
def test_dropout_mask_kernel_edges(mask_kernel):
    seed = torch.tensor(7, device=DEVICE)
    assert mask_kernel(seed, (1000,), 0.0).all() and not mask_kernel(seed, (1000,), 1.0).any()
    assert mask_kernel(seed, (0, 5), 0.5).shape == (0, 5)
    with pytest.raises(ValueError, match="one-element int64"):
        mask_kernel(torch.tensor([1, 2], device=DEVICE), (4,), 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mask_kernel(seed, (4,), 1.5)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@in_process
def test_compiled_dropout_draws_its_mask_with_the_kernel(monkeypatch, fresh_dynamo):
    """Compiled on a device in ``_MASK_KERNEL_DEVICES`` (meant for CUDA; here the interpreter's CPU), dropout's
    mask comes from the Triton kernel, in one graph, and the gradient uses the same mask."""
    import gptkit.kernels
    from gptkit import model as model_module

    calls = []
    kernel = gptkit.kernels.dropout_mask
    monkeypatch.setattr(gptkit.kernels, "dropout_mask", lambda *args: calls.append(args) or kernel(*args))
    monkeypatch.setattr(model_module, "_MASK_KERNEL_DEVICES", {DEVICE})
    torch.manual_seed(0)
    x = torch.randn(64, 300, device=DEVICE, requires_grad=True)
    fn = torch.compile(lambda t: model_module.dropout(t * 2, 0.25), fullgraph=True)
    out = fn(x)
    out.sum().backward()
    assert len(calls) == 1 and calls[0][2] == 0.25
    kept = out != 0
    assert _keep_rate_is(kept, 0.25)
    assert torch.allclose(out[kept], (x * 2 / 0.75)[kept])
    assert torch.allclose(x.grad, kept * (2 / 0.75))  # backward through the forward's mask
    assert not torch.equal(fn(x) != 0, kept)  # a fresh seed each call
