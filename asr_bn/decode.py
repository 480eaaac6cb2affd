"""Decoding with a Kaldi HCLG graph and kaldi-decoder (no Kaldi binaries).

`decode` reads a graph dir (HCLG.fst, words.txt, as Kaldi's utils/mkgraph.sh writes it), the alignment model
(final.mdl, for transition-id → pdf-id) and log-likelihood matrices (utterance → (T, num_pdfs), `asr-bn forward`'s
output) and writes hypotheses in Kaldi `text` format, like `latgen-faster-mapped` + `lattice-best-path`. With
lattices it also writes Kaldi-readable state-level lattices and, for a range of LM weights, one hypothesis file
per weight (`hyp_LMWT`, what Kaldi's score.sh scores).
"""

from __future__ import annotations

import atexit
import math
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np

from asr_bn.alignments import read_transition_model, transition_id_scores
from asr_bn.config import DecodeConfig
from asr_bn.errors import AsrBnError, UsageError, shown
from asr_bn.fst import FstArrays, decoder_fst, read_std_fst, relabel_input
from asr_bn.io import (
    KALDIIO_READ_ERRORS,
    OutputLock,
    TableRow,
    archive_problem,
    atomic_open,
    check_output_dir,
    error_detail,
    out_of_memory_reading,
    read_matrix,
    read_rows,
    read_table,
    require_dir,
    write_text,
)
from asr_bn.progress import progress_bar
from asr_bn.report import Report

if TYPE_CHECKING:
    from concurrent.futures import Future

    from asr_bn.kaldi_ext import kaldifst

__all__ = [
    "DecodeConfig", "Graph", "Hypothesis", "load_graph", "decode_matrix", "lattice_hypothesis", "decode",
    "write_decode", "read_loglikes", "loglike_table", "MeanLoglikes", "model_file",
]


# --------------------------------------------------------------------------------------------------------------
# Graph + model


@dataclass
class Graph:
    """A loaded decoding graph with what the decoder needs from the model: transition-id → pdf-id. With
    `pdf_labels` its input labels are pdf-id + 1 instead of transition-ids (`load_graph`)."""

    path: Path
    fst: "kaldifst.StdConstFst"
    words: dict[int, str]  # word id → word (words.txt)
    tid2pdf: np.ndarray  # (num_transition_ids + 1,) int; entry 0 unused (transition-ids are 1-based)
    num_pdfs: int
    model_path: Path
    pdf_labels: bool = False
    _decoders: dict = field(default_factory=dict, repr=False)

    def scores(self, loglikes: np.ndarray, scale: float) -> np.ndarray:
        """The decoder's (T, input labels) score matrix of (T, num_pdfs) log-likelihoods: the scaled matrix itself
        for pdf labels, gathered per transition-id otherwise."""
        if self.pdf_labels:
            return np.asarray(loglikes, dtype=np.float32) * np.float32(scale)
        return transition_id_scores(loglikes, self.tid2pdf, scale)

    def decoder(self, config: DecodeConfig):  # noqa: ANN201 - a kaldi_decoder decoder object
        """The (reused) kaldi-decoder object for these options: LatticeSimpleDecoder or FasterDecoder."""
        from asr_bn.kaldi_ext import kaldi_decoder

        key = (config.lattices, config.beam, config.max_active, config.lattice_beam)
        if key not in self._decoders:
            if config.lattices:
                opts = kaldi_decoder.LatticeSimpleDecoderConfig(beam=config.beam, lattice_beam=config.lattice_beam)
                self._decoders[key] = kaldi_decoder.LatticeSimpleDecoder(self.fst, opts)
            else:
                opts = kaldi_decoder.FasterDecoderOptions(beam=config.beam, max_active=config.max_active)
                self._decoders[key] = kaldi_decoder.FasterDecoder(self.fst, opts)
        return self._decoders[key]


def model_file(model: str | Path) -> Path:
    """The alignment model: final.mdl itself, or a directory holding it (a Kaldi exp dir)."""
    model = Path(model)
    path = model / "final.mdl" if model.is_dir() else model
    if not path.is_file():
        raise AsrBnError(
            f"{path}: no such alignment model (give the Kaldi final.mdl whose alignments trained the network, "
            "or its exp dir)"
        )
    return path


def _read_words(path: Path) -> dict[int, str]:
    from asr_bn.lang import read_symbol_table

    return {i: w for w, i in read_symbol_table(path).items()}


def _first_bad(fst: FstArrays, bad: np.ndarray) -> tuple[int, int]:
    """(arc index, its source state) of the first arc flagged in `bad`."""
    arc = int(np.flatnonzero(bad)[0])
    return arc, int(np.searchsorted(fst.first, arc, side="right")) - 1


def check_graph(fst_path: Path, fst: FstArrays, num_tids: int, words: dict[int, str], model_path: Path) -> None:
    """Refuse a graph the decoder would crash on, hang on or decode wrongly: a missing start state, an arc to a state
    that does not exist, a NaN or -inf weight (arc or final), an input label that is no transition-id of the model
    (disambiguation symbols included), an output label missing from words.txt. Vectorised over the arcs; one
    AsrBnError naming the graph, the arc and the fix."""
    arcs, n = fst.arcs, fst.num_states
    if n == 0 or not 0 <= fst.start < n:
        raise AsrBnError(f"{fst_path}: the graph has {n} states and start state {fst.start} (an empty or corrupt "
                         "graph: rebuild it)")
    bad = (arcs["nextstate"] < 0) | (arcs["nextstate"] >= n)
    if bad.any():
        arc, state = _first_bad(fst, bad)
        raise AsrBnError(f"{fst_path}: an arc from state {state} goes to state {arcs['nextstate'][arc]}, but the graph "
                         f"has {n} states (a corrupt graph: rebuild it)")
    # Tropical weights: a cost, or +inf for "no final weight" (arcs with +inf are dead but legal). NaN and -inf
    # make no sense and hang or crash the decoders.
    bad = np.isnan(arcs["weight"]) | (arcs["weight"] == -np.inf)
    if bad.any():
        arc, state = _first_bad(fst, bad)
        raise AsrBnError(f"{fst_path}: an arc from state {state} has weight {arcs['weight'][arc]} (a corrupt graph: "
                         "rebuild it)")
    bad_final = np.flatnonzero(np.isnan(fst.final) | (fst.final == -np.inf))
    if len(bad_final):
        state = int(bad_final[0])
        raise AsrBnError(f"{fst_path}: state {state} has final weight {fst.final[state]} (a corrupt graph: rebuild it)")
    bad = (arcs["ilabel"] < 0) | (arcs["ilabel"] > num_tids)
    if bad.any():
        arc, state = _first_bad(fst, bad)
        raise AsrBnError(
            f"{fst_path}: an arc from state {state} reads input label {arcs['ilabel'][arc]}, but {model_path} has "
            f"transition-ids 1..{num_tids} (a graph of another model, or with disambiguation symbols left in: "
            "rebuild it from this model with `asr-bn mkgraph` or Kaldi's utils/mkgraph.sh)"
        )
    top = max(words, default=0)
    known = np.zeros(top + 1, bool)
    known[list(words)] = True
    known[0] = True  # epsilon
    olabels = arcs["olabel"]
    bad = (olabels < 0) | (olabels > top)
    bad |= ~known[np.where(bad, 0, olabels)]
    if bad.any():
        arc, state = _first_bad(fst, bad)
        raise AsrBnError(
            f"{fst_path}: an arc from state {state} writes word id {olabels[arc]}, which is not in "
            f"{fst_path.parent / 'words.txt'} (put the words.txt the graph was built with beside it)"
        )


def load_graph(graph_dir: str | Path, model: str | Path, pdf_labels: bool = False) -> Graph:
    """Load HCLG.fst (an OpenFst vector or const FST, as Kaldi's mkgraph.sh writes it) and words.txt from a graph
    dir, and transition-id → pdf-id from the alignment model; the graph is checked against both (`check_graph`),
    and a graph dir's `num_pdfs` file (written by mkgraph.sh and `build_graph`) must match the model.

    `pdf_labels`: relabel the graph's transition-ids with their pdf-id + 1 once, so that the decoder reads each
    frame's scaled log-likelihoods as they are (what Kaldi's DecodableMatrixScaledMapped looks up per arc) instead
    of a (T × transition-ids) matrix built per utterance; for one-best words only (paths carry no transition-ids)."""
    graph_dir = require_dir(graph_dir, "graph dir", "HCLG.fst and words.txt of Kaldi's mkgraph.sh or `asr-bn mkgraph`")
    fst_path, words_path = graph_dir / "HCLG.fst", graph_dir / "words.txt"
    for path, what in ((fst_path, "the decoding graph"), (words_path, "the graph's word table")):
        if not path.is_file():
            raise AsrBnError(
                f"{path}: no such file ({what}; give a graph dir made by Kaldi's utils/mkgraph.sh or `asr-bn mkgraph`)"
            )
    model_path = model_file(model)
    tm = read_transition_model(model_path)
    tid2pdf = tm.tid_pdf.astype(np.int64)
    num_pdfs = int(tm.num_pdfs)
    num_pdfs_file = graph_dir / "num_pdfs"
    if num_pdfs_file.is_file():
        graph_pdfs = int(num_pdfs_file.read_text().split()[0])
        if graph_pdfs != num_pdfs:
            raise AsrBnError(
                f"{graph_dir} was built for a model with {graph_pdfs} pdfs but {model_path} has {num_pdfs} "
                "(decode with the graph built from this model, or rebuild the graph with it)"
            )
    arrays = read_std_fst(fst_path)
    words = _read_words(words_path)
    check_graph(fst_path, arrays, tm.num_transition_ids, words, model_path)
    if pdf_labels:
        table = np.concatenate([[0], tid2pdf[1:] + 1]).astype(np.int32)
        arrays = relabel_input(arrays, table)
    return Graph(graph_dir, decoder_fst(arrays, fst_path, pdf_labels), words, tid2pdf, num_pdfs, model_path,
                 pdf_labels)


# --------------------------------------------------------------------------------------------------------------
# Decoding one utterance


@dataclass
class Hypothesis:
    """One decoded utterance: words at the decoding acoustic scale, and what else the decoder gave."""

    utt: str
    words: list[str]
    frames: int
    log_like: float  # -(graph cost + acoustic-scale × acoustic cost) of the best path, as Kaldi's decoders report
    reached_final: bool
    alignment: list[int] = field(default_factory=list)  # the best path's transition-id per frame (none on pdf labels)
    lattice: bytes | None = None  # OpenFst binary of the state-level Lattice (Kaldi's binary lattice holder)
    by_lmwt: dict[int, list[str]] = field(default_factory=dict)


def _best_path(graph: Graph, path) -> tuple[list[str], list[int], float, float]:  # noqa: ANN001 - kaldifst.Lattice
    """Words, transition-ids, graph cost and acoustic cost of a linear lattice (a best path)."""
    from asr_bn.kaldi_ext import kaldifst

    ok, tids, word_ids, weight = kaldifst.get_linear_symbol_sequence(path)
    if not ok:
        raise RuntimeError("kaldifst returned a best path that is not linear")  # a library contract, not user input
    return [graph.words.get(w, f"<unk:{w}>") for w in word_ids], list(tids), weight.value1, weight.value2


def decode_matrix(graph: Graph, utt: str, loglikes: np.ndarray, config: DecodeConfig) -> Hypothesis:
    """Decode one (T, num_pdfs) log-likelihood matrix; raise AsrBnError (naming `utt`) when it cannot be."""
    from asr_bn.kaldi_ext import kaldi_decoder, kaldifst

    if loglikes.ndim != 2 or loglikes.shape[1] != graph.num_pdfs:
        raise AsrBnError(
            f"utterance {utt}: log-likelihoods have shape {tuple(loglikes.shape)} but {graph.model_path} has "
            f"{graph.num_pdfs} pdfs (run `asr-bn forward` with a network trained on this model's alignments)"
        )
    if loglikes.shape[0] == 0:
        raise AsrBnError(f"utterance {utt}: no frames to decode")
    if not np.isfinite(loglikes).all():
        raise AsrBnError(f"utterance {utt}: log-likelihoods contain NaN or infinity (check the network's output)")
    if graph.pdf_labels and config.lattices:
        raise ValueError("a graph loaded with pdf_labels gives no lattices (load it without)")  # a caller's mistake
    decoder = graph.decoder(config)
    decoder.decode(kaldi_decoder.DecodableCtc(graph.scores(loglikes, config.acoustic_scale)))
    frames = loglikes.shape[0]
    # The best path, acoustic costs at the decoding scale: Kaldi's decoders take the words and the log-likelihood
    # they report from it, with or without lattices (the raw lattice's shortest path is the decoder's best path).
    ok, lat = decoder.get_raw_lattice() if config.lattices else decoder.get_best_path()
    if not ok or lat.num_states == 0:
        raise AsrBnError(f"utterance {utt}: no path survived the beam (raise --beam or --max-active)")
    words, tids, graph_cost, am_cost = _best_path(graph, kaldifst.shortest_path(lat, n=1) if config.lattices else lat)
    if not math.isfinite(graph_cost + am_cost):
        raise AsrBnError(f"utterance {utt}: the best path costs {graph_cost + am_cost} (the graph's weights overflow: "
                         "rebuild the graph)")
    if not config.lattices:
        return Hypothesis(utt, words, frames, -(graph_cost + am_cost), decoder.reached_final(),
                          [] if graph.pdf_labels else tids)
    # Kaldi keeps unscaled acoustic costs in lattices; rescoring applies 1/LMWT to them.
    kaldifst.scale_lattice(kaldifst.lattice_scale(1.0, 1.0 / config.acoustic_scale), lat)
    reached_final = math.isfinite(decoder.final_relative_cost())
    hyp = Hypothesis(utt, words, frames, -(graph_cost + am_cost), reached_final, tids, _fst_bytes(lat))
    hyp.by_lmwt = _by_lmwt(graph, lat, config.lmwt)
    return hyp


def _by_lmwt(graph: Graph, lat, lmwts: Iterable[int]) -> dict[int, list[str]]:  # noqa: ANN001 - kaldifst.Lattice
    """The best path's words at each LM weight of a lattice with unscaled acoustic costs (score.sh's sweep)."""
    from asr_bn.kaldi_ext import kaldifst

    return {w: _best_path(graph, kaldifst.lattice_to_nbest(lat, acoustic_scale=1.0 / w, lm_scale=1.0, n=1)[0])[0]
            for w in lmwts}


def lattice_hypothesis(graph: Graph, utt: str, lattice: bytes, frames: int, config: DecodeConfig,
                       reached_final: bool = True) -> Hypothesis:
    """The hypothesis of a state-level lattice with unscaled acoustic costs (e.g. after gmm-rescore-lattice): its
    best path at `config.acoustic_scale` and at each of `config.lmwt`."""
    from asr_bn.kaldi_ext import kaldifst

    lat = _lattice_from_bytes(lattice)
    # lattice_to_nbest's path keeps the scaled acoustic costs, as the decoder's best path has them
    words, tids, graph_cost, am_cost = _best_path(
        graph, kaldifst.lattice_to_nbest(lat, acoustic_scale=config.acoustic_scale, lm_scale=1.0, n=1)[0])
    return Hypothesis(utt, words, frames, -(graph_cost + am_cost), reached_final, tids, lattice,
                      _by_lmwt(graph, lat, config.lmwt))


_SCRATCH: dict[int, Path] = {}  # process id → that process's scratch file for lattices, made on first use


def _scratch() -> Path:
    """kaldifst reads and writes FSTs only as files: one scratch file per process (a forked job makes its own), in
    memory (/dev/shm) where there is one (a file made and removed per lattice cost more than decoding on a busy
    disk). Where /proc/self/fd exists the file is unlinked at once and used through its descriptor, so it goes with
    the process however that ends; elsewhere it is removed at exit."""
    pid = os.getpid()
    if pid not in _SCRATCH:
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        fd, tmp = tempfile.mkstemp(prefix="asr-bn-lattice-", suffix=".fst", dir=shm)
        if os.path.isdir("/proc/self/fd"):
            os.unlink(tmp)
            _SCRATCH[pid] = Path(f"/proc/self/fd/{fd}")
        else:
            os.close(fd)
            _SCRATCH[pid] = Path(tmp)
            atexit.register(_SCRATCH[pid].unlink, missing_ok=True)
    return _SCRATCH[pid]


def _fst_bytes(lat) -> bytes:  # noqa: ANN001 - kaldifst.Lattice
    """The OpenFst binary form (with header) of a lattice: what Kaldi's LatticeHolder writes in binary mode."""
    if not lat.write(str(_scratch())):
        raise AsrBnError(f"could not write a lattice to {_scratch()} (free space in {_scratch().parent})")
    return _scratch().read_bytes()


def _lattice_from_bytes(data: bytes):  # noqa: ANN202 - kaldifst.Lattice
    """The kaldifst Lattice of OpenFst binary bytes (the inverse of `_fst_bytes`)."""
    from asr_bn.kaldi_ext import kaldifst

    try:
        _scratch().write_bytes(data)
    except OSError as e:
        raise AsrBnError(f"could not write a lattice to {_scratch()}: {e.strerror or e} (free space there)") from e
    lat = kaldifst.Lattice.read(str(_scratch()))
    if lat is None:
        raise RuntimeError("kaldifst could not read a lattice asr-bn wrote")  # a library contract, not user input
    return lat


# --------------------------------------------------------------------------------------------------------------
# Decoding many utterances


def _decode_or_reason(graph: Graph, utt: str, loglikes: np.ndarray, config: DecodeConfig) -> Hypothesis | str:
    try:
        return decode_matrix(graph, utt, loglikes, config)
    except AsrBnError as e:
        return str(e).removeprefix(f"utterance {utt}: ")


_WORKER_GRAPH: Graph | None = None  # one graph per worker process, loaded by its initializer


def _init_worker(graph_dir: str, model: str, pdf_labels: bool) -> None:
    global _WORKER_GRAPH
    _WORKER_GRAPH = load_graph(graph_dir, model, pdf_labels)


def _worker_decode(utt: str, loglikes: np.ndarray, config: DecodeConfig) -> Hypothesis | str:
    if _WORKER_GRAPH is None:
        raise RuntimeError("decode worker used before _init_worker loaded the graph")
    return _decode_or_reason(_WORKER_GRAPH, utt, loglikes, config)


_LOGLIKES_FORMS = "ark:FILE, scp:FILE or ark:- on stdin"


def _rspecifier(loglikes: str | Path) -> str:
    """Accept Kaldi rspecifiers (`ark:-`, `scp:x.scp`, `ark:x.ark`) and plain .ark / .scp paths; a file that is
    missing or a directory is a UsageError before any work (a large graph takes long to load)."""
    spec = str(loglikes)
    if spec.split(":", 1)[0].split(",")[0] not in ("ark", "scp"):
        spec = ("scp:" if spec.endswith(".scp") else "ark:") + spec
    path = spec.split(":", 1)[1]
    if path != "-" and not path.rstrip().endswith("|") and not Path(path).is_file():
        kind = "is a directory" if Path(path).is_dir() else "does not exist"
        raise UsageError(f"log-likelihoods {spec}: {path} {kind}; give the output of `asr-bn forward` as {_LOGLIKES_FORMS}")
    return spec


def _read_matrices(rspecifier: str) -> Iterator[tuple[str, np.ndarray]]:
    """(key, matrix) pairs of a Kaldi rspecifier. As in `asr_bn.io.read_matrix`, what kaldiio's parser raises on a
    missing, cut-off or corrupt archive (`asr_bn.io.KALDIIO_READ_ERRORS`: `asr-bn forward` killed mid-pipe leaves
    one) becomes one AsrBnError naming the source, where it broke and the fix; a MemoryError says so."""
    import kaldiio

    fix = f"re-run `asr-bn forward` and give its output as {_LOGLIKES_FORMS}"
    last = None
    try:
        with kaldiio.ReadHelper(rspecifier) as reader:
            for utt, mat in reader:
                if not isinstance(mat, np.ndarray) or mat.ndim != 2:
                    raise AsrBnError(f"{rspecifier}: utterance {shown(utt)} is not a Kaldi matrix; {fix}")
                yield utt, mat
                last = utt
    except (MemoryError, *KALDIIO_READ_ERRORS) as e:  # what kaldiio's parser raises on bad bytes
        where = f"after utterance {shown(last)}" if last is not None else "at its first utterance"
        if isinstance(e, MemoryError):
            raise AsrBnError(out_of_memory_reading(f"{rspecifier} {where}", e)) from e
        location = _scp_location_after(rspecifier, last)
        detail = archive_problem(location, e) if location else error_detail(e)
        raise AsrBnError(
            f"cannot read log-likelihoods from {rspecifier} {where} ({detail}); "
            f"the archive is missing, truncated or corrupt: {fix}"
        ) from e


def _scp_location_after(rspecifier: str, last: str | None) -> str | None:
    """The `file:offset` of the scp entry after utterance `last` (the first without it), or None for an archive."""
    kinds, _, path = rspecifier.partition(":")
    if "scp" not in kinds.split(","):
        return None
    try:
        rows = read_rows(path, "")
    except AsrBnError:
        return None
    keys = [row.key for row in rows]
    i = keys.index(last) + 1 if last in keys else 0
    return rows[i].rest if i < len(rows) and rows[i].rest else None


def read_loglikes(source: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(utterance, log-likelihood matrix) pairs of `asr-bn forward` output: a Kaldi rspecifier or a .ark/.scp path;
    an unreadable source is one AsrBnError."""
    return _read_matrices(_rspecifier(source))


def loglike_table(source: str | Path) -> Mapping[str, np.ndarray]:
    """`asr-bn forward` output as a table by utterance: an scp is read one utterance at a time when asked (any set
    size); an archive or a pipe, which cannot be read out of order, is read whole."""
    rspecifier = _rspecifier(source)
    kinds, _, path = rspecifier.partition(":")
    if "scp" not in kinds.split(","):
        return dict(_read_matrices(rspecifier))
    return _ScpMatrices(path, read_table(path, f"re-run `asr-bn forward` and give its output as {_LOGLIKES_FORMS}"))


class _ScpMatrices(Mapping[str, np.ndarray]):
    """The matrices of an scp by key, each read from its archive when asked (asr_bn.io.read_matrix's errors)."""

    def __init__(self, path: str, rows: Mapping[str, TableRow]) -> None:
        self.path, self.rows = path, rows

    def __getitem__(self, utt: str) -> np.ndarray:
        mat = read_matrix(self.rows[utt].rest, self.path, f"utterance {shown(utt)}")
        if mat.ndim != 2:
            raise AsrBnError(f"{self.path}: utterance {shown(utt)} is not a Kaldi matrix; re-run `asr-bn forward`")
        return mat

    def __contains__(self, utt: object) -> bool:  # the scp's keys: Mapping's default would read the matrix
        return utt in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class MeanLoglikes(Mapping[str, np.ndarray]):
    """The frame-by-frame mean of several networks' `asr-bn forward` outputs (an ensemble), utterance by utterance
    when asked (scp sources: any set size), Kaldi's `matrix-sum --average=true` to the bit (`add_scaled` by 1/n in
    the order given); the first source's utterances in its order. A source lacking one of them is an AsrBnError at
    once; a matrix of another shape than the first source's, when it is read."""

    def __init__(self, sources: Sequence[str | Path]) -> None:
        if not sources:
            raise UsageError("give at least one source of log-likelihoods")
        self.sources = [str(s) for s in sources]
        self.tables = [loglike_table(s) for s in sources]
        first = self.tables[0]
        for source, table in zip(self.sources[1:], self.tables[1:]):
            lacking = sum(utt not in table for utt in first)
            if lacking:
                raise AsrBnError(f"{source} lacks {lacking} of the {len(first)} utterances of {self.sources[0]}: "
                                 "average forward outputs of the same data dir")

    def __getitem__(self, utt: str) -> np.ndarray:
        from asr_bn.alignments.posteriors import add_scaled

        if len(self.tables) == 1:
            return self.tables[0][utt]
        total = None
        for source, table in zip(self.sources, self.tables):
            mat = table[utt]
            if total is not None and mat.shape != total.shape:
                raise AsrBnError(f"{source}: utterance {utt} has log-likelihoods of shape {mat.shape}, "
                                 f"{self.sources[0]} {total.shape}: average the outputs of networks of one tree on "
                                 "the same data")
            total = add_scaled(total, mat, 1.0 / len(self.tables))
        return total

    def __contains__(self, utt: object) -> bool:  # the first source's keys: Mapping's default would read the matrices
        return utt in self.tables[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables[0])

    def __len__(self) -> int:
        return len(self.tables[0])


def _count_scp(rspecifier: str) -> int | None:
    if not rspecifier.startswith("scp"):
        return None
    path = Path(rspecifier.split(":", 1)[1])
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else None


def _hypotheses(
    graph: Graph, items: Iterable[tuple[str, np.ndarray]], config: DecodeConfig, nj: int
) -> Iterator[tuple[str, Hypothesis | str]]:
    """Decode in input order, in this process (nj=1) or in `nj` worker processes with bounded read-ahead."""
    if nj == 1:
        for utt, mat in items:
            yield utt, _decode_or_reason(graph, utt, mat, config)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # spawn: workers start clean (no forked torch/OpenMP or progress-bar threads) and load the graph themselves.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(nj, ctx, initializer=_init_worker, initargs=(str(graph.path), str(graph.model_path), graph.pdf_labels)) as pool:
        pending: deque[tuple[str, Future]] = deque()
        for utt, mat in items:
            pending.append((utt, pool.submit(_worker_decode, utt, mat, config)))
            if len(pending) >= 2 * nj:
                u, fut = pending.popleft()
                yield u, fut.result()
        while pending:
            u, fut = pending.popleft()
            yield u, fut.result()


def _check_shape(graph: Graph, utt: str, mat: np.ndarray, source: str) -> np.ndarray:
    if mat.ndim != 2 or mat.shape[1] != graph.num_pdfs:
        raise AsrBnError(
            f"{source}: utterance {utt} has log-likelihoods of shape {tuple(mat.shape)} but {graph.model_path} has "
            f"{graph.num_pdfs} pdfs (forward with a network trained on this model's alignments, or pass its model)"
        )
    return mat


def decode(
    graph_dir: str | Path,
    model: str | Path,
    loglikes: str | Path,
    out_dir: str | Path,
    config: DecodeConfig | None = None,
    nj: int = 1,
    lang: str | Path | None = None,
    average_with: Sequence[str | Path] = (),
) -> Report:
    """Decode every utterance of `loglikes` (rspecifier or ark/scp path) into `out_dir`; with `average_with`, the
    frame-by-frame mean of `loglikes` and those sources (an ensemble of networks, as Kaldi's `matrix-sum
    --average=true | latgen-faster-mapped`; `MeanLoglikes`: scp sources are read utterance by utterance).

    Writes `text` (one-best words per utterance, input order), `report.json`, and with `config.lattices`
    `lat.ark`/`lat.scp` (state-level lattices, transition-ids in, word ids out, unscaled acoustic costs: Kaldi's
    lattice tools read them) plus `hyp_LMWT` for each of `config.lmwt`; with `config.ctm` a Kaldi `ctm` of the
    one-best words, word boundaries from `lang`'s lexicon (default: the graph dir's phones/align_lexicon.int).
    Utterances that cannot be decoded are skipped and named in the report; those that reach no final state keep
    their partial output, as Kaldi does.
    """
    config = config or DecodeConfig()
    config.check()
    if nj < 1:
        raise UsageError(f"--nj must be >= 1, got {nj}")
    out_dir = check_output_dir(out_dir, "OUT_DIR")
    rspecifier = _rspecifier(loglikes)
    report = Report("decode")
    with OutputLock(out_dir):
        graph = load_graph(graph_dir, model, pdf_labels=not (config.lattices or config.ctm))
        if average_with:
            mean = MeanLoglikes([loglikes, *average_with])
            source, matrices, total = f"the mean of {rspecifier} and {len(average_with)} more", mean.items(), len(mean)
            report.note(f"decoded the frame-by-frame mean of {len(average_with) + 1} sources: "
                        + ", ".join(map(str, [loglikes, *average_with])))
        else:
            source, matrices, total = rspecifier, _read_matrices(rspecifier), _count_scp(rspecifier)
        items = ((utt, _check_shape(graph, utt, mat, source)) for utt, mat in matrices)
        write_decode(out_dir, graph, _hypotheses(graph, items, config, nj), config, report, lang, total)
    return report


def write_decode(out_dir: Path, graph: Graph, hyps: Iterable[tuple[str, Hypothesis | str]], config: DecodeConfig,
                 report: Report, lang: str | Path | None = None, total: int | None = None) -> None:
    """Write what `decode` writes (text, hyp_LMWT, lat.ark/.scp, ctm, report.json last) from (utterance, hypothesis
    or the reason it has none) pairs, `total` of them if known; the caller holds `out_dir`'s OutputLock."""
    if config.ctm:
        from asr_bn.ctm import ctm_lines, load_word_lexicon, word_segments

        lexicon = load_word_lexicon(graph.path, graph.words, lang)
        tm = read_transition_model(graph.model_path)
        no_ctm: list[str] = []
    for stale in [*out_dir.glob("hyp_*"), out_dir / "lat.ark", out_dir / "lat.scp", out_dir / "ctm"]:
        stale.unlink(missing_ok=True)  # outputs of an earlier run with other options must not be scored
    counts = {"utterances": 0, "decoded": 0, "partial": 0, "frames": 0}
    partial: list[str] = []
    total_log_like = 0.0
    with ExitStack() as files, progress_bar() as bar:
        text = files.enter_context(atomic_open(out_dir / "text"))
        by_lmwt = {w: files.enter_context(atomic_open(out_dir / f"hyp_{w}")) for w in config.lmwt}
        lat_ark = files.enter_context(atomic_open(out_dir / "lat.ark", "wb")) if config.lattices else None
        ctm = files.enter_context(atomic_open(out_dir / "ctm")) if config.ctm else None
        scp_lines: list[str] = []
        name = f"decode {out_dir.parent.name}/{out_dir.name}"  # the model's dir and the set's, e.g. blstm/decode_dev
        task = bar.add_task(name, total=total, info="")
        for utt, hyp in hyps:
            counts["utterances"] += 1
            bar.advance(task)
            if isinstance(hyp, str):
                report.skip(utt, hyp)
                continue
            counts["decoded"] += 1
            counts["frames"] += hyp.frames
            total_log_like += hyp.log_like
            if not hyp.reached_final:
                partial.append(utt)
            text.write(" ".join([utt, *hyp.words]) + "\n")
            for w, f in by_lmwt.items():
                f.write(" ".join([utt, *hyp.by_lmwt[w]]) + "\n")
            if lat_ark is not None and hyp.lattice is not None:
                # Kaldi's lattice holders write no binary "\0B" marker: the OpenFst header follows the key.
                lat_ark.write(utt.encode() + b" ")
                scp_lines.append(f"{utt} {(out_dir / 'lat.ark').resolve()}:{lat_ark.tell()}\n")
                lat_ark.write(hyp.lattice)
            if ctm is not None:
                phones = tm.phone_segments(np.asarray(hyp.alignment, dtype=np.int64), f"utterance {utt}")
                segments = word_segments(phones, hyp.words, lexicon)
                if segments is None:
                    no_ctm.append(utt)
                else:
                    ctm.write(ctm_lines(utt, segments, config.frame_shift))
            bar.update(task, info=f"partial {len(partial)}, skipped {report.num_skipped}")
    if config.lattices:
        write_text(out_dir / "lat.scp", "".join(scp_lines))
    counts["partial"] = len(partial)
    report.counts.update(counts)
    if partial:
        report.note(
            f"{len(partial)} utterance(s) reached no final state; their partial output is kept "
            f"(raise --beam): {' '.join(partial[:5])}{' …' if len(partial) > 5 else ''}"
        )
    if config.ctm and no_ctm:
        report.note(
            f"{len(no_ctm)} utterance(s) have no ctm lines: their phones do not spell their words with the "
            f"lexicon (is it the graph's lexicon?): {' '.join(no_ctm[:5])}{' …' if len(no_ctm) > 5 else ''}"
        )
    if counts["frames"]:
        report.note(f"average log-likelihood per frame {total_log_like / counts['frames']:.4f}")
    report.save(out_dir / "report.json")
