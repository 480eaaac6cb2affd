"""BN-BLSTM against a transparent float64 reference: explicit masked BN and a per-sequence, per-step LSTM loop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from asr_bn.config import ModelConfig
from asr_bn.model import BnBlstm, reestimate_population_stats

MODES = ["none", "frame", "sequence"]
BACKENDS = ["kernel", "loop"]  # torch's fused LSTM kernel, the hand-written recurrence
# (bn, bn_hidden): every BN mode, and the hidden-to-hidden BN ablation on top of both BN modes
CONFIGS = [pytest.param(bn, False, id=bn) for bn in MODES] + [
    pytest.param(bn, True, id=f"{bn}+hidden") for bn in ("frame", "sequence")
]
BN_CONFIGS = CONFIGS[1:]  # those with running statistics


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
    """Log-posteriors (B, T, P) (zeros at padded frames) and, per layer, the rows the pooled (running) statistics
    are over: ``{"": {d: W·x rows}, "hidden_": {d: W_h·h rows}}`` for direction d.

    The W_h·h rows are those of recurrence steps s >= 1 only: at s = 0, h0 = 0 makes every row exactly 0, which
    training BN maps to 0 (zero spread), so those rows say nothing about W_h·h and would bias the pooled mean
    towards 0 and the variance down; the model's running and population statistics leave them out too."""
    cfg = model.cfg
    hid, eps = cfg.units, cfg.bn_eps
    bsz, t_max, _ = x.shape
    real = [(b, t) for b in range(bsz) for t in range(lengths[b])]
    stats: list[dict] = []
    inp = x
    for layer in model.layers:
        out = torch.zeros(bsz, t_max, 2 * hid, dtype=x.dtype)
        layer_stats: dict = {"": {}, "hidden_": {}}
        for d in range(2):
            z = inp @ layer.weight_ih[d].t()  # (B, T, 4H)
            zn = torch.zeros_like(z)
            if cfg.bn == "none":
                for b, t in real:
                    zn[b, t] = z[b, t] + layer.bias[d]
            else:
                mean, var, _, _ = _bn(z, real, layer.bn_weight[d], layer.bias[d], eps)
                layer_stats[""][d] = torch.stack([z[b, t] for b, t in real])
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
            hidden_rows = []
            for s in range(t_max):
                running = [b for b in range(bsz) if lengths[b] > s]
                times = {b: (s if d == 0 else lengths[b] - 1 - s) for b in running}
                rec = {b: layer.weight_hh[d] @ hs[b] for b in running}
                if cfg.bn_hidden:
                    rows = torch.stack([rec[b] for b in running])
                    if s > 0:
                        hidden_rows.append(rows)
                    if train:
                        m, v = rows.mean(0), ((rows - rows.mean(0)) ** 2).mean(0)
                    else:
                        m, v = layer.hidden_running_mean[d], layer.hidden_running_var[d]
                    rec = {b: (rec[b] - m) / torch.sqrt(v + eps) * layer.hidden_bn_weight[d] for b in running}
                for b in running:
                    hs[b], cs[b] = _cell(zn[b, times[b]] + rec[b], cs[b], hid)
                    out[b, times[b], d * hid : (d + 1) * hid] = hs[b]
            if hidden_rows:
                layer_stats["hidden_"][d] = torch.cat(hidden_rows)
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
    # None: no output depends on the parameter (W_h, γ_h of hidden BN when every utterance has one frame): 0
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    grads["x"] = x.grad.clone()
    return grads


def _mask(lens: Tensor, t_max: int) -> Tensor:
    """(B, T, 1): True at the real frames of each utterance."""
    return (torch.arange(t_max, device=lens.device) < lens.unsqueeze(1)).unsqueeze(-1)


def _assert_padded_zero(out: Tensor, mask: Tensor) -> None:
    """The forward's contract: outputs at padded frames are exactly 0 (the other tests only compare real frames)."""
    assert bool((out.masked_select(~mask) == 0).all()), "non-zero output at a padded frame"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bn", "bn_hidden"), CONFIGS)
@pytest.mark.parametrize("lengths", [[6, 3, 6, 1], [5, 2, 4], [1], [4], [1, 1, 1]])
def test_matches_reference_outputs_and_gradients(bn: str, bn_hidden: bool, lengths: list[int], backend: str) -> None:
    model = _model(bn, backend=backend, bn_hidden=bn_hidden)
    x, lens = _inputs(lengths)
    weights = torch.randn(x.shape[0], x.shape[1], 4, dtype=torch.float64)
    x.requires_grad_(True)
    out = model(x, lens)
    ref, _ = reference(model, x, lengths, train=True)
    _assert_padded_zero(out, _mask(lens, x.shape[1]))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    got = _grads(model, x, out, weights)
    want = _grads(model, x, ref, weights)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bn", "bn_hidden"), CONFIGS)
@pytest.mark.parametrize("train", [True, False])
def test_padding_changes_nothing(bn: str, bn_hidden: bool, train: bool, backend: str) -> None:
    model = _model(bn, backend=backend, bn_hidden=bn_hidden).train(train)
    x, lens = _inputs([5, 2, 4], t_max=7)
    x2 = x.clone()
    mask = _mask(lens, 7)
    x2[~mask.expand_as(x2)] = 1e3
    x.requires_grad_(True)
    x2.requires_grad_(True)
    out, out2 = model(x, lens), model(x2, lens)
    _assert_padded_zero(out, mask)
    _assert_padded_zero(out2, mask)
    torch.testing.assert_close(out, out2, rtol=0, atol=0)
    (out * mask).sum().backward()
    (out2 * mask).sum().backward()
    assert x.grad is not None and x2.grad is not None
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
    assert bool((x.grad[~mask.expand_as(x)] == 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bn", "bn_hidden"), BN_CONFIGS)
def test_running_stats_and_eval(bn: str, bn_hidden: bool, backend: str) -> None:
    model = _model(bn, backend=backend, bn_hidden=bn_hidden)
    lengths = [6, 3, 5]
    x, lens = _inputs(lengths)
    with torch.no_grad():
        _, stats = reference(model, x, lengths, train=True)
        model(x, lens)  # one training step updates the running statistics
    for layer, layer_stats in zip(model.layers, stats):
        assert set(layer_stats["hidden_"]) == ({0, 1} if bn_hidden else set())
        for prefix, rows_of in layer_stats.items():
            for d, rows in rows_of.items():  # momentum 0.1 from mean 0, variance 1; the variance is unbiased
                torch.testing.assert_close(getattr(layer, prefix + "running_mean")[d], 0.1 * rows.mean(0))
                torch.testing.assert_close(getattr(layer, prefix + "running_var")[d], 0.9 + 0.1 * rows.var(0))
    model.eval()
    mask = _mask(lens, 6)
    with torch.no_grad():
        ref, _ = reference(model, x, lengths, train=False)
        out = model(x, lens)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
        _assert_padded_zero(out, mask)
        # eval output depends on each utterance alone, not on the batch
        alone = model(x[1:2, :3], lens[1:2])
        torch.testing.assert_close(alone, out[1:2, :3], rtol=0, atol=1e-12)
        # folded inference: a plain BLSTM with BN absorbed gives the same output
        folded = model.fold_bn().eval()
        assert folded.cfg.bn == "none" and not folded.cfg.bn_hidden
        torch.testing.assert_close(folded(x, lens), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("bn", "bn_hidden"), BN_CONFIGS)
def test_reestimate_population_stats_pools_all_frames(bn: str, bn_hidden: bool) -> None:
    model = _model(bn, dropout=0.5, bn_hidden=bn_hidden)
    batches = [_inputs([5, 2], seed=3), _inputs([3, 4, 1], seed=4)]
    with torch.no_grad():  # the rows each statistic pools, per batch: training-mode BN, no dropout
        per_batch = [reference(model, x, lens.tolist(), train=True)[1] for x, lens in batches]
    assert reestimate_population_stats(model.eval(), batches) == 2
    assert not model.training
    for i, layer in enumerate(model.layers):
        for prefix in ("", "hidden_") if bn_hidden else ("",):
            rows = torch.stack([torch.cat([stats[i][prefix][d] for stats in per_batch]) for d in range(2)])
            torch.testing.assert_close(getattr(layer, prefix + "running_mean"), rows.mean(1))
            torch.testing.assert_close(getattr(layer, prefix + "running_var"), rows.var(1))


def test_hidden_stats_need_utterances_longer_than_one_frame() -> None:
    model = _model("sequence", bn_hidden=True)
    x, lens = _inputs([1, 1])
    with torch.no_grad():
        model(x, lens)  # a training step: W·x statistics move, W_h·h has no rows (step 0 only) and stays
    layer = model.layers[0]
    assert not torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))
    assert torch.equal(layer.hidden_running_mean, torch.zeros_like(layer.hidden_running_mean))
    assert torch.equal(layer.hidden_running_var, torch.ones_like(layer.hidden_running_var))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="every utterance has 1 frame.*longer utterances"):
        reestimate_population_stats(model, [(x, lens)])
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


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


# Autocast: (log-posterior atol at real frames, max gradient error / max |gradient| per parameter), 2 to 5 times
# the worst measured over 4 seeds on these shapes (bfloat16 keeps 8 mantissa bits, float16 11)
AUTOCAST_TOL = {torch.bfloat16: (0.05, 0.75), torch.float16: (0.01, 0.1)}
AUTOCAST = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]


def _check_autocast(model: BnBlstm, x: Tensor, lens: Tensor, dtype: torch.dtype) -> None:
    """Under autocast on x's device, training and eval forwards are finite, exactly 0 at padded frames and close
    to float32, and their backward gives finite gradients close to float32's."""
    out_atol, grad_tol = AUTOCAST_TOL[dtype]
    mask = _mask(lens, x.shape[1])
    weights = torch.randn(x.shape[0], x.shape[1], model.cfg.num_pdfs, device=x.device) * mask
    for train in (True, False):
        model.train(train)
        with torch.autocast(x.device.type, dtype=dtype):
            low = model(x, lens)
        low_grads = _grads(model, x, low.float(), weights)
        full = model(x, lens)
        full_grads = _grads(model, x, full, weights)
        low = low.detach().float()
        assert bool(torch.isfinite(low).all())
        _assert_padded_zero(low, mask)
        assert not torch.equal(low, full.detach())  # autocast took effect
        torch.testing.assert_close(low * mask, full.detach() * mask, rtol=0, atol=out_atol)
        for name, want in full_grads.items():
            got = low_grads[name]
            assert bool(torch.isfinite(got).all()), name
            err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-3))
            assert err < grad_tol, f"{name} (train={train}): gradient error {err:.3f} of its largest entry"


@pytest.mark.parametrize("dtype", AUTOCAST)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bn", "bn_hidden"), CONFIGS)
def test_autocast_cpu_close_to_float32(bn: str, bn_hidden: bool, backend: str, dtype: torch.dtype) -> None:
    model = _model(bn, backend=backend, bn_hidden=bn_hidden).float()
    x, lens = _inputs([6, 4, 2], t_max=7)
    _check_autocast(model, x.float().requires_grad_(True), lens, dtype)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (cuDNN kernel path)")
@pytest.mark.parametrize("dtype", AUTOCAST)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bn", "bn_hidden"), CONFIGS)
def test_cuda_autocast_close_to_float32(bn: str, bn_hidden: bool, backend: str, dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this CUDA device has no bfloat16")
    model = _model(bn, backend=backend, bn_hidden=bn_hidden).float().cuda()
    x, lens = _inputs([6, 4, 2], t_max=7)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full float32 for the float32 side
        _check_autocast(model, x.float().cuda().requires_grad_(True), lens.cuda(), dtype)


def test_population_statistics_is_the_models_own_mode() -> None:
    """model.population_statistics(): batch statistics without dropout inside (two forwards agree), the mode and,
    after an error inside, the running statistics as they were."""
    model = _model("sequence", dropout=0.5).eval()
    x, lens = _inputs([4, 3], seed=5)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="stop"), torch.no_grad(), model.population_statistics():
        assert model.training
        torch.testing.assert_close(model(x, lens), model(x, lens), rtol=0, atol=0)  # dropout off
        raise RuntimeError("stop")
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad(), model.population_statistics():
        model(x, lens)
    assert not torch.equal(model.layers[0].running_mean, before["layers.0.running_mean"])
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x, lens), model(x, lens))  # dropout is back on in training mode
