"""BN-BLSTM against a transparent float64 reference: explicit masked BN and a per-sequence, per-step LSTM loop."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from asr_bn.model import BnBlstm, ModelConfig, reestimate_population_stats

MODES = ["none", "frame", "sequence"]
BACKENDS = ["kernel", "loop"]  # torch's fused LSTM kernel, the hand-written recurrence


# ---------------------------------------------------------------------------------------------------------------
# The reference: every statistic written out over the real frames, every step of every sequence written out.


def _bn(z: Tensor, frames: list[tuple[int, int]], gamma: Tensor, beta: Tensor, eps: float) -> tuple[Tensor, ...]:
    """Normalize z[b, t] for (b, t) in ``frames`` with the biased mean/var over exactly those frames."""
    rows = torch.stack([z[b, t] for b, t in frames])
    mean = rows.mean(0)
    var = ((rows - mean) ** 2).mean(0)
    return mean, var, gamma / torch.sqrt(var + eps), beta


def _cell(gates: Tensor, c: Tensor, hid: int) -> tuple[Tensor, Tensor]:
    i, f, o, g = gates[:hid], gates[hid : 2 * hid], gates[2 * hid : 3 * hid], gates[3 * hid :]  # the model's order
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference(model: BnBlstm, x: Tensor, lengths: list[int], train: bool) -> tuple[Tensor, list[dict]]:
    """Log-posteriors (B, T, P) (zeros at padded frames) and each layer's pooled batch statistics of W·x."""
    cfg = model.cfg
    hid, eps = cfg.units, cfg.bn_eps
    bsz, t_max, _ = x.shape
    real = [(b, t) for b in range(bsz) for t in range(lengths[b])]
    stats: list[dict] = []
    inp = x
    for layer in model.layers:
        out = torch.zeros(bsz, t_max, 2 * hid, dtype=x.dtype)
        layer_stats: dict = {}
        for d in range(2):
            z = inp @ layer.weight_ih[d].t()  # (B, T, 4H)
            zn = torch.zeros_like(z)
            if cfg.bn == "none":
                for b, t in real:
                    zn[b, t] = z[b, t] + layer.bias[d]
            else:
                mean, var, _, _ = _bn(z, real, layer.bn_weight[d], layer.bias[d], eps)
                layer_stats[d] = (mean, var)
                for b, t in real:
                    if not train:
                        m, v = layer.running_mean[d], layer.running_var[d]
                    elif cfg.bn == "sequence":
                        m, v = mean, var
                    else:
                        at_t = [(bb, t) for bb in range(bsz) if lengths[bb] > t]
                        m, v, _, _ = _bn(z, at_t, layer.bn_weight[d], layer.bias[d], eps)
                    zn[b, t] = (z[b, t] - m) / torch.sqrt(v + eps) * layer.bn_weight[d] + layer.bias[d]
            # recurrence, step by step; hidden BN uses the entries running at the same recurrence step
            hs = {b: torch.zeros(hid, dtype=x.dtype) for b in range(bsz)}
            cs = {b: torch.zeros(hid, dtype=x.dtype) for b in range(bsz)}
            for s in range(t_max):
                running = [b for b in range(bsz) if lengths[b] > s]
                times = {b: (s if d == 0 else lengths[b] - 1 - s) for b in running}
                rec = {b: layer.weight_hh[d] @ hs[b] for b in running}
                if cfg.bn_hidden:
                    rows = torch.stack([rec[b] for b in running])
                    if train:
                        m, v = rows.mean(0), ((rows - rows.mean(0)) ** 2).mean(0)
                    else:
                        m, v = layer.hidden_running_mean[d], layer.hidden_running_var[d]
                    rec = {b: (rec[b] - m) / torch.sqrt(v + eps) * layer.hidden_bn_weight[d] for b in running}
                for b in running:
                    hs[b], cs[b] = _cell(zn[b, times[b]] + rec[b], cs[b], hid)
                    out[b, times[b], d * hid : (d + 1) * hid] = hs[b]
        stats.append(layer_stats)
        inp = out
    logits = inp @ model.output.weight.t() + model.output.bias
    logp = torch.log_softmax(logits, -1)
    mask = torch.tensor([[t < n for t in range(t_max)] for n in lengths]).unsqueeze(-1)
    return logp * mask, stats


# ---------------------------------------------------------------------------------------------------------------


def _model(bn: str, seed: int = 0, backend: str = "auto", **kw) -> BnBlstm:
    torch.manual_seed(seed)
    cfg = ModelConfig(input_dim=5, num_pdfs=4, layers=2, units=3, bn=bn, **kw)  # type: ignore[arg-type]
    model = BnBlstm(cfg).double()
    model.backend = backend  # type: ignore[assignment]
    with torch.no_grad():  # non-trivial γ, β and biases so that every gradient path is exercised
        for name, p in model.named_parameters():
            if "bias" in name or "bn_weight" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _inputs(lengths: list[int], t_max: int | None = None, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    t_max = t_max or max(lengths)
    x = torch.randn(len(lengths), t_max, 5, generator=g, dtype=torch.float64) * 2 + 0.5
    return x, torch.tensor(lengths)


def _grads(model: BnBlstm, x: Tensor, out: Tensor, weights: Tensor) -> dict[str, Tensor]:
    model.zero_grad()
    x.grad = None
    (out * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["x"] = x.grad.clone()
    return grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bn", MODES)
@pytest.mark.parametrize("lengths", [[6, 3, 6, 1], [1], [4], [1, 1, 1]])
def test_matches_reference_outputs_and_gradients(bn: str, lengths: list[int], backend: str) -> None:
    model = _model(bn, backend=backend)
    x, lens = _inputs(lengths)
    weights = torch.randn(x.shape[0], x.shape[1], 4, dtype=torch.float64)
    x.requires_grad_(True)
    out = model(x, lens)
    ref, _ = reference(model, x, lengths, train=True)
    mask = (torch.arange(x.shape[1]) < lens.unsqueeze(1)).unsqueeze(-1)
    torch.testing.assert_close(out * mask, ref, rtol=0, atol=1e-10)
    got = _grads(model, x, out * mask, weights)
    want = _grads(model, x, ref, weights)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("bn", ["frame", "sequence"])
def test_hidden_bn_matches_reference(bn: str) -> None:
    model = _model(bn, bn_hidden=True)
    x, lens = _inputs([5, 2, 4])
    weights = torch.randn(3, 5, 4, dtype=torch.float64)
    x.requires_grad_(True)
    out = model(x, lens)
    ref, _ = reference(model, x, [5, 2, 4], train=True)
    mask = (torch.arange(5) < lens.unsqueeze(1)).unsqueeze(-1)
    torch.testing.assert_close(out * mask, ref, rtol=0, atol=1e-10)
    got, want = _grads(model, x, out * mask, weights), _grads(model, x, ref, weights)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")
    model.eval()
    torch.testing.assert_close(model(x, lens) * mask, reference(model, x, [5, 2, 4], train=False)[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bn", MODES)
@pytest.mark.parametrize("train", [True, False])
def test_padding_changes_nothing(bn: str, train: bool, backend: str) -> None:
    model = _model(bn, backend=backend).train(train)
    x, lens = _inputs([5, 2, 4], t_max=7)
    x2 = x.clone()
    mask = (torch.arange(7) < lens.unsqueeze(1)).unsqueeze(-1)
    x2[~mask.expand_as(x2)] = 1e3
    x.requires_grad_(True)
    x2.requires_grad_(True)
    out, out2 = model(x, lens), model(x2, lens)
    torch.testing.assert_close(out * mask, out2 * mask, rtol=0, atol=0)
    (out * mask).sum().backward()
    (out2 * mask).sum().backward()
    assert x.grad is not None and x2.grad is not None
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
    assert bool((x.grad[~mask.expand_as(x)] == 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bn", ["frame", "sequence"])
def test_running_stats_and_eval(bn: str, backend: str) -> None:
    model = _model(bn, backend=backend)
    lengths = [6, 3, 5]
    x, lens = _inputs(lengths)
    with torch.no_grad():
        _, stats = reference(model, x, lengths, train=True)
        model(x, lens)  # one training step updates the running statistics
    n = sum(lengths)
    for layer, layer_stats in zip(model.layers, stats):
        for d, (mean, var) in layer_stats.items():
            torch.testing.assert_close(layer.running_mean[d], 0.1 * mean)
            torch.testing.assert_close(layer.running_var[d], 0.9 + 0.1 * var * n / (n - 1))
    model.eval()
    mask = (torch.arange(6) < lens.unsqueeze(1)).unsqueeze(-1)
    with torch.no_grad():
        ref, _ = reference(model, x, lengths, train=False)
        out = model(x, lens)
        torch.testing.assert_close(out * mask, ref, rtol=0, atol=1e-10)
        # eval output depends on each utterance alone, not on the batch
        alone = model(x[1:2, :3], lens[1:2])
        torch.testing.assert_close(alone, out[1:2, :3], rtol=0, atol=1e-12)
        # folded inference: a plain BLSTM with BN absorbed gives the same output
        folded = model.fold_bn().eval()
        assert folded.cfg.bn == "none"
        torch.testing.assert_close(folded(x, lens), out, rtol=0, atol=1e-12)


def test_fold_bn_with_hidden_bn() -> None:
    model = _model("sequence", bn_hidden=True)
    x, lens = _inputs([4, 2])
    with torch.no_grad():
        for _ in range(3):
            model(x + torch.randn_like(x), lens)
        model.eval()
        torch.testing.assert_close(model.fold_bn().eval()(x, lens), model(x, lens), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bn", ["frame", "sequence"])
def test_reestimate_population_stats_pools_all_frames(bn: str) -> None:
    model = _model(bn, dropout=0.5)
    batches = [_inputs([5, 2], seed=3), _inputs([3, 4, 1], seed=4)]
    first = model.layers[0]
    # statistics of the first layer's W·x over all frames of both batches, written out
    rows = torch.cat([x[b, :n] for x, lens in batches for b, n in enumerate(lens.tolist())])
    z = rows @ first.weight_ih.detach().transpose(1, 2)  # (2, N, 4H)
    assert reestimate_population_stats(model.eval(), batches) == 2
    assert not model.training
    torch.testing.assert_close(first.running_mean, z.mean(1))
    torch.testing.assert_close(first.running_var, z.var(1))


def test_config_round_trip_and_validation() -> None:
    cfg = ModelConfig(input_dim=40, num_pdfs=100, bn="frame", dropout=0.2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bn must be one of"):
        ModelConfig(input_dim=40, num_pdfs=10, bn="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "hidden": 3})
    model = BnBlstm(ModelConfig(input_dim=5, num_pdfs=3, layers=1, units=2))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 4, 5), torch.tensor([4, 0]))


def test_paper_initialisation() -> None:
    model = BnBlstm(ModelConfig(input_dim=120, num_pdfs=10, layers=1, units=250, forget_bias=1.0))
    layer = model.layers[0]
    bound = (6 / (120 + 1000)) ** 0.5
    largest = float(layer.weight_ih.detach().abs().max())
    assert 0.9 * bound < largest <= bound
    bias = layer.bias.detach()
    assert float(bias[:, 250:500].min()) == 1.0 and float(bias[:, :250].abs().max()) == 0.0
    assert not hasattr(layer, "bias_ih")  # one bias (β) per gate unit, no input-projection bias besides it


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bn", MODES)
def test_autocast_bf16_cpu_smoke(bn: str, backend: str) -> None:
    torch.manual_seed(0)
    model = BnBlstm(ModelConfig(input_dim=8, num_pdfs=5, layers=2, units=4, bn=bn))  # type: ignore[arg-type]
    model.backend = backend  # type: ignore[assignment]
    x, lens = torch.randn(3, 6, 8), torch.tensor([6, 4, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, lens)
    mask = (torch.arange(6) < lens.unsqueeze(1)).unsqueeze(-1)
    loss = -(out.float() * mask).sum()
    loss.backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        full = model(x, lens)
    assert float((out.detach().float().exp() - full.exp()).abs().max()) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (cuDNN kernel path)")
@pytest.mark.parametrize("bn", MODES)
def test_cuda_matches_cpu(bn: str) -> None:
    model = _model(bn).float()
    x, lens = _inputs([6, 3, 6, 1])
    x = x.float().requires_grad_(True)
    weights = torch.randn(4, 6, 4)
    out = model(x, lens)
    cpu = _grads(model, x, out, weights)
    gpu_model = _model(bn).float().cuda()
    xg = x.detach().cuda().requires_grad_(True)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full float32 to compare
        out_g = gpu_model(xg, lens.cuda())
        torch.testing.assert_close(out_g.cpu(), out, rtol=1e-4, atol=1e-4)
        gpu = _grads(gpu_model, xg, out_g, weights.cuda())
    for name in cpu:
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-3, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    model.eval()
    gpu_model.eval()  # eval with gradients (cuDNN must keep its training workspace)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out_g = gpu_model(xg, lens.cuda())
        out_g.sum().backward()
        torch.testing.assert_close(out_g.detach().cpu(), model(x, lens).detach(), rtol=1e-4, atol=1e-4)
