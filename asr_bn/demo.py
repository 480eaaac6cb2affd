"""`asr-bn demo`: the whole hybrid pipeline on a synthetic corpus, baseline BLSTM against sequence-BN BLSTM.

synth (espeak-ng corpus, Kaldi alignment dirs) → prep (40 fbank + Δ + ΔΔ, speaker CMVN, targets from exp/ali_*) →
train (the same seed, budget and optimiser for `bn="none"` and `bn="sequence"`) → forward (frame CE/FER on train
and dev, prior-scaled log-likelihoods of dev and test) → mkgraph (word loop over the lexicon, the synth's
final.mdl) → decode → score. The same library calls the CLI commands make; recipes/demo/run.sh does it with them.

Writes under OUT_DIR (`run_demo`):
  corpus/                          synthesize_corpus: wav/, data/{train,dev,test}, lang/, exp/ali_{train,dev}
  prep/{train,dev,test}            prepare_kaldi (train and dev with pdf.ark/.scp)
  exp/<model>/                     train: final.pt, metrics.jsonl, …; scores.json (frame CE/FER),
                                   loglikes_{dev,test}.ark/.scp, decode_{dev,test}/text
  graph/                           build_graph: HCLG.fst of a word loop
  learning_curves.png              both runs' train/dev CE and FER against updates (asr_bn.train.plot_runs)
  results.json                     the table's numbers, the WER bootstraps, settings, CPU kernels, stage timings
  demo.json                        seed and size of this OUT_DIR (a rerun with others is refused)

Every stage skips work whose outputs are complete, so a rerun (or a run after a crash) only does what is missing;
an unfinished training run continues from its checkpoint. Deterministic for a seed on the CPU; across machines
the CPU kernels are pinned (`pinned_cpu_kernels`: what is reproducible where is in docs/RESULTS.md). `conclusions`
states only what the numbers carry beyond noise: WER differences come with compute-wer-bootci's P(BN better).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import OutputLock, write_text

if TYPE_CHECKING:
    from asr_bn.score import Bootstrap, WerResult
    from asr_bn.synth import CorpusPaths

__all__ = [
    "DemoBudget", "BUDGETS", "MODELS", "CPU_KERNELS", "ModelResult", "DemoResult", "run_demo", "conclusions",
    "cpu_kernel_env", "pinned_cpu_kernels",
]  # fmt: skip

Size = Literal["full", "small"]


@dataclass(frozen=True)
class DemoBudget:
    """The corpus size and the training budget both models get (identical for both, so the comparison is fair)."""

    num_speakers: int | None  # speakers of the corpus, split about 4:1:1 (None: the synth size's own)
    layers: int
    units: int
    epochs: int
    lr: float
    batch_size: int
    optimizer: str = "sgd"
    momentum: float = 0.9
    log_every: int = 5  # updates per train point of the learning curves (dev: once per epoch)


# Chosen by measurement (docs/RESULTS.md, "Demo"). full: SGD with momentum, the paper's optimiser, under which BN's
# faster convergence shows most (Adam's per-weight step sizes already make up for part of what BN fixes); about
# 4 minutes of training for both models on 2 CPU cores. small: a smoke test of the pipeline; Adam gives both tiny
# models a usable WER in 250 updates, where SGD leaves the baseline near 55 %.
BUDGETS: dict[str, DemoBudget] = {
    "full": DemoBudget(None, layers=2, units=128, epochs=10, lr=0.5, batch_size=16, optimizer="sgd", log_every=5),
    "small": DemoBudget(14, layers=1, units=48, epochs=10, lr=0.01, batch_size=4, optimizer="adam", log_every=2),
}
MODELS: tuple[tuple[str, str], ...] = (("baseline", "none"), ("bn-sequence", "sequence"))  # (name, bn)
SPLITS = ("train", "dev", "test")
REPLICATIONS = 10000  # bootstrap replications of the WER comparison (compute-wer-bootci's default)
LEVEL = 0.95  # a WER difference is claimed only when one model is better in this share of the replications
# torch's CPU kernels: ATen's AVX2 kernels on every x86-64 CPU with AVX2, MKL's AVX2 branch on Intel CPUs (non-Intel
# ones get MKL's AUTO branch). Left to themselves, ATen picks AVX-512 kernels where the CPU has them and MKL its own
# GEMM code path, and either changes the demo's numbers (docs/RESULTS.md, "Reproducibility").
CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


@dataclass
class ModelResult:
    """One row of the demo's table."""

    name: str
    bn: str
    train_ce: float
    train_fer: float
    dev_ce: float
    dev_fer: float
    dev_wer: float
    test_wer: float
    test_wer_line: str  # Kaldi's `%WER … [ errors / words, ins, del, sub ]` (`[PARTIAL]` when some went undecoded)
    best_update: int  # the update of final.pt (best dev CE)
    dev_ce_by_epoch: list[float] = field(default_factory=list)  # dev CE after each epoch (metrics.jsonl)


@dataclass
class DemoResult:
    """What `run_demo` produced: the table's rows and where everything is."""

    out_dir: Path
    seed: int
    size: str
    budget: DemoBudget
    models: list[ModelResult]
    curves: Path
    results: Path
    wer_bootstrap: dict[str, "Bootstrap"] = field(default_factory=dict)  # dev/test: Set1 baseline, Set2 BN
    cpu_kernels: str = ""  # what torch ran on (pinned_cpu_kernels)
    seconds: dict[str, float] = field(default_factory=dict)  # this run's wall-clock time per stage (~0 if reused)
    reused: list[str] = field(default_factory=list)  # stages whose outputs were already complete

    def conclusions(self) -> list[str]:
        """What this run shows beyond noise (see `conclusions`)."""
        return conclusions(self.models[0], self.models[1], self.wer_bootstrap)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (results.json)."""
        return {
            "seed": self.seed,
            "size": self.size,
            "budget": asdict(self.budget),
            "models": [asdict(m) for m in self.models],
            "wer_bootstrap": {split: asdict(b) for split, b in self.wer_bootstrap.items()},
            "conclusions": self.conclusions(),
            "cpu_kernels": self.cpu_kernels,
            "curves": str(self.curves),
            "seconds": self.seconds,
            "reused": self.reused,
        }


def conclusions(baseline: ModelResult, bn: ModelResult, wer: Mapping[str, "Bootstrap"]) -> list[str]:
    """The demo's findings, each stated as far as the numbers carry it: the dev CE of every epoch, and per split a
    WER difference only where the bootstrap (Set1 the baseline, Set2 BN) finds it in at least `LEVEL` of the
    replications; otherwise the difference is called noise, with P(BN better)."""
    pairs = list(zip(baseline.dev_ce_by_epoch, bn.dev_ce_by_epoch))
    lower = sum(b < a for a, b in pairs)
    final = f"best {baseline.dev_ce:.3f} vs {bn.dev_ce:.3f}"
    if pairs and lower == len(pairs):
        lines = [f"BN lowers the dev CE at every epoch ({lower} of {len(pairs)}; {final})"]
    elif pairs and lower == 0:
        lines = [f"BN raises the dev CE at every epoch ({len(pairs)} of {len(pairs)}; {final})"]
    else:
        lines = [f"BN's dev CE is lower at {lower} of {len(pairs)} epochs ({final})"]
    for split, boot in wer.items():
        a, b = (f"{m.dev_wer if split == 'dev' else m.test_wer:.1f} %" for m in (baseline, bn))
        odds = f"P(BN better) = {boot.p_improve:.2f} over {boot.utterances} utterances"
        if boot.p_improve is not None and boot.p_improve >= LEVEL:
            lines.append(f"{split} WER: BN lower ({a} vs {b}), {odds}")
        elif boot.p_worse is not None and boot.p_worse >= LEVEL:
            lines.append(f"{split} WER: baseline lower ({a} vs {b}), {odds}")
        else:
            lines.append(f"{split} WER: difference within noise ({a} vs {b}), {odds}")
    return lines


def cpu_kernel_env() -> dict[str, str]:
    """The environment that pins torch's CPU kernels: `CPU_KERNELS` on x86-64 (nothing elsewhere), where settings
    already in the environment win (recipes/demo/run.sh exports the same)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: os.environ.get(name, value) for name, value in CPU_KERNELS.items()}


@contextlib.contextmanager
def pinned_cpu_kernels() -> Iterator[str]:
    """Ask torch for the CPU kernels of `cpu_kernel_env` and yield what it uses, e.g. "AVX2, MKL_CBWR=AVX2, torch
    2.13.0+cpu"; the environment is restored on exit. Takes effect only before the process's first torch op (a
    fresh `asr-bn demo` process): torch keeps the kernels it chose then."""
    saved = dict(os.environ)
    os.environ.update(cpu_kernel_env())
    try:
        import torch

        mkl = f", MKL_CBWR={os.environ['MKL_CBWR']}" if "MKL_CBWR" in os.environ else ""
        yield f"{torch.backends.cpu.get_cpu_capability()}{mkl}, torch {torch.__version__}"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: Size = "full",
    device: str = "cpu",
    on_stage: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run (or finish) the demo in `out_dir` and return its table; `on_stage` is told each stage as it starts.

    `size` "full" is the README's demo (≤ 10 minutes on 2 CPU cores); "small" a tiny corpus and model for tests.
    """
    if size not in BUDGETS:
        raise UsageError(f"size={size!r}: choose one of {', '.join(BUDGETS)}")
    out = Path(out_dir).resolve()
    budget = BUDGETS[size]
    say = on_stage or (lambda _stage: None)
    timer = _Timer()
    with pinned_cpu_kernels() as kernels, OutputLock(out):
        _check_settings(out, seed, size)
        with timer("synth", say):
            corpus = _synth(out / "corpus", seed, size, budget.num_speakers, timer)
        with timer("prep", say):
            prep = _prep(corpus, out / "prep", timer)
        models = []
        for name, bn in MODELS:
            with timer(f"train {name}", say):
                exp = _train(prep, out / "exp" / name, bn, budget, seed, device, timer)
            models.append((name, bn, exp))
        with timer("mkgraph", say):
            graph = _graph(corpus, out / "graph", timer)
        rows, decoded = [], []
        for name, bn, exp in models:
            with timer(f"forward {name}", say):
                scores = _forward(exp, prep, device, timer)
            with timer(f"decode {name}", say):
                wers = {split: _decode(graph, corpus, exp, prep, split, timer) for split in ("dev", "test")}
            rows.append(ModelResult(
                name=name, bn=bn, train_ce=scores["train"]["ce"], train_fer=scores["train"]["fer"],
                dev_ce=scores["dev"]["ce"], dev_fer=scores["dev"]["fer"], dev_wer=wers["dev"].counts.wer,
                test_wer=wers["test"].counts.wer, test_wer_line=wers["test"].wer_line(),
                best_update=scores["best_update"], dev_ce_by_epoch=_dev_ce_by_epoch(exp),
            ))  # fmt: skip
            decoded.append(wers)
        with timer("plot", say):
            from asr_bn.train import plot_runs

            curves = plot_runs([exp for _, _, exp in models], out / "learning_curves.png",
                               [name for name, _, _ in models])  # fmt: skip
        from asr_bn.score import bootstrap_wer

        boot = {
            split: bootstrap_wer([w[split].per_utt() for w in decoded], REPLICATIONS, seed) for split in ("dev", "test")
        }
        result = DemoResult(out, seed, size, budget, rows, curves, out / "results.json", boot, kernels, timer.seconds,
                            timer.reused)  # fmt: skip
        write_text(result.results, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


# -- bookkeeping --------------------------------------------------------------------------------------------------


class _Timer:
    """Wall-clock seconds per stage, and which stages found their outputs complete."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []
        self._stage = ""

    def __call__(self, stage: str, say: Callable[[str], None]) -> "_Timer":
        self._stage = stage
        say(stage)
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._stage] = round(self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._start, 2)

    def reuse(self, what: str) -> None:
        """Note that `what` (a stage's output) was complete and reused."""
        self.reused.append(what)


def _check_settings(out: Path, seed: int, size: str) -> None:
    """Record seed and size in OUT_DIR/demo.json; a different seed or size than an earlier run's is refused, so
    stages never reuse outputs made with other settings."""
    path = out / "demo.json"
    wanted = {"seed": seed, "size": size}
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            saved = None
        if saved != wanted:
            raise UsageError(
                f"{out} holds a demo run with {saved} (see {path}); use another --out for seed {seed}, size {size}, "
                "or remove that directory"
            )
        return
    write_text(path, json.dumps(wanted) + "\n")


def _stamp(path: Path) -> list[int]:
    """Size and modification time of a file: a changed `final.pt` invalidates what was computed from it."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _done(marker: Path, stamp: Any) -> dict[str, Any] | None:
    """The contents of a stage's completion marker when it exists and was made from `stamp`, else None."""
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("stamp") == stamp else None


# -- stages -------------------------------------------------------------------------------------------------------


def _synth(root: Path, seed: int, size: Size, num_speakers: int | None, timer: _Timer) -> "CorpusPaths":
    """The synthetic corpus; corpus.json (written last) with this seed and size marks a complete one."""
    from asr_bn.synth import SPLITS as CORPUS_SPLITS
    from asr_bn.synth import CorpusPaths, synthesize_corpus

    try:
        saved = json.loads((root / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    if saved.get("seed") == seed and saved.get("size") == size:
        timer.reuse("synth")
        return CorpusPaths(root=root, data={s: root / "data" / s for s in CORPUS_SPLITS}, lang=root / "lang",
                           ali={s: root / "exp" / f"ali_{s}" for s in ("train", "dev")}, stats=saved["stats"])
    return synthesize_corpus(root, seed=seed, size=size, num_speakers=num_speakers)


def _prep(corpus: "CorpusPaths", out: Path, timer: _Timer) -> dict[str, Path]:
    """Features of the three splits (40 fbank + Δ + ΔΔ, speaker CMVN); train and dev get the alignments' targets."""
    from asr_bn.prep import prepare_kaldi, wsj_pipeline

    pipeline = wsj_pipeline()  # the paper's features: 40 log-mel fbank at 16 kHz, Δ + ΔΔ, per-speaker CMVN
    dirs = {}
    for split in SPLITS:
        result = prepare_kaldi(corpus.data[split], out / split, pipeline, ali_dir=corpus.ali.get(split))
        if result.already_done:
            timer.reuse(f"prep {split}")
        dirs[split] = result.out_dir
    return dirs


def _train(
    prep: dict[str, Path], exp: Path, bn: str, budget: DemoBudget, seed: int, device: str, timer: _Timer
) -> Path:
    """Train one model; a finished run is reused, an interrupted one continues from its checkpoint."""
    from asr_bn.train import TrainConfig, TrainState, is_finished, load_checkpoint, train

    cfg = TrainConfig(
        data=str(prep["train"]), dev=str(prep["dev"]), exp_dir=str(exp), layers=budget.layers, units=budget.units,
        bn=bn, optimizer=budget.optimizer, lr=budget.lr, momentum=budget.momentum, schedule="constant",
        epochs=budget.epochs, patience=0, batch_size=budget.batch_size, max_train_frames=None,
        log_every=budget.log_every, device=device, num_workers=0, cache=True, seed=seed,
    )  # fmt: skip
    checkpoint = exp / "checkpoint.pt"
    resume = checkpoint.exists()
    if resume and (exp / "final.pt").exists() and is_finished(cfg, TrainState(**load_checkpoint(checkpoint)["state"])):
        timer.reuse(f"train {exp.name}")
        return exp
    cfg, state = train(cfg, resume=resume)
    if not is_finished(cfg, state):  # SIGINT / SIGTERM: train saved a checkpoint and returned
        raise AsrBnError(f"training of {exp} stopped by a signal at update {state.update}; run the same "
                         "`asr-bn demo` again to continue from its checkpoint")
    return exp


def _forward(exp: Path, prep: dict[str, Path], device: str, timer: _Timer) -> dict[str, Any]:
    """Frame CE/FER of the best model on train and dev (exp/scores.json) and its log-likelihoods of dev and test."""
    from asr_bn.forward import ForwardConfig, forward, score_frames
    from asr_bn.train import MODEL_FORMAT, load_checkpoint

    marker = exp / "scores.json"
    stamp = _stamp(exp / "final.pt")
    if (saved := _done(marker, stamp)) is not None:
        timer.reuse(f"forward {exp.name}")
        return saved
    config = ForwardConfig(device=device)
    best_update = int(load_checkpoint(exp / "final.pt", MODEL_FORMAT)["update"])
    scores: dict[str, Any] = {"stamp": stamp, "best_update": best_update}
    for split in ("train", "dev"):
        frames = score_frames(exp, prep[split], config)
        scores[split] = {"ce": frames.ce, "fer": frames.fer, "frames": frames.frames}
    for split in ("dev", "test"):
        forward(exp, prep[split], f"ark,scp:{exp / f'loglikes_{split}.ark'},{exp / f'loglikes_{split}.scp'}", config)
    write_text(marker, json.dumps(scores, indent=2) + "\n")
    return scores


def _dev_ce_by_epoch(exp: Path) -> list[float]:
    """The dev CE of each epoch's end (the last evaluation of each epoch in metrics.jsonl)."""
    from asr_bn.train import read_metrics

    return list({row["epoch"]: row["ce"] for row in read_metrics(exp) if row.get("kind") == "dev"}.values())


def _graph(corpus: "CorpusPaths", out: Path, timer: _Timer) -> Path:
    """HCLG of a word loop over the corpus lexicon with the synth's monophone final.mdl (built once)."""
    from asr_bn.mkgraph import build_graph

    if (out / "disambig_tid.int").exists():  # build_graph's last file
        timer.reuse("mkgraph")
        return out
    return build_graph(corpus.lang, corpus.ali["train"], out, "loop")


def _decode(
    graph: Path, corpus: "CorpusPaths", exp: Path, prep: dict[str, Path], split: str, timer: _Timer
) -> "WerResult":
    """Decode a split's log-likelihoods and score them against its transcripts (a WerResult)."""
    from asr_bn.decode import decode
    from asr_bn.score import score_hyps

    out = exp / f"decode_{split}"
    loglikes = exp / f"loglikes_{split}.scp"
    stamp = _stamp(exp / f"loglikes_{split}.ark")
    if _done(out / "done.json", stamp) is None:
        decode(graph, corpus.ali["train"], loglikes, out)
        write_text(out / "done.json", json.dumps({"stamp": stamp}) + "\n")
    else:
        timer.reuse(f"decode {exp.name} {split}")
    _, best = score_hyps(prep[split], [out / "text"])
    return best
