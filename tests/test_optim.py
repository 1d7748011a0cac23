import math
from pathlib import Path

import pytest
import torch

from gptkit.model import GPT, GPTConfig
from gptkit.optim import param_groups, schedule_factor


def test_decay_only_on_matrices_and_embeddings():
    model = GPT(GPTConfig(vocab_size=50, n_ctx=8, n_layer=1, n_head=2, n_embd=8))
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {
        "tokens_embed.weight", "positions_embed.weight", "blocks.0.attn.c_attn.weight",
        "blocks.0.attn.c_proj.weight", "blocks.0.mlp.c_fc.weight", "blocks.0.mlp.c_proj.weight"}
    assert all(n.endswith("bias") or ".ln_" in n for n in (names[id(p)] for p in no_decay["params"]))
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


def test_warmup_then_cosine_and_linear():
    assert schedule_factor(0, "cosine", 10, 110) == pytest.approx(0.1)
    assert schedule_factor(9, "cosine", 10, 110) == 1.0
    assert schedule_factor(60, "cosine", 10, 110) == pytest.approx(0.5)
    assert schedule_factor(110, "cosine", 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert schedule_factor(60, "linear", 10, 110) == pytest.approx(0.5)
    assert schedule_factor(500, "constant", 10, 110) == 1.0
    xs = [schedule_factor(s, "cosine", 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(xs, xs[1:]))
    assert math.isclose(schedule_factor(35, "cosine", 10, 110), 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_adamw_is_decoupled():
    """With zero gradient, AdamW shrinks weights by lr * wd exactly (decoupled), Adam+L2 would not."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 0.01))


def test_fused_adamw_is_left_off_with_a_grad_scaler_and_clipping():
    from gptkit.errors import GptkitError
    from gptkit.optim import choose_fused

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_fused(None, cuda, grad_scaler=False, clipping=True) is True
    assert choose_fused(None, cuda, grad_scaler=True, clipping=False) is True
    assert choose_fused(None, cuda, grad_scaler=True, clipping=True) is False  # Lightning would refuse to clip
    assert choose_fused(None, cpu, grad_scaler=False, clipping=True) is True
    assert choose_fused(False, cuda, grad_scaler=False, clipping=False) is False
    with pytest.raises(GptkitError, match="optim.fused=true cannot be combined"):
        choose_fused(True, cuda, grad_scaler=True, clipping=True)


def _finetune_weights(tmp_path, name, *overrides):
    from finetune_helpers import GLUE, tiny_tokenizer

    from gptkit.builder import build
    from gptkit.config import load_config
    from gptkit.verbs import fit

    tiny_tokenizer().save(tmp_path / "tok.json")
    repo = Path(__file__).parent.parent
    cfg = load_config(str(repo / "recipes" / "stsb.yaml"), [
        f"data.root={GLUE}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path}", f"run.name={name}",
        "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=4",
        "trainer.max_steps=6", "trainer.limit_val_batches=0", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.precision=bf16-mixed", "logging.progress=none", "logging.throughput=false", "optim.lr=1e-2",
        *overrides,
    ])
    c = build(cfg)
    fit(c)
    assert c.trainer.global_step == 6
    return c.trainer.optimizers[0].defaults["fused"], {k: v.float() for k, v in c.module.state_dict().items()}


def test_fused_adamw_clips_gradients_under_bf16_mixed(tmp_path):
    """Lightning refuses to clip for a fused optimizer under mixed precision, even with no GradScaler
    (bf16), where clipping is exact: gptkit clips itself there, the same as the non-fused path."""
    fused, clipped_fused = _finetune_weights(tmp_path, "fused", "trainer.gradient_clip_val=0.01")
    plain, clipped_plain = _finetune_weights(tmp_path, "plain", "trainer.gradient_clip_val=0.01", "optim.fused=false")
    _, unclipped = _finetune_weights(tmp_path, "unclipped", "trainer.gradient_clip_val=null", "optim.fused=false")
    assert fused and not plain
    # bf16 products: the fused and foreach updates differ in rounding (up to 1.4e-5 seen, depending on the
    # tests run before in the process), 20x below the clipping's own effect checked next
    for key, value in clipped_plain.items():
        torch.testing.assert_close(clipped_fused[key], value, rtol=1e-3, atol=5e-5)
    assert any((unclipped[k] - v).abs().max() > 1e-3 for k, v in clipped_plain.items())  # clipping did something


class FakeNVML:
    """libnvidia-ml's three calls that gptkit makes, answering for one GPU of the given capability."""

    def __init__(self, capability):
        self.capability, self.asked, self.shut = capability, [], False

    def nvmlInit_v2(self):
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index, handle):
        self.asked.append(index)
        return 0

    def nvmlDeviceGetCudaComputeCapability(self, handle, major, minor):
        major._obj.value, minor._obj.value = self.capability
        return 0

    def nvmlShutdown(self):
        self.shut = True


@pytest.mark.parametrize(("capability", "visible", "precision"), [
    ((9, 0), None, "bf16-mixed"), ((8, 0), "3,1", "bf16-mixed"), ((7, 0), None, "16-mixed"), (None, None, "bf16-mixed"),
])
def test_default_precision_asks_nvml_not_cuda(monkeypatch, capability, visible, precision):
    """The GPU's capability comes from NVML, so CUDA is not initialised before Lightning forks its
    processes (ddp_fork, ddp_notebook); torch.cuda is asked only once CUDA is initialised anyway."""
    import ctypes

    from gptkit import devices
    from gptkit.config import load_config

    nvml = FakeNVML(capability)

    def cdll(name):
        if capability is None:
            raise OSError(f"{name}: cannot open shared object file")
        assert name == "libnvidia-ml.so.1"
        return nvml

    def initialises_cuda(*args, **kwargs):
        raise AssertionError("torch.cuda initialised CUDA")

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", initialises_cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", initialises_cuda)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert devices.default_precision(load_config(None, [])) == precision
    if capability is not None:
        assert nvml.asked == [3 if visible else 0] and nvml.shut
    assert devices.default_precision(load_config(None, ["trainer.accelerator=cpu"])) == "32-true"


def test_unfused_adamw_keeps_torchs_multi_tensor_default():
    """fused=False would also switch off foreach, leaving AdamW's per-parameter loop."""
    from gptkit.optim import make_optimizer

    model = torch.nn.Linear(4, 4)
    assert make_optimizer(model, 1e-3, 0.01, [0.9, 0.999], 1e-8, fused=False).defaults["fused"] is None
    assert make_optimizer(model, 1e-3, 0.01, [0.9, 0.999], 1e-8, fused=True).defaults["fused"] is True
