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

from gptkit.fastpath import _cross_entropy_and_grad

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

