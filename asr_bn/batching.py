"""Batches of utterances of similar length, and the data side of training: reading, padding, filtering.

`BucketingSampler` knows only utterance lengths: each epoch it shuffles the utterances from a seed, sorts them by
length inside large random pools, cuts each pool into batches (a fixed number of utterances, or a padded-frame
budget B × T_max), and shuffles the batch order. Sorting inside pools keeps padding small (≈1 % on WSJ-like
lengths at 24 utterances, see `bench/batching.py`) while every epoch still sees new batches.

`UtteranceDataset` reads a prepared data dir (docs/ARCHITECTURE.md) through its saved `FeaturePipeline` (CMVN and
deltas applied on the fly, in DataLoader workers), joins the pdf targets (and, for training toward a teacher, the
soft targets of its post.scp) and returns whole padded `Batch`es.

>>> sampler = BucketingSampler(lengths, batch_size=24, seed=0)
>>> loader = make_loader(dataset, sampler, num_workers=2, pin_memory=True)
>>> for batch in loader: ...   # batch.feats (B, T_max, D), batch.targets (B, T_max), batch.lengths (B,)
"""

from __future__ import annotations

import atexit
import multiprocessing.util  # its exit handler, which `_kill_workers_at_exit` must precede
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import read_matrix, read_table, require_dir
from asr_bn.report import Report

if TYPE_CHECKING:
    from asr_bn.alignments.posteriors import Posterior

__all__ = [
    "BucketingSampler",
    "Batch",
    "UtteranceDataset",
    "filter_by_length",
    "prepared_dir",
    "read_targets",
    "make_loader",
    "padding_waste",
    "PAD_TARGET",
]

PAD_TARGET = -100
"""Target value of padded frames; the same as `torch.nn.functional.cross_entropy`'s default `ignore_index`."""


class BucketingSampler:
    """Length-bucketed batches of utterance indices, reproducible per (seed, epoch), resumable, distributed-aware.

    :param lengths: number of frames of every utterance (index i of the dataset has lengths[i] frames).
    :param batch_size: utterances per batch (the paper: 24); exclusive with `max_frames`.
    :param max_frames: padded-frame budget per batch, B × T_max ≤ max_frames (a single longer utterance forms its
        own batch); exclusive with `batch_size`.
    :param seed: with the epoch, fixes the batches; the same on every rank.
    :param shuffle: False gives sorted, epoch-independent batches (for evaluation).
    :param drop_last: drop the epoch's last batch when it has fewer than `batch_size` utterances.
    :param pool_batches: batches per sorted pool; larger pools pad less but mix lengths less across an epoch.
    :param rank, world_size: under DistributedDataParallel every *global* batch is split between the ranks
        (rank r gets utterances r, r+N, … of the length-sorted batch), so each rank gets a disjoint list of
        batches, all ranks the same number, and `batch_size` / `max_frames` mean the same with 1 or N GPUs.

    `position` is the number of batches of the current epoch already consumed; iteration starts there. The
    trainer advances it after each update (a DataLoader prefetches, so the sampler cannot know) and saves
    `state_dict()` in its checkpoint.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int | None = 24,
        max_frames: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        pool_batches: int = 100,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if (batch_size is None) == (max_frames is None):
            raise UsageError("give exactly one of --batch-size and --max-frames")
        which = f"--batch-size {batch_size}" if batch_size is not None else f"--max-frames {max_frames}"
        if (batch_size if batch_size is not None else max_frames) < 1:  # before the process count is compared
            raise UsageError(f"{which}: must be at least 1")
        if batch_size is not None and batch_size < world_size:
            raise UsageError(f"--batch-size {batch_size} is smaller than the number of processes {world_size}")
        if len(self.lengths) < world_size:
            raise AsrBnError(f"{len(self.lengths)} utterances cannot be shared by {world_size} processes")
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is outside 0..{world_size - 1}")
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pool_batches = pool_batches
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields, from its first batch."""
        if epoch != self.epoch:
            self.position = 0
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """All batches of the current epoch (utterance indices, before the split between ranks)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._make_batches())
        return self._cache[1]

    def batch_num_frames(self, k: int) -> int:
        """Unpadded frames of global batch k of this epoch (all ranks): the loss normaliser under DDP."""
        return int(self.lengths[self.global_batches()[k]].sum())

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.position :]:
            yield batch[self.rank :: self.world_size].tolist()

    def state_dict(self) -> dict:
        """Where this sampler stands (epoch, consumed batches) plus what fixes its batches, for a checkpoint."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_utts": len(self.lengths),
            "total_frames": int(self.lengths.sum()),
            "batch_size": self.batch_size,
            "max_frames": self.max_frames,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state_dict()` left off; refuse a state made for other data or batch settings."""
        mine = self.state_dict()
        for key in ("seed", "num_utts", "total_frames", "batch_size", "max_frames", "world_size"):
            if state.get(key) != mine[key]:
                raise UsageError(
                    f"cannot resume the sampler: {key} was {state.get(key)} and is now {mine[key]} "
                    "(resume with the same data, filter, batch settings and number of processes)"
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

    # -- how an epoch's batches are made -------------------------------------------------------------------

    def _make_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        if self.shuffle:
            order = rng.permutation(n)
            per_batch = self.batch_size or max(1, self.max_frames // max(1, int(np.median(self.lengths))))
            pool = self.pool_batches * per_batch  # utterances per sorted pool
        else:
            order, pool = np.arange(n), n
        batches: list[np.ndarray] = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(self._cut(chunk))
        if self.drop_last and self.batch_size is not None and len(batches[-1]) < self.batch_size and len(batches) > 1:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _cut(self, sorted_idx: np.ndarray) -> list[np.ndarray]:
        """Cut length-sorted indices into batches; a tail too small to give every rank an utterance joins the
        batch before it."""
        if self.batch_size is not None:
            cuts = list(range(self.batch_size, len(sorted_idx), self.batch_size))
        else:
            cuts, count = [], 0
            for i, length in enumerate(self.lengths[sorted_idx]):
                if count >= self.world_size and (count + 1) * length > self.max_frames:
                    cuts.append(i)
                    count = 0
                count += 1
        batches = np.split(sorted_idx, cuts)
        if len(batches) > 1 and len(batches[-1]) < self.world_size:
            batches[-2:] = [np.concatenate(batches[-2:])]
        return batches


def padding_waste(lengths: np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Share of padded frames among all frames of the padded batches: 1 − Σ len / Σ B·T_max."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - real / padded


# -- the data side: a prepared data dir read through its FeaturePipeline ------------------------------------------


@dataclass
class Batch:
    """Padded utterances: feats (B, T_max, D) float32, targets (B, T_max) int64 with PAD_TARGET on padding,
    lengths (B,) int64. `error` carries a data error out of a DataLoader worker as one line (see `check`).
    Soft targets, when the dataset reads them: soft_pdfs (B, T_max, K) int64 and soft_weights (B, T_max, K)
    float32, weight 0 on padding."""

    utts: list[str]
    feats: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor
    error: str | None = None
    soft_pdfs: torch.Tensor | None = None
    soft_weights: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        """Real (unpadded) frames."""
        return int(self.lengths.sum())

    @property
    def padded_frames(self) -> int:
        """B × T_max: what the batch costs in memory and time."""
        return self.feats.shape[0] * self.feats.shape[1]

    def out_of_memory(self, error: BaseException, device: torch.device, fix: str) -> AsrBnError | None:
        """`error` as one line naming this batch's padded size and `fix`, if it is an out-of-memory failure
        (torch.cuda.OutOfMemoryError, or a RuntimeError saying "out of memory" on the CPU); else None."""
        if not (isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)):
            return None
        b, t = self.feats.shape[:2]
        return AsrBnError(
            f"out of memory on {device} for a batch of {b} utterances x {t} frames = {self.padded_frames} padded "
            f"frames (first utterance {self.utts[0]}); {fix}"
        )

    def check(self) -> "Batch":
        """Raise the worker's data error in this process as the one-line AsrBnError it was."""
        if self.error is not None:
            raise AsrBnError(self.error)
        return self

    def _tensors(self, move: Callable[[torch.Tensor], torch.Tensor], lengths: bool) -> "Batch":
        """A copy with every tensor passed through `move` (the lengths only when `lengths`)."""
        soft = [None if t is None else move(t) for t in (self.soft_pdfs, self.soft_weights)]
        return Batch(self.utts, move(self.feats), move(self.targets), move(self.lengths) if lengths else self.lengths,
                     self.error, *soft)

    def pin_memory(self) -> "Batch":
        """Page-locked copy, so `to(device, non_blocking=True)` overlaps the copy with compute (DataLoader hook)."""
        return self._tensors(torch.Tensor.pin_memory, lengths=True)

    def to(self, device: torch.device | str) -> "Batch":
        """Features and targets on `device` (lengths stay on the CPU, where packing wants them)."""
        return self._tensors(lambda t: t.to(device, non_blocking=True), lengths=False)


_MISSING_FIX = {  # what to do when a file of a prepared dir is missing
    "pdf.scp": "it holds the training targets, which `asr-bn prep` writes when given the alignments: "
    "`asr-bn prep kaldi DATA OUT --ali-dir ALI_DIR` (with --pdf-ids for pdf-id labels)",
    "post.scp": "it holds the soft targets that --soft-weight trains toward: a teacher's posteriors, "
    "`asr-bn prep post DIR LOGPOST.scp …` of `asr-bn forward … --posteriors` outputs",
}


def prepared_dir(path: str | Path, role: str = "prepared dir") -> Path:
    """A prepared dir of `asr-bn prep` given as input (`role` names it: train, dev, DATA_DIR …); a missing path or
    a file is a UsageError saying which."""
    return require_dir(path, role, "a prepared dir of `asr-bn prep`: feats.scp, pipeline.json, …")


def _prepared_table(path: Path) -> dict[str, str]:
    """A table of a prepared data dir (feats.scp, pdf.scp, utt2num_frames, utt2spk) as key → value."""
    rows = read_table(path, _MISSING_FIX.get(path.name, "a prepared data dir from `asr-bn prep` has it"))
    return {key: row.rest for key, row in rows.items()}


class UtteranceDataset(torch.utils.data.Dataset):
    """The utterances of a prepared data dir with their pdf targets, transformed by the dir's FeaturePipeline.

    `utts` (default: every utterance of feats.scp that has targets) fixes the order: index i is utts[i].
    With `targets=False` (decoding a set without alignments) pdf.scp is not read, the default is every utterance
    of feats.scp, and the targets are all PAD_TARGET. With `soft=True` the batches also carry each frame's soft
    targets from the dir's post.scp (`asr-bn prep post`: a teacher's posteriors). `delta_order` replaces the
    pipeline's Δ orders (the fbank that `asr-bn gmm fmllr-feats --append-fbank` pastes has none).
    `dataset[indices]` through `__getitems__` returns one padded `Batch`, so a DataLoader worker does the
    reading, CMVN, deltas and padding. With `cache=True` the transformed features are loaded once into RAM
    (for small corpora; use num_workers=0 then).
    """

    def __init__(
        self,
        data_dir: str | Path,
        num_pdfs: int,
        utts: Sequence[str] | None = None,
        cache: bool = False,
        targets: bool = True,
        delta_order: int | None = None,
        soft: bool = False,
    ) -> None:
        import kaldiio

        from asr_bn.features import FeaturePipeline

        self.dir = prepared_dir(data_dir)
        self.num_pdfs = num_pdfs
        self.pipeline = FeaturePipeline.load(self.dir / "pipeline.json")
        if delta_order is not None:
            self.pipeline = replace(self.pipeline, delta_order=delta_order)
        self.feats_scp = _prepared_table(self.dir / "feats.scp")
        pdf_scp = _prepared_table(self.dir / "pdf.scp") if targets else {}
        num_frames = _prepared_table(self.dir / "utt2num_frames")
        if utts is not None:
            self.utts = list(utts)
        else:
            self.utts = [u for u in self.feats_scp if not targets or u in pdf_scp]
        try:
            self.lengths = np.array([int(num_frames[u]) for u in self.utts], dtype=np.int64)
        except (KeyError, ValueError) as e:
            where = self.dir / "utt2num_frames"
            raise AsrBnError(f"{where}: no valid frame count for {e} (re-run `asr-bn prep`)") from e
        self.targets = read_targets(self.dir, self.utts) if targets else None
        if self.targets is not None:
            self._check_targets()
        self.soft = self._soft_targets() if soft else None
        self._cmvn_key = self._cmvn_keys()
        cmvn_scp = self.dir / "cmvn.scp"
        # utterance CMVN may come without cmvn.scp: the pipeline then computes the stats from the utterance itself
        self._cmvn = kaldiio.load_scp(str(cmvn_scp)) if self.pipeline.cmvn != "none" and cmvn_scp.exists() else None
        if self._cmvn is None and self.pipeline.cmvn in ("speaker", "global"):
            raise AsrBnError(
                f"{cmvn_scp} is missing but pipeline.json asks for {self.pipeline.cmvn} CMVN (re-run `asr-bn prep`)"
            )
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if cache:
            from asr_bn.progress import track

            self._cache = [self._load(i) for i in track(range(len(self.utts)), f"caching {self.dir.name}")]

    def _check_targets(self) -> None:
        """Every utterance's targets: as many as its frames, each a pdf-id of the model (checked once, up front)."""
        where = self.dir / "pdf.scp"
        for utt, n in zip(self.utts, self.lengths):
            labels = self.targets[utt]
            if len(labels) != n:
                raise AsrBnError(
                    f"{where}: utterance {utt} has {len(labels)} targets for {n} frames "
                    "(re-run the alignment step of `asr-bn prep`)"
                )
            if len(labels) and (labels.max() >= self.num_pdfs or labels.min() < 0):
                bad = int(labels.max() if labels.max() >= self.num_pdfs else labels.min())
                raise AsrBnError(
                    f"{where}: utterance {utt} has pdf-id {bad}, outside the model's {self.num_pdfs} outputs "
                    "(the alignments come from another tree; re-align, or train a new model with --num-pdfs)"
                )

    def _soft_targets(self) -> dict[str, Posterior]:
        """Every utterance's soft targets from post.scp: as many frames as its features, pdf-ids of the model,
        weights in [0, 1] summing to at most 1 per frame (checked once, up front)."""
        from asr_bn.alignments.posteriors import read_posterior_table

        where = self.dir / "post.scp"
        soft = read_posterior_table(where, self.utts)
        for utt, n in zip(self.utts, self.lengths):
            pdfs, weights = soft[utt]
            if len(pdfs) != n:
                raise AsrBnError(f"{where}: utterance {utt} has posteriors for {len(pdfs)} frames, its features "
                                 f"{n} (run `asr-bn prep post` on this dir again)")
            if pdfs.size and (pdfs.min() < 0 or pdfs.max() >= self.num_pdfs):
                raise AsrBnError(f"{where}: utterance {utt} has posteriors of pdf-ids outside the model's "
                                 f"{self.num_pdfs} outputs (a teacher of another tree?)")
            sane = np.isfinite(weights).all() and weights.min(initial=0) >= 0
            if not (sane and weights.sum(1).max(initial=0) <= 1.001):
                raise AsrBnError(f"{where}: utterance {utt} has weights that are not posteriors (negative, NaN, or "
                                 "summing to more than 1 in a frame)")
        return soft

    def _cmvn_keys(self) -> dict[str, str]:
        mode = self.pipeline.cmvn
        if mode == "speaker":
            utt2spk = _prepared_table(self.dir / "utt2spk")
            missing = [u for u in self.utts if u not in utt2spk]
            if missing:
                raise AsrBnError(f"{self.dir / 'utt2spk'} has no speaker for {missing[0]} ({len(missing)} utterances)")
            return {u: utt2spk[u] for u in self.utts}
        if mode == "global":
            return {u: "global" for u in self.utts}
        return {u: u for u in self.utts}

    def __len__(self) -> int:
        return len(self.utts)

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed features (T, D) and int64 targets (T,) of utterance i, checked."""
        utt = self.utts[i]
        raw = read_matrix(self.feats_scp[utt], self.dir / "feats.scp", utt)
        if not np.isfinite(raw).all():
            raise AsrBnError(
                f"{self.dir / 'feats.scp'}: utterance {utt} has NaN/Inf features "
                "(re-extract it with `asr-bn prep`, or remove it from the data dir)"
            )
        stats = None
        if self._cmvn is not None:
            key = self._cmvn_key[utt]
            try:
                stats = self._cmvn[key]
            except KeyError as e:
                where = self.dir / "cmvn.scp"
                raise AsrBnError(f"{where} has no stats for {key} (utterance {utt}); re-run `asr-bn prep`") from e
        feats = self.pipeline.transform(torch.from_numpy(np.array(raw, dtype=np.float32)), stats)  # a writable copy
        if not torch.isfinite(feats).all():
            raise AsrBnError(
                f"{self.dir / 'cmvn.scp'}: CMVN stats of {self._cmvn_key[utt]} turn utterance {utt} into NaN/Inf "
                "(re-run `asr-bn prep`)"
            )
        if self.targets is None:
            return feats, torch.full((len(feats),), PAD_TARGET, dtype=torch.int64)
        targets = self.targets[utt]
        if len(targets) != len(feats):
            raise AsrBnError(
                f"{self.dir / 'feats.scp'}: utterance {utt} has {len(feats)} frames, utt2num_frames and pdf.scp say "
                f"{len(targets)} (re-run `asr-bn prep`)"
            )
        return feats, torch.from_numpy(targets.astype(np.int64))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cache[i] if self._cache is not None else self._load(i)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        try:
            items = [self[i] for i in indices]
        except AsrBnError as e:
            empty = torch.zeros(0)
            return Batch([], empty, empty, empty, error=str(e))
        lengths = torch.tensor([len(t) for _, t in items], dtype=torch.int64)
        feats = torch.nn.utils.rnn.pad_sequence([f for f, _ in items], batch_first=True)  # (B, T_max, D)
        targets = torch.nn.utils.rnn.pad_sequence([t for _, t in items], batch_first=True, padding_value=PAD_TARGET)
        utts = [self.utts[i] for i in indices]
        if self.soft is None:
            return Batch(utts, feats, targets, lengths)
        posts = [self.soft[u] for u in utts]
        k = max(p.shape[1] for p, _ in posts)
        pdfs, weights = torch.zeros(*targets.shape, k, dtype=torch.int64), torch.zeros(*targets.shape, k)
        for b, (p, w) in enumerate(posts):
            pdfs[b, : len(p), : p.shape[1]] = torch.from_numpy(p)
            weights[b, : len(w), : w.shape[1]] = torch.from_numpy(w)
        return Batch(utts, feats, targets, lengths, soft_pdfs=pdfs, soft_weights=weights)


def read_targets(data_dir: str | Path, utts: Sequence[str]) -> dict[str, np.ndarray]:
    """The int32 pdf-id targets of `utts` from a prepared dir's pdf.scp, each archive it points to read whole
    (Kaldi int-vector archives, through asr_bn.alignments; far faster than one seek per utterance)."""
    from asr_bn.alignments import read_alignments

    scp_path = Path(data_dir) / "pdf.scp"
    scp = _prepared_table(scp_path)
    missing = [u for u in utts if u not in scp]
    if missing:
        raise AsrBnError(f"{scp_path} has no targets for {missing[0]} ({len(missing)} utterances); re-run prep")
    wanted = set(utts)
    arks = dict.fromkeys(scp[u].rsplit(":", 1)[0] for u in utts)  # in order, each once
    targets = {}
    for ark in arks:
        for utt, labels, _ in read_alignments(ark):
            if utt in wanted:
                targets[utt] = labels
    lost = [u for u in utts if u not in targets]
    if lost:
        raise AsrBnError(f"{scp_path}: {lost[0]} is not in the archive it points to ({scp[lost[0]]}); re-run prep")
    return targets


def filter_by_length(
    data_dir: str | Path, max_frames: int | None, report: Report, role: str = "train", soft: bool = False
) -> tuple[list[str], np.ndarray]:
    """Utterances of a prepared dir that have targets (with `soft`, also soft targets) and at most `max_frames`
    frames (None: no limit).

    Every dropped utterance is named in `report` under a reason starting with `role` (no targets; no soft targets;
    longer than --max-train-frames); an empty result is an AsrBnError that names the filter.
    """
    data_dir = prepared_dir(data_dir, f"{role} dir")
    feats = _prepared_table(data_dir / "feats.scp")
    pdfs = _prepared_table(data_dir / "pdf.scp")
    posts = _prepared_table(data_dir / "post.scp") if soft else pdfs
    num_frames = _prepared_table(data_dir / "utt2num_frames")
    kept, lengths = [], []
    skipped_before = {k: len(v) for k, v in report.skipped.items()}
    for utt in feats:
        if utt not in pdfs:
            report.skip(utt, f"{role}: no targets in pdf.scp")
        elif utt not in posts:
            report.skip(utt, f"{role}: no soft targets in post.scp")
        elif utt not in num_frames:
            report.skip(utt, f"{role}: no frame count in utt2num_frames")
        elif max_frames is not None and int(num_frames[utt]) > max_frames:
            report.skip(utt, f"{role}: longer than --max-train-frames {max_frames}")
        else:
            kept.append(utt)
            lengths.append(int(num_frames[utt]))
    report.counts.update(
        {f"{role} utterances": len(feats), f"{role} kept": len(kept), f"{role} frames": int(sum(lengths))}
    )
    if not kept:
        new = {k: len(v) - skipped_before.get(k, 0) for k, v in report.skipped.items()}
        reasons = ", ".join(f"{n} {k.split(': ', 1)[1]}" for k, n in new.items() if n) or "feats.scp is empty"
        raise AsrBnError(
            f"{data_dir}: no utterance is left to train on ({reasons}); raise --max-train-frames or fix the data dir"
        )
    return kept, np.array(lengths, dtype=np.int64)


def _whole_batch(batch: Batch) -> Batch:
    """DataLoader collate for a dataset whose `__getitems__` already returns the padded batch."""
    return batch


def _quiet_worker(_: int) -> None:
    """Workers: one thread each, signals go to the main process only (it saves a checkpoint on SIGTERM), and a
    worker dies with it, also when it is SIGKILLed (Linux's parent-death signal): an orphaned worker whose queue
    is full blocks at exit forever, holding the run's stdout open."""
    import os
    import signal
    import sys

    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # the main process died before the line above
            os._exit(1)


def _kill_workers_at_exit() -> None:
    """At interpreter exit multiprocessing ends daemonic children with SIGTERM and then joins them; workers ignore
    SIGTERM (see `_quiet_worker`), so a loader still alive then (e.g. held by a traceback) would block exit forever.
    Registered after multiprocessing's own exit handler, this runs first and kills them. torch's SIGCHLD handler
    raises when a worker dies; run between two kills (a loaded machine), it ended this loop with a worker left alive
    and the process hung at exit, so the signal is left to its default first."""
    import signal

    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


def make_loader(
    dataset: UtteranceDataset, sampler: BucketingSampler, num_workers: int = 2, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding padded `Batch`es in the sampler's order, loaded by `num_workers` processes.

    Workers persist across epochs (the sampler runs in this process, so `set_epoch` still takes effect). The loader
    has its own generator, so iterating it never touches the global torch RNG (resume stays bitwise exact).
    """
    if num_workers:  # once, and after multiprocessing.util's own handler (imported above), so it runs first
        atexit.unregister(_kill_workers_at_exit)
        atexit.register(_kill_workers_at_exit)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_whole_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_quiet_worker if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
