"""BN-BLSTM acoustic model (Laurent et al., ICASSP 2016): bidirectional LSTM layers with batch normalization on the
input-to-hidden product W·x only, then a linear layer and log-softmax over pdfs.

Batch-norm modes (``ModelConfig.bn``), all padding-aware (padded frames never touch statistics or outputs):

- ``"none"``: plain BLSTM, one bias per gate unit.
- ``"sequence"``: statistics of W·x over every unpadded frame of the batch (n = Σ T_i). Sequence-wise BN of W·x is an
  affine map of x whose statistics follow exactly from the mean μ and covariance Σ of x (mean_j = w_j·μ,
  var_j = w_jᵀ Σ w_j), so BN(Wx) = W'x + b' with W' = diag(γ/σ) W and b' = β − diag(γ/σ) W μ: the layer is a
  plain LSTM with weights W', b', and autograd through this construction gives exact gradients.
- ``"frame"``: statistics per time step t over the batch entries still running at t (both directions use the time
  index t of the frame). This cannot fold into fixed weights: W·x is computed for all frames with one matmul,
  normalized per step, and the recurrence consumes the normalized pre-activations.

With BN, each gate unit has a learnable γ (init 1) and β (init 0, the forget-gate part init ``forget_bias``); the
input projection has no bias (β replaces it). Gate order is i, f, o, g. ``bn_hidden`` adds a BN of W_h·h at each
recurrence step over the entries still running at that step (the paper's negative ablation; γ_h only, since β
already shifts the gate); in training it runs on a slow per-step autograd path whichever the backend. Its pooled
statistics (below) leave out step 0, where W_h·h0 = 0 (h0 = 0): training BN maps those constant rows to 0, and pooling
them would pull the mean towards 0 and the variance down. Eval applies the pooled affine at step 0 too (a shift
−γ_h·μ_h/σ_h there), so that it still folds into a plain LSTM.

Two recurrence backends compute the same function (``BnBlstm.backend``): ``"kernel"`` is torch's fused LSTM
(cuDNN on CUDA; on a CPU its backward is recorded op by op and is slow), fed W', b' (sequence BN) or, for frame BN,
the normalized pre-activations through exact 0/1 input weights; ``"loop"`` is ``_BiLstmRecurrence``, both
directions in one batched step with a hand-written backward. ``"auto"`` picks the loop on a CPU when gradients
are recorded or frame BN runs in training mode, the kernel otherwise (docs/PERFORMANCE.md has the measurements).

Inference (``eval()``) normalizes with running statistics: one mean/variance per gate unit, the momentum average of
the batch's pooled statistics over all unpadded frames, in both modes. For frame-wise BN this deliberately replaces
the paper's per-time-step population statistics (re-using the last step's for longer utterances): pooled statistics
estimate the same marginal distribution of W·x without depending on the time index, so utterances of any length get
the same normalization, eval output does not depend on the batch, and eval BN is affine in x and folds into the
weights (``BnBlstm.fold_bn``). ``reestimate_population_stats`` replaces the momentum averages by exact population
statistics over training batches (the paper's alternative).

Shapes: B batch, T frames, D input dim, H units per direction, P pdfs, N = Σ T_i real frames (packed layout).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from asr_bn.config import BnMode, ModelConfig

__all__ = ["BnBlstm", "BnBlstmLayer", "reestimate_population_stats"]

# ----------------------------------------------------------------------------------------------------------------
# Packed-layout bookkeeping


@dataclass
class _Packing:
    """Indices of a packed batch (rows grouped by time step, entries sorted by decreasing length).

    The "recurrence layout" (2, N, ·) holds direction 0 in packed order and direction 1 in per-sequence reversed
    time (row r of (entry b, step s) holds time T_b-1-s), so both directions share one step structure.
    """

    batch_sizes_cpu: Tensor  # (T,) int64 on the CPU, as PackedSequence holds it (for torch's kernel)
    batch_sizes: list[int]  # T entries, non-increasing
    offsets: list[int]  # row where step s starts
    reverse_rows: Tensor  # (N,): row of (entry b, step T_b-1-s) for the row of (entry b, step s); an involution
    prev_rows: Tensor  # (N - batch_sizes[0],): for rows of steps ≥ 1, the row of the same entry one step before
    step_of_row: Tensor  # (N,): time step of each packed row
    step_sizes: Tensor  # (T,) float64: rows per time step

    @classmethod
    def from_batch_sizes(cls, batch_sizes: Tensor, device: torch.device) -> _Packing:
        """Derive every index from the packed ``batch_sizes`` (CPU int64)."""
        bs = batch_sizes.to(torch.int64)
        offsets = torch.zeros_like(bs)
        offsets[1:] = torch.cumsum(bs, 0)[:-1]
        steps = torch.repeat_interleave(torch.arange(len(bs)), bs)  # (N,)
        entry = torch.arange(len(steps)) - offsets[steps]  # sorted-batch entry of each row
        seq_len = (bs.unsqueeze(0) > torch.arange(int(bs[0])).unsqueeze(1)).sum(1)  # (B,) lengths, sorted
        reverse = offsets[seq_len[entry] - 1 - steps] + entry
        later = steps >= 1
        prev = offsets[steps[later] - 1] + entry[later]
        return cls(
            batch_sizes_cpu=bs,
            batch_sizes=bs.tolist(),
            offsets=offsets.tolist(),
            reverse_rows=reverse.to(device),
            prev_rows=prev.to(device),
            step_of_row=steps.to(device),
            step_sizes=bs.to(device=device, dtype=torch.float64),
        )


class _ToRecurrence(torch.autograd.Function):
    """Packed rows x (N, D) → (2, N, D) in the recurrence layout: x itself and x in per-sequence reversed time."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, packing: _Packing) -> Tensor:  # type: ignore[override]
        out = x.new_empty(2, *x.shape)
        out[0].copy_(x)
        torch.index_select(x, 0, packing.reverse_rows, out=out[1])
        ctx.packing = packing
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad[0] + grad[1].index_select(0, ctx.packing.reverse_rows), None


class _FromRecurrence(torch.autograd.Function):
    """Both directions' outputs h (2, N, H) in the recurrence layout → packed rows (N, 2H) [forward | backward]."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, packing: _Packing) -> Tensor:  # type: ignore[override]
        hid = h.shape[-1]
        out = h.new_empty(h.shape[1], 2 * hid)
        out[:, :hid].copy_(h[0])
        out[:, hid:] = h[1].index_select(0, packing.reverse_rows)
        ctx.packing = packing
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        hid = grad.shape[1] // 2
        dh = grad.new_empty(2, grad.shape[0], hid)
        dh[0].copy_(grad[:, :hid])
        torch.index_select(grad[:, hid:], 0, ctx.packing.reverse_rows, out=dh[1])
        return dh, None


# ----------------------------------------------------------------------------------------------------------------
# Recurrence over precomputed gate pre-activations (both directions at once), hand-written BPTT


class _BiLstmRecurrence(torch.autograd.Function):
    """LSTM recurrence of both directions over precomputed gate inputs in the recurrence layout.

    gx: (2, N, 4H) gate pre-activations (input part incl. bias), gate order i, f, o, g. w_hh: (2, 4H, H).
    Returns h: (2, N, H) in the recurrence layout, and gx overwritten in place by the activated gates (saves a copy
    per step; callers pass a fresh tensor no other autograd node saved, and ignore it). Per step: one batched matmul
    for both directions and a handful of in-place element-wise ops on cache-sized slices; the backward is written
    out instead of recorded op by op.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, gx: Tensor, w_hh: Tensor, packing: _Packing
    ) -> tuple[Tensor, Tensor]:
        _, n, four_h = gx.shape
        hid = four_h // 4
        act = gx  # activated gates, in place
        c = gx.new_empty(2, n, hid)
        tc = gx.new_empty(2, n, hid)  # tanh(c)
        h = gx.new_empty(2, n, hid)
        w_t = w_hh.transpose(1, 2)  # (2, H, 4H)
        prev = 0
        for s, (o, b) in enumerate(zip(packing.offsets, packing.batch_sizes)):
            e = o + b
            a = act[:, o:e]
            if s > 0:
                a.baddbmm_(h[:, prev : prev + b], w_t)
            a[..., : 3 * hid].sigmoid_()
            a[..., 3 * hid :].tanh_()
            cs = c[:, o:e]
            if s == 0:
                torch.mul(a[..., :hid], a[..., 3 * hid :], out=cs)
            else:
                torch.mul(a[..., hid : 2 * hid], c[:, prev : prev + b], out=cs)
                cs.addcmul_(a[..., :hid], a[..., 3 * hid :])
            torch.tanh(cs, out=tc[:, o:e])
            torch.mul(a[..., 2 * hid : 3 * hid], tc[:, o:e], out=h[:, o:e])
            prev = o
        ctx.mark_dirty(gx)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the (ignored) activations
        ctx.save_for_backward(w_hh, act, c, tc, h)
        ctx.packing = packing
        return h, act

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dh_out: Tensor, _dact: Tensor | None
    ) -> tuple[Tensor, Tensor | None, None]:
        w_hh, act, c, tc, h = ctx.saved_tensors
        packing: _Packing = ctx.packing
        if dh_out is None:
            dh_out = torch.zeros_like(h)
        hid = act.shape[-1] // 4
        b0 = packing.batch_sizes[0]
        dgx = torch.empty_like(act)
        carry_h = act.new_zeros(2, b0, hid)  # dL/dh_s arriving from step s+1
        carry_c = act.new_zeros(2, b0, hid)  # dL/dc_s arriving from step s+1
        one = act.new_ones(())
        steps = list(zip(packing.offsets, packing.batch_sizes))
        for s in range(len(steps) - 1, -1, -1):
            o, b = steps[s]
            e = o + b
            a = act[:, o:e]
            d = dgx[:, o:e]
            ts = tc[:, o:e]
            dh = dh_out[:, o:e] + carry_h[:, :b]
            torch.mul(dh, ts, out=d[..., 2 * hid : 3 * hid])  # d o
            dc = dh.mul_(a[..., 2 * hid : 3 * hid])
            dc.mul_(torch.addcmul(one, ts, ts, value=-1)).add_(carry_c[:, :b])
            torch.mul(dc, a[..., 3 * hid :], out=d[..., :hid])  # d i
            torch.mul(dc, a[..., :hid], out=d[..., 3 * hid :])  # d g
            if s > 0:
                po = steps[s - 1][0]
                torch.mul(dc, c[:, po : po + b], out=d[..., hid : 2 * hid])  # d f
                torch.mul(dc, a[..., hid : 2 * hid], out=carry_c[:, :b])
            else:
                d[..., hid : 2 * hid].zero_()
            sg = a[..., : 3 * hid]
            d[..., : 3 * hid].mul_(torch.addcmul(sg, sg, sg, value=-1))  # σ' = σ − σ²
            g = a[..., 3 * hid :]
            d[..., 3 * hid :].mul_(torch.addcmul(one, g, g, value=-1))  # tanh' = 1 − tanh²
            if s > 0:
                carry_h[:, :b] = torch.bmm(d, w_hh)  # (bmm with a strided out= is twice as slow)
        dw = None
        if ctx.needs_input_grad[1]:
            dw = torch.bmm(dgx[:, b0:].transpose(1, 2), h[:, packing.prev_rows])  # Σ_s dgates_sᵀ h_{s-1}
        return dgx, dw, None


def _loop_lstm(gx: Tensor, w_hh: Tensor, packing: _Packing) -> Tensor:
    """``_BiLstmRecurrence`` on gx (2, N, 4H) in the recurrence layout → packed output (N, 2H)."""
    h, _ = _BiLstmRecurrence.apply(gx, w_hh.to(gx.dtype), packing)
    return _FromRecurrence.apply(h, packing)


def _torch_gate_order(hid: int, device: torch.device) -> Tensor:
    """Row permutation between our gate order i, f, o, g and torch's i, f, g, o (an involution)."""
    return torch.cat([torch.arange(0, 2 * hid), torch.arange(3 * hid, 4 * hid), torch.arange(2 * hid, 3 * hid)]).to(
        device
    )


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for x's device, else x's dtype."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _kernel_lstm(x: Tensor, packing: _Packing, w_ih: Tensor, w_hh: Tensor, b: Tensor) -> Tensor:
    """torch's fused bidirectional LSTM (cuDNN / native) on packed x (N, D) with one bias per gate unit → (N, 2H)."""
    dtype = _compute_dtype(x)
    hid = w_hh.shape[-1]
    perm = _torch_gate_order(hid, x.device)
    w_ih, w_hh, b = w_ih[:, perm].to(dtype), w_hh[:, perm].to(dtype), b[:, perm].to(dtype)
    zero_b = b.new_zeros(4 * hid)
    weights = [w_ih[0], w_hh[0], b[0], zero_b, w_ih[1], w_hh[1], b[1], zero_b]
    h0 = x.new_zeros(2, packing.batch_sizes[0], hid, dtype=dtype)
    train = torch.is_grad_enabled()  # cuDNN keeps what its backward needs only in "train" mode (dropout is 0)
    with torch.autocast(x.device.type, enabled=False), warnings.catch_warnings():
        # cuDNN copies weights that are not views of one flat buffer (ours are computed per call; a few MB)
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
        out, _, _ = torch._VF.lstm(x.to(dtype), packing.batch_sizes_cpu, (h0, h0), weights, True, 1, 0.0, train, True)
    return out


def _kernel_lstm_on_gates(z: Tensor, w_hh: Tensor, packing: _Packing) -> Tensor:
    """torch's fused kernel on precomputed gate inputs z (N, 2, 4H) (packed order, both directions): the input
    weights are exact 0/1 selection matrices, so the kernel's input product reproduces z (one extra GEMM)."""
    n, _, four_h = z.shape
    sel = torch.eye(2 * four_h, dtype=z.dtype, device=z.device).view(2, four_h, 2 * four_h)  # (2, 4H, 8H)
    bias = z.new_zeros(2, four_h)
    return _kernel_lstm(z.reshape(n, 2 * four_h), packing, sel, w_hh, bias)


def _project(x2: Tensor, w_ih: Tensor, b: Tensor) -> Tensor:
    """Per-direction input products (2, N, 4H) = x2[d] · w_ih[d]ᵀ + b[d] for x2 (2, N, D)."""
    return torch.baddbmm(b.unsqueeze(1), x2, w_ih.transpose(1, 2))


# ----------------------------------------------------------------------------------------------------------------
# Statistics helpers


class _PopulationStats:
    """Exact pooled mean/variance per unit over many batches (Chan et al.'s merge), accumulated in float64."""

    def __init__(self) -> None:
        self.n = 0.0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, mean: Tensor, var: Tensor, n: int) -> None:
        """Merge a batch's biased statistics over ``n`` frames."""
        mean, m2 = mean.detach().double(), var.detach().double() * n
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = float(n), mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / total)
        self.n = total

    def result(self) -> tuple[Tensor, Tensor]:
        """Population mean and unbiased variance."""
        if self.mean is None or self.m2 is None:
            raise ValueError("no statistics were accumulated: the batches were empty")
        return self.mean, self.m2 / max(self.n - 1.0, 1.0)


def _pool_steps(mean_t: Tensor, var_t: Tensor, sizes: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Pooled mean and biased variance over all rows from per-step means/variances along ``dim`` of ``sizes`` rows."""
    shape = [1] * mean_t.dim()
    shape[dim] = -1
    w = (sizes / sizes.sum()).to(mean_t.dtype).view(shape)
    mean = (w * mean_t).sum(dim)
    var = (w * (var_t + (mean_t - mean.unsqueeze(dim)).square())).sum(dim)
    return mean, var


class _Gram(torch.autograd.Function):
    """xᵀx with a one-matmul backward (x·(dG + dGᵀ)), instead of autograd's two."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.t() @ x

    @staticmethod
    def backward(ctx: Any, dg: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x @ (dg + dg.t())


def _frame_bn(z: Tensor, packing: _Packing, gamma: Tensor, beta: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Frame-wise BN of z (N, C) in packed order with whole-tensor ops: each row is normalized with the statistics
    of the rows of its time step. Returns the output and the per-step mean and biased variance (T, C)."""
    steps = packing.step_of_row
    sizes = packing.step_sizes.to(z.dtype).unsqueeze(1)  # (T, 1)
    mean = z.new_zeros(len(packing.batch_sizes), z.shape[1]).index_add(0, steps, z) / sizes
    zc = z - mean[steps]
    var = z.new_zeros(mean.shape).index_add(0, steps, zc.square()) / sizes
    return zc * (torch.rsqrt(var + eps) * gamma)[steps] + beta, mean, var


class _FrameBnSteps(torch.autograd.Function):
    """Frame-wise BN of z (N, 8H) (packed order, both directions side by side), one time step — a contiguous row
    block — at a time, written straight into the recurrence layout (2, N, 4H). Working on cache-sized blocks beats
    whole-tensor passes several times on a CPU (``_frame_bn`` is the whole-tensor version, for GPUs).
    Also returns the per-step mean and biased variance (T, 8H), for the running statistics."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, gamma: Tensor, beta: Tensor, packing: _Packing, eps: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        n, width = z.shape
        half = width // 2
        out = z.new_empty(2, n, half)
        rev = packing.reverse_rows
        means, variances, scales = [], [], []
        for o, b in zip(packing.offsets, packing.batch_sizes):
            mean = z[o : o + b].mean(0)  # (two passes: torch.var_mean over dim 0 is many times slower here)
            zc = z[o : o + b] - mean
            var = zc.square().mean(0)
            scale = torch.rsqrt(var + eps).mul_(gamma)  # γ/σ
            torch.addcmul(beta[:half], zc[:, :half], scale[:half], out=out[0, o : o + b])
            out[1].index_copy_(0, rev[o : o + b], torch.addcmul(beta[half:], zc[:, half:], scale[half:]))
            means.append(mean)
            variances.append(var)
            scales.append(scale)
        ctx.save_for_backward(z, gamma)
        ctx.stats = (means, variances, scales)
        ctx.packing, ctx.eps = packing, eps
        mean_t, var_t = torch.stack(means), torch.stack(variances)
        ctx.mark_non_differentiable(mean_t, var_t)
        return out, mean_t, var_t

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dout: Tensor, _dmean: Tensor | None, _dvar: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, None, None]:
        z, gamma = ctx.saved_tensors
        means, variances, scales = ctx.stats
        packing: _Packing = ctx.packing
        rev = packing.reverse_rows
        dz = torch.empty_like(z)
        m1s, m2s = [], []
        for s, (o, b) in enumerate(zip(packing.offsets, packing.batch_sizes)):
            dy = torch.cat([dout[0, o : o + b], dout[1].index_select(0, rev[o : o + b])], dim=1)  # dL/d out (b, 8H)
            xhat = (z[o : o + b] - means[s]).mul_(scales[s] / gamma)  # (z − μ)/σ
            m1 = dy.mean(0)
            m2 = (dy * xhat).mean(0)
            dy.sub_(m1).addcmul_(xhat, m2, value=-1)
            torch.mul(dy, scales[s], out=dz[o : o + b])  # γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))
            m1s.append(m1)
            m2s.append(m2)
        sizes = packing.step_sizes.to(z.dtype).unsqueeze(1)
        dgamma = (torch.stack(m2s) * sizes).sum(0)
        dbeta = (torch.stack(m1s) * sizes).sum(0)
        return dz, dgamma, dbeta, None, None


# ----------------------------------------------------------------------------------------------------------------
# One bidirectional layer


Backend = Literal["auto", "kernel", "loop"]


def _resolve_backend(backend: Backend, device: torch.device, frame_bn: bool) -> Literal["kernel", "loop"]:
    """'auto' → torch's fused kernel on CUDA (cuDNN); on a CPU the hand-written recurrence when gradients are
    recorded (torch's CPU kernel records its backward step by step and is several times slower) or when frame-wise
    BN needs the 0/1 input product, and torch's native kernel for plain inference (docs/PERFORMANCE.md)."""
    if backend != "auto":
        return backend
    if device.type == "cuda" or not (torch.is_grad_enabled() or frame_bn):
        return "kernel"
    return "loop"


class BnBlstmLayer(nn.Module):
    """One bidirectional LSTM layer on packed data (N, D) → (N, 2H), with optional BN of W·x (and of W_h·h).

    Parameters per direction d ∈ {0: forward, 1: backward}, gate order i, f, o, g (sigmoid gates first):
    ``weight_ih[d]`` (4H, D), ``weight_hh[d]`` (4H, H), ``bias[d]`` (4H) (β when BN is on), ``bn_weight[d]`` (γ).
    """

    def __init__(
        self,
        input_dim: int,
        units: int,
        bn: BnMode,
        bn_hidden: bool = False,
        forget_bias: float = 0.0,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.input_dim, self.units, self.bn, self.bn_hidden = input_dim, units, bn, bn_hidden
        self.momentum, self.eps, self.forget_bias = momentum, eps, forget_bias
        four_h = 4 * units
        self.weight_ih = nn.Parameter(torch.empty(2, four_h, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(2, four_h, units))
        self.bias = nn.Parameter(torch.zeros(2, four_h))
        if bn != "none":
            self.bn_weight = nn.Parameter(torch.ones(2, four_h))
            self.register_buffer("running_mean", torch.zeros(2, four_h))
            self.register_buffer("running_var", torch.ones(2, four_h))
        if bn_hidden:
            self.hidden_bn_weight = nn.Parameter(torch.ones(2, four_h))
            self.register_buffer("hidden_running_mean", torch.zeros(2, four_h))
            self.register_buffer("hidden_running_var", torch.ones(2, four_h))
        self._population: dict[str, _PopulationStats] | None = None  # inside population_statistics() only
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights per direction and matrix, zero biases (forget-gate part = forget_bias), γ = 1."""
        with torch.no_grad():
            for d in range(2):
                nn.init.xavier_uniform_(self.weight_ih[d])
                nn.init.xavier_uniform_(self.weight_hh[d])
            self.bias.zero_()
            self.bias[:, self.units : 2 * self.units] = self.forget_bias
            for name in ("bn_weight", "hidden_bn_weight"):
                if hasattr(self, name):
                    getattr(self, name).fill_(1.0)

    def extra_repr(self) -> str:
        return f"{self.input_dim}, {self.units}, bn={self.bn!r}, bn_hidden={self.bn_hidden}"

    # -- statistics bookkeeping --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def population_statistics(self) -> Iterator[None]:
        """Within the block, training-mode forwards pool this layer's BN statistics exactly instead of moving the
        running averages; leaving it normally makes the pooled statistics the running ones (an error: unchanged)."""
        self._population = {}
        try:
            yield
            if self.bn_hidden and "hidden_" not in self._population:
                raise ValueError("population statistics: every utterance has 1 frame, so there are no W_h·h "
                                 "statistics for bn_hidden (steps >= 1); pass batches with longer utterances")
            with torch.no_grad():
                for prefix, stats in self._population.items():
                    mean, var = stats.result()
                    getattr(self, prefix + "running_mean").copy_(mean)
                    getattr(self, prefix + "running_var").copy_(var)
        finally:
            self._population = None

    def _record(self, prefix: str, mean: Tensor, var: Tensor, n: int) -> None:
        """Fold a batch's biased statistics (2, 4H) over ``n`` frames into the running or population statistics."""
        if self._population is not None:
            self._population.setdefault(prefix, _PopulationStats()).add(mean, var, n)
            return
        rm, rv = getattr(self, prefix + "running_mean"), getattr(self, prefix + "running_var")
        with torch.no_grad():
            unbiased = var.detach() * (n / max(n - 1, 1))
            rm.lerp_(mean.detach().to(rm.dtype), self.momentum)
            rv.lerp_(unbiased.to(rv.dtype), self.momentum)

    def _eval_affine(self, prefix: str, gamma: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and shift (2, 4H) of BN with running statistics: BN(z) = scale·z + shift (β excluded)."""
        rm, rv = getattr(self, prefix + "running_mean"), getattr(self, prefix + "running_var")
        scale = gamma * torch.rsqrt(rv + self.eps)
        return scale, -scale * rm

    def folded(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b) of the equivalent plain LSTM layer in inference mode (BN with running statistics folded)."""
        w_ih, w_hh, b = self.weight_ih, self.weight_hh, self.bias
        if self.bn != "none":
            scale, shift = self._eval_affine("", self.bn_weight)
            w_ih, b = w_ih * scale.unsqueeze(-1), b + shift
        if self.bn_hidden:
            scale, shift = self._eval_affine("hidden_", self.hidden_bn_weight)
            w_hh, b = w_hh * scale.unsqueeze(-1), b + shift
        return w_ih, w_hh, b

    # -- forward paths -----------------------------------------------------------------------------------------
    def forward(self, x: Tensor, packing: _Packing, backend: Backend = "auto") -> Tensor:
        """Packed input (N, D) → packed output (N, 2H) of both directions."""
        frame_train = self.training and self.bn == "frame"
        use = _resolve_backend(backend, x.device, frame_train)
        if use == "kernel" and not (self.training and self.bn_hidden):
            if frame_train:
                return _kernel_lstm_on_gates(self._frame_gates(x, packing), self.weight_hh, packing)
            return _kernel_lstm(x, packing, *self._affine(x))
        with torch.autocast(x.device.type, enabled=False):
            xf = self._stats_input(x)
            if frame_train:
                gx, w_hh = self._frame_gates_by_step(xf, packing), self.weight_hh
            else:
                w_ih, w_hh, b = self._affine(xf)
                gx = _project(_ToRecurrence.apply(xf, packing), w_ih.to(xf.dtype), b.to(xf.dtype))
            if self.training and self.bn_hidden:
                return self._hidden_bn_recurrence(gx, packing)
            return _loop_lstm(gx, w_hh, packing)

    def _affine(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b) making the layer a plain LSTM on x: sequence-wise BN with x's statistics in training,
        running statistics in eval (``folded``), the raw weights without BN."""
        if self.training and self.bn == "sequence":
            w_ih, b = self._sequence_bn_weights(x)
            return w_ih, self.weight_hh, b
        return self.folded()

    @staticmethod
    def _stats_input(x: Tensor) -> Tensor:
        """x in float32 when it is half precision: statistics and the hand-written recurrence run in float32."""
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

    def _frame_gates_by_step(self, x: Tensor, packing: _Packing) -> Tensor:
        """Frame-wise BN of W·x for packed x (N, D), step by step (``_FrameBnSteps``), in the recurrence layout."""
        w = self.weight_ih.to(x.dtype)
        z = x @ w.reshape(-1, w.shape[-1]).t()  # (N, 8H)
        gamma, beta = self.bn_weight.reshape(-1), self.bias.reshape(-1)
        out, mean_t, var_t = _FrameBnSteps.apply(z, gamma, beta, packing, self.eps)
        self._record_steps(mean_t, var_t, packing)
        return out

    def _record_steps(self, mean_t: Tensor, var_t: Tensor, packing: _Packing) -> None:
        """Record per-step statistics (T, 8H) of W·x pooled over all frames: the running statistics are pooled."""
        mean, var = _pool_steps(mean_t, var_t, packing.step_sizes, dim=0)
        self._record("", mean.view(2, -1), var.view(2, -1), int(packing.step_sizes.sum()))

    def _frame_gates(self, x: Tensor, packing: _Packing) -> Tensor:
        """Frame-wise BN of W·x for packed x (N, D), whole-tensor ops (``_frame_bn``) → (N, 2, 4H), packed order."""
        with torch.autocast(x.device.type, enabled=False):
            xf = self._stats_input(x)
            w = self.weight_ih.to(xf.dtype)
            z = xf @ w.reshape(-1, w.shape[-1]).t()  # (N, 8H)
            out, mean_t, var_t = _frame_bn(z, packing, self.bn_weight.reshape(-1), self.bias.reshape(-1), self.eps)
            self._record_steps(mean_t, var_t, packing)
            return out.view(xf.shape[0], 2, -1)

    def _sequence_bn_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """W' (2, 4H, D), b' (2, 4H) such that x·W'ᵀ + b' = BN(W·x) with statistics over all N frames of x."""
        n = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            xf = self._stats_input(x)
            w = self.weight_ih.to(xf.dtype)
            mu = xf.mean(0)  # (D,)
            cov = _Gram.apply(xf - mu) / n  # (D, D), biased
            mean = w @ mu  # (2, 4H)
            var = ((w @ cov) * w).sum(-1).clamp_min(0.0)  # (2, 4H) = w_jᵀ Σ w_j
            scale = self.bn_weight * torch.rsqrt(var + self.eps)
            self._record("", mean, var, n)
            return w * scale.unsqueeze(-1), self.bias - scale * mean

    def _hidden_bn_recurrence(self, gx: Tensor, packing: _Packing) -> Tensor:
        """Per-step autograd recurrence with BN of W_h·h over the entries running at each recurrence step (slow
        path for the ablation): gx (2, N, 4H) in the recurrence layout → packed output (N, 2H)."""
        hid = self.units
        w_t = self.weight_hh.to(gx.dtype).transpose(1, 2)  # (2, H, 4H)
        gamma = self.hidden_bn_weight.to(gx.dtype).unsqueeze(1)
        hs: list[Tensor] = []
        means: list[Tensor] = []
        vars_: list[Tensor] = []
        h = c = None
        for o, b in zip(packing.offsets, packing.batch_sizes):
            gates = gx[:, o : o + b]
            if h is not None:  # at step 0, W_h·h0 = 0 (h0 = 0): its BN is 0 and it has no statistics
                zh = torch.bmm(h[:, :b], w_t)
                mean = zh.mean(1, keepdim=True)
                var = (zh - mean).square().mean(1, keepdim=True)
                gates = gates + (zh - mean) * torch.rsqrt(var + self.eps) * gamma
                means.append(mean.squeeze(1))
                vars_.append(var.squeeze(1))
            sig = torch.sigmoid(gates[..., : 3 * hid])
            g = torch.tanh(gates[..., 3 * hid :])
            c = sig[..., :hid] * g if c is None else sig[..., hid : 2 * hid] * c[:, :b] + sig[..., :hid] * g
            h = sig[..., 2 * hid : 3 * hid] * torch.tanh(c)
            hs.append(h)
        if means:  # pooled over steps >= 1 only: step 0's all-zero rows would pull the mean to 0 and the variance down
            sizes = packing.step_sizes[1:]
            mean, var = _pool_steps(torch.stack(means, 1), torch.stack(vars_, 1), sizes, dim=1)
            self._record("hidden_", mean, var, gx.shape[1] - packing.batch_sizes[0])
        h_all = torch.cat(hs, dim=1)
        return _FromRecurrence.apply(h_all, packing)


# ----------------------------------------------------------------------------------------------------------------
# The model


class BnBlstm(nn.Module):
    """Stack of BN-BLSTM layers, then a linear layer and log-softmax over pdfs.

    The attribute ``backend`` ("auto", "kernel", "loop"; not part of the config) picks the recurrence
    implementation; all compute the same function and the same gradients.

    >>> m = BnBlstm(ModelConfig(input_dim=40, num_pdfs=10, layers=2, units=8))
    >>> m(torch.randn(3, 7, 40), torch.tensor([7, 5, 1])).shape
    torch.Size([3, 7, 10])
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [cfg.input_dim] + [2 * cfg.units] * (cfg.layers - 1)
        self.layers = nn.ModuleList(
            BnBlstmLayer(d, cfg.units, cfg.bn, cfg.bn_hidden, cfg.forget_bias, cfg.bn_momentum, cfg.bn_eps)
            for d in dims
        )
        self.output = nn.Linear(2 * cfg.units, cfg.num_pdfs)
        nn.init.xavier_uniform_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self._dropout_active = True  # off inside population_statistics(), where BN uses batch statistics
        self.backend: Backend = "auto"  # recurrence: "kernel" (torch's fused LSTM), "loop" (hand-written), "auto"

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Log-posteriors (B, T, P) for padded features x (B, T, D) with ``lengths`` (B,); padded rows are 0."""
        if x.dim() != 3 or x.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"BnBlstm expects x of shape (B, T, {self.cfg.input_dim}), got {tuple(x.shape)}")
        lengths_cpu = lengths.detach().to("cpu", torch.int64)
        if lengths_cpu.shape != x.shape[:1] or int(lengths_cpu.min()) < 1 or int(lengths_cpu.max()) > x.shape[1]:
            raise ValueError(
                f"BnBlstm: lengths must be (B,) = ({x.shape[0]},) with 1 <= length <= T = {x.shape[1]}, "
                f"got {lengths_cpu.tolist()}"
            )
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        logp = F.log_softmax(self.output(self.encode(packed)), dim=-1)
        out = PackedSequence(logp, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    def encode(self, packed: PackedSequence) -> Tensor:
        """Top-layer hidden states (N, 2H), in packed row order, of the BLSTM stack for a packed batch."""
        packing = _Packing.from_batch_sizes(packed.batch_sizes, packed.data.device)
        h = packed.data
        for i, layer in enumerate(self.layers):
            if i > 0 and self.cfg.dropout > 0.0:
                h = F.dropout(h, self.cfg.dropout, self.training and self._dropout_active)
            h = layer(h, packing, self.backend)
        return h

    @contextlib.contextmanager
    def population_statistics(self) -> Iterator[None]:
        """Within the block, forwards run with batch statistics (training-mode BN) and without dropout, and every
        BN layer pools its statistics exactly; leaving it normally makes the pooled statistics the running ones.
        The train/eval mode is restored either way."""
        was_training = self.training
        self.train()
        self._dropout_active = False
        try:
            with contextlib.ExitStack() as layers:
                for layer in self.layers:
                    layers.enter_context(layer.population_statistics())
                yield
        finally:
            self._dropout_active = True
            self.train(was_training)

    def fold_bn(self) -> BnBlstm:
        """A plain (bn='none') copy whose weights absorb BN with running statistics: same output as ``eval()``."""
        cfg = ModelConfig(**{**self.cfg.to_dict(), "bn": "none", "bn_hidden": False})
        plain = BnBlstm(cfg).to(device=self.output.weight.device, dtype=self.output.weight.dtype)
        plain.backend = self.backend
        with torch.no_grad():
            for src, dst in zip(self.layers, plain.layers):
                w_ih, w_hh, b = src.folded()
                dst.weight_ih.copy_(w_ih)
                dst.weight_hh.copy_(w_hh)
                dst.bias.copy_(b)
            plain.output.load_state_dict(copy.deepcopy(self.output.state_dict()))
        return plain.train(self.training)


@torch.no_grad()
def reestimate_population_stats(model: BnBlstm, batches: Iterable[tuple[Tensor, Tensor]]) -> int:
    """Replace every BN layer's running statistics by exact population statistics over ``batches`` of (x, lengths).

    The paper's alternative to momentum averages: each batch is forwarded with batch statistics (training-mode
    BN, dropout off), and the per-unit statistics of W·x (and W_h·h) are pooled over all their frames.
    Returns the number of batches used; the model's train/eval mode is restored.
    """
    if model.cfg.bn == "none":
        return 0
    count = 0
    with model.population_statistics():
        for x, lengths in batches:
            model(x, lengths)
            count += 1
        if count == 0:
            raise ValueError("reestimate_population_stats got no batches")
    return count

