"""A small Kaldi-style graph builder: Kaldi's utils/mkgraph.sh for a word loop or an ARPA LM over a lexicon.

`build_graph` makes L (with disambiguation symbols) ∘ G, determinized and minimized, composed with the context
(trivial for monophones) and kaldi-hmm-gmm's H transducer, disambiguation symbols removed, self-loops added with the
transition model; it writes a graph dir that `asr_bn.decode` (and Kaldi's decoders) read.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr_bn.alignments import read_transition_model
from asr_bn.decode import model_file
from asr_bn.errors import AsrBnError
from asr_bn.io import OutputLock, atomic_path, check_output_dir, write_text

if TYPE_CHECKING:
    from asr_bn.kaldi_ext import kaldi_hmm_gmm, kaldifst

    from asr_bn.lang import Lang

__all__ = ["read_tree", "build_graph"]



def read_tree(path: str | Path) -> "kaldi_hmm_gmm.ContextDependency":
    """Read a Kaldi binary decision tree (`exp/*/tree`, as `build-tree` or kaldi-hmm-gmm write it)."""
    from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AsrBnError(f"cannot read tree {path}: {e.strerror or e} (give the tree of the model's exp dir)") from e
    if not raw.startswith(b"\0BContextDependency "):
        raise AsrBnError(f"{path}: not a binary Kaldi tree (convert it with Kaldi's `copy-tree --binary=true`)")
    tree = khg.ContextDependency.__new__(khg.ContextDependency)
    try:
        tree.__setstate__((np.frombuffer(raw[2:], dtype=np.int8).tolist(),))
    except RuntimeError as e:
        raise AsrBnError(f"{path}: cannot parse the Kaldi tree: {e} (is the file truncated?)") from e
    return tree


def _hmm_objects(model_path: Path, tree_path: Path | None):  # noqa: ANN202 - (khg tree, khg TransitionModel, tm)
    """kaldi-hmm-gmm's tree and TransitionModel for a Kaldi model: structure from the tree and the model's
    topology, transition probabilities from the model (read by asr_bn.alignments)."""
    from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg

    tm = read_transition_model(model_path)
    topo = khg.HmmTopology()
    topo.read(tm.topology_text())
    if tree_path is not None:
        tree = read_tree(tree_path)
    else:
        tree = khg.monophone_context_dependency(topo.phones, topo.get_phone_to_num_pdf_classes())
    ktm = khg.TransitionModel(tree, topo)
    tids = range(1, tm.num_transition_ids + 1)
    same = ktm.num_transition_ids == tm.num_transition_ids and all(
        ktm.transition_id_to_pdf(t) == tm.tid_pdf[t] and ktm.transition_id_to_phone(t) == tm.tid_phone[t] for t in tids
    )
    if not same:
        fix = "pass the tree of its exp dir" if tree_path is None else f"use the tree made with {model_path}"
        raise AsrBnError(f"{model_path}: its transition-ids do not match the tree's pdfs ({fix})")
    # Kaldi's TransitionModel::ComputeDerivedOfProbs: the non-self-loop log-prob of each transition-state.
    non_loop = np.zeros(tm.num_transition_states + 1)
    loops = np.flatnonzero(tm.tid_is_self_loop)
    non_loop[tm.tid_tstate[loops]] = np.log1p(-np.exp(tm.log_probs[loops].astype(np.float64)))
    state = list(ktm.__getstate__())
    state[6], state[7] = tm.log_probs.astype(np.float64).tolist(), non_loop.tolist()
    # __setstate__ (pybind11's pickle constructor) only fills a fresh instance: on `ktm` it changed nothing, and
    # graphs had the topology's initial probabilities instead of the model's.
    trained = khg.TransitionModel.__new__(khg.TransitionModel)
    trained.__setstate__(tuple(state))
    if not np.allclose(trained.log_probs, tm.log_probs, atol=1e-6):
        raise RuntimeError("kaldi-hmm-gmm ignored the model's transition probabilities")  # a library contract
    return tree, trained, tm


def _rebuild(fst, arcs_of) -> "kaldifst.StdVectorFst":  # noqa: ANN001 - kaldifst FSTs and a callable
    """A copy of `fst` whose arcs from state s are `arcs_of(s, arc)` for each arc (a list of StdArc)."""
    from asr_bn.kaldi_ext import kaldifst

    out = kaldifst.StdVectorFst()
    for _ in range(fst.num_states):
        out.add_state()
    out.start = fst.start
    for s in range(fst.num_states):
        out.set_final(s, fst.final(s))
        for arc in kaldifst.ArcIterator(fst, s):
            for new in arcs_of(s, arc):
                out.add_arc(s, new)
    return out


def _scored_words(lang: "Lang") -> list[str]:
    """Lexicon words that a word loop offers: all but those pronounced as silence only (<SIL>, !SIL …)."""
    prons = lang.pronunciations()
    silence = set(lang.silence_phones or [lang.silence_phone])
    return sorted(w for w, ps in prons.items() if any(not set(p) <= silence for p in ps))


def _grammar_fst(grammar: str | Path, lang: "Lang", words: dict[str, int], words_txt: Path) -> "kaldifst.StdVectorFst":
    """G: a uniform word loop over the scored lexicon words (`loop`), or an ARPA LM through kaldilm's arpa2fst."""
    from asr_bn.kaldi_ext import kaldifst

    if str(grammar) == "loop":
        loop_words = _scored_words(lang)
        if not loop_words:
            raise AsrBnError("the lexicon has no words besides silence; a word loop needs at least one")
        cost = math.log(len(loop_words) + 1)  # each word and the end share the probability mass equally
        G = kaldifst.StdVectorFst()
        state = G.add_state()
        G.start = state
        G.set_final(state, cost)
        for w in loop_words:
            G.add_arc(state, kaldifst.StdArc(words[w], words[w], cost, state))
    else:
        arpa = Path(grammar)
        if not arpa.is_file():
            raise AsrBnError(f"{arpa}: no such ARPA language model (give an ARPA file, or `loop` for a word loop)")
        G = kaldifst.compile(s=_arpa2fst(arpa, words_txt), acceptor=False)
    kaldifst.arcsort(G, sort_type="ilabel")
    return G


_ARPA2FST = """import sys
from asr_bn.kaldi_ext import kaldilm
arpa, words, out = sys.argv[1:]
text = kaldilm.arpa2fst(input_arpa=arpa, disambig_symbol="#0", read_symbol_table=words)
open(out, "w", encoding="utf-8").write(text)
"""


def _arpa2fst(arpa: Path, words_txt: Path) -> str:
    """G as OpenFst text, from kaldilm's arpa2fst run in a child process: on a malformed ARPA file kaldilm aborts
    the whole process (C++ abort), so the child's death becomes one AsrBnError quoting kaldilm's `[E]` line."""
    out = words_txt.with_name("G.txt")
    proc = subprocess.run([sys.executable, "-c", _ARPA2FST, str(arpa), str(words_txt), str(out)],
                          capture_output=True, text=True, errors="replace")  # fmt: skip
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if line.startswith("[E]")] or proc.stderr.splitlines()[-1:]
        detail = " ".join(said[-1].split())[:200] if said else f"exit status {proc.returncode}"
        raise AsrBnError(f"{arpa}: not an ARPA language model that arpa2fst reads ({detail})")
    return out.read_text(encoding="utf-8")


def _make_hclg(L, G, phones: dict[str, int], ctx, ktm, transition_scale: float, self_loop_scale: float):  # noqa: ANN001, ANN202
    """mkgraph.sh's FST steps: (HCLG, sorted disambiguation transition-ids removed from it)."""
    from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg, kaldifst

    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG, use_log=True)
    kaldifst.minimize_encoded(LG)
    disambig_phones = sorted(i for p, i in phones.items() if p.startswith("#"))
    CLG, ilabels = kaldifst.compose_context(
        disambig_syms=disambig_phones,
        context_width=ctx.context_width,
        central_position=ctx.central_position,
        ifst=LG,
    )
    kaldifst.arcsort(CLG, sort_type="ilabel")
    Ha, disambig_tids = khg.get_h_transducer(
        ilabel_info=ilabels, ctx_dep=ctx, trans_model=ktm, config=khg.HTransducerConfig(transition_scale)
    )
    HCLGa = kaldifst.compose(Ha, CLG)
    kaldifst.determinize_star(HCLGa, use_log=True)
    drop = set(disambig_tids)  # fstrmsymbols: disambiguation transition-ids become epsilons
    HCLGa = _rebuild(
        HCLGa,
        lambda s, a: [kaldifst.StdArc(0 if a.ilabel in drop else a.ilabel, a.olabel, a.weight, a.nextstate)],
    )
    kaldifst.minimize_encoded(HCLGa)
    HCLG = khg.add_self_loops(self_loop_scale=self_loop_scale, disambig_syms=[], reorder=True, trans_model=ktm, ifst=HCLGa)
    return HCLG, sorted(drop)


def build_graph(
    lang: "str | Path | Lang",
    model: str | Path,
    out_dir: str | Path,
    grammar: str | Path = "loop",
    tree: str | Path | None = None,
    sil_prob: float = 0.5,
    transition_scale: float = 1.0,
    self_loop_scale: float = 0.1,
) -> Path:
    """Build HCLG.fst for a lexicon and grammar, as Kaldi's utils/mkgraph.sh, into a graph dir `decode` reads.

    :param lang: a lang folder (`asr_bn.lang.read_lang`: lexicon.txt, phones.txt, words.txt) or a loaded `Lang`.
    :param model: the alignment model final.mdl (or its exp dir); its phones must be the lang's phone ids.
    :param grammar: `loop` (uniform loop over the lexicon's non-silence words) or an ARPA file.
    :param tree: the model's tree; default: `tree` beside final.mdl, else the monophone tree of its topology.
    :return: `out_dir`, holding HCLG.fst, words.txt, phones.txt (with #n symbols), num_pdfs, phones/silence.csl,
        disambig_tid.int.
    """
    from asr_bn.lang import Lang, lexicon_disambig_fst, read_lang

    out_dir = check_output_dir(out_dir, "OUT_DIR")
    lang = lang if isinstance(lang, Lang) else read_lang(lang)
    model_path = model_file(model)
    tree_path = Path(tree) if tree is not None else model_path.parent / "tree"
    if tree is not None and not tree_path.is_file():
        raise AsrBnError(f"{tree_path}: no such tree (give the tree of the model's exp dir, or leave --tree out)")
    ctx, ktm, tm = _hmm_objects(model_path, tree_path if tree_path.is_file() else None)
    modelled = set(tm.phones)
    for word, pron in lang.lexicon:
        missing = [p for p in pron if lang.phones[p] not in modelled]
        if missing:
            raise AsrBnError(
                f"word {word!r}: phones {missing} have no HMM in {model_path} (the lang folder's phones.txt does not "
                "match the model's; build the graph with the lang the model was trained with)"
            )
    L, phones, words = lexicon_disambig_fst(lang, sil_prob)
    words_text = "".join(f"{w} {i}\n" for w, i in sorted(words.items(), key=lambda x: x[1]))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "words.txt").write_text(words_text, encoding="utf-8")  # arpa2fst reads the symbols from a file
        G = _grammar_fst(grammar, lang, words, Path(tmp) / "words.txt")
    HCLG, disambig_tids = _make_hclg(L, G, phones, ctx, ktm, transition_scale, self_loop_scale)
    if HCLG.num_states == 0:
        raise AsrBnError(f"the graph for {grammar} is empty (do the grammar's words appear in the lexicon?)")
    with OutputLock(out_dir):
        # disambig_tid.int is written last: while it is missing the dir is incomplete (and never mixes two builds)
        for name in ("disambig_tid.int", "HCLG.fst", "num_pdfs"):
            (out_dir / name).unlink(missing_ok=True)
        write_text(out_dir / "words.txt", words_text)
        write_text(out_dir / "phones.txt", "".join(f"{p} {i}\n" for p, i in sorted(phones.items(), key=lambda x: x[1])))
        with atomic_path(out_dir / "HCLG.fst") as tmp_fst:
            if not HCLG.write(str(tmp_fst)):
                raise AsrBnError(f"could not write {out_dir / 'HCLG.fst'} (free disk space)")
        write_text(out_dir / "num_pdfs", f"{tm.num_pdfs}\n")
        (out_dir / "phones").mkdir(exist_ok=True)  # as mkgraph.sh copies it: decode_fmllr's silence phones
        write_text(out_dir / "phones" / "silence.csl", ":".join(map(str, lang.silence_phone_ids)) + "\n")
        write_text(out_dir / "disambig_tid.int", "".join(f"{t}\n" for t in disambig_tids))
    return out_dir
