"""The Triton kernel of the fused LM loss, run by Triton's CPU interpreter where Triton is installed.

CI's CPU-only PyTorch has no Triton, so there these are skipped; ``benchmarks/cuda_checks.py
ce_kernel`` checks the same kernel on a GPU against a float64 reference.
"""

import importlib.util
import os
import sys

import pytest
import torch
import torch.nn.functional as F

if importlib.util.find_spec("triton") is None:
    pytest.skip("Triton is not installed", allow_module_level=True)
if "triton" not in sys.modules and not torch.cuda.is_available():  # read when Triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

from gptkit.kernels import cross_entropy_and_grad  # noqa: E402
from gptkit.model import _cross_entropy_and_grad  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cols,n_valid,block", [(70, 64, 32), (1000, 1000, 256), (1024, 1000, 4096)])
def test_triton_loss_kernel_matches_the_reference(dtype, cols, n_valid, block):
    torch.manual_seed(0)
    logits = (torch.randn(9, cols) * 4).to(dtype)
    targets = torch.tensor([0, 5, n_valid - 1, 1, 2, 3, 7, 8, 9])
    weights = torch.tensor([0.5, 0.0, 1.0, 0.25, 1.0, 2.0, 0.1, 0.3, 1e-4])  # a zero-weight row
    ref_loss, ref_grad = _cross_entropy_and_grad(logits.double(), targets, weights.double(), n_valid)
    work = logits.clone()
    loss, grad = cross_entropy_and_grad(work, targets, weights, n_valid, block=block)
    assert grad.data_ptr() == work.data_ptr() and grad.dtype == dtype  # written over the logits
    assert torch.allclose(loss.double(), ref_loss, rtol=1e-6)
    assert torch.allclose(loss, (F.cross_entropy(logits[:, :n_valid].float(), targets, reduction="none")
                                 * weights).sum(), rtol=1e-5)
    rtol = 1e-5 if dtype == torch.float32 else 2**-7  # bf16: one unit of the stored gradient (the interpreter truncates)
    assert torch.allclose(grad.double(), ref_grad, rtol=rtol, atol=1e-7)
    assert torch.all(grad[:, n_valid:] == 0) and torch.all(grad[1] == 0)


def test_triton_loss_kernel_keeps_large_logits_finite():
    """The online log-sum-exp rescales the running sum: logits of 1e4 must not overflow to inf."""
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4, 0.0] * 100])
    targets, weights = torch.tensor([1]), torch.tensor([1.0])
    loss, grad = cross_entropy_and_grad(logits.clone(), targets, weights, 400, block=64)
    ref_loss, ref_grad = _cross_entropy_and_grad(logits.double(), targets, weights.double(), 400)
    assert torch.isfinite(loss) and torch.allclose(loss.double(), ref_loss, rtol=1e-6)
    assert torch.allclose(grad.double(), ref_grad, atol=1e-6)


def test_fused_loss_through_the_triton_kernel_matches_the_plain_loss(monkeypatch):
    """The CUDA path of the fused loss with Triton's kernel: loss and every gradient as the plain loss."""
    import gptkit.model as model_module
    from gptkit.model import GPT, GPTConfig, lm_loss

    monkeypatch.setattr(model_module, "_ce_kernel",
                        lambda device: lambda *args: cross_entropy_and_grad(*args, block=64))
    monkeypatch.setattr(model_module, "_workspace", lambda numel, dtype, device: None)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=101, n_ctx=32, n_layer=2, n_head=2, n_embd=32)).eval()
    x = torch.randint(0, 101, (3, 32))
    targets = x.roll(-1, 1)
    targets[:, -1] = -100

    def loss_and_grads(chunk):
        model.zero_grad()
        loss = lm_loss(model, model(x), targets, per_sequence=True, chunk_size=chunk)
        loss.backward()
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, g_plain = loss_and_grads(None)
    for chunk in (7, 8192):
        fused, g_fused = loss_and_grads(chunk)
        assert torch.allclose(plain, fused, atol=1e-6)
        for name, g in g_plain.items():
            assert torch.allclose(g, g_fused[name], atol=1e-6), name
