"""Graph load time: HCLG.fst as an OpenFst const FST (what Kaldi's utils/mkgraph.sh writes) against the same graph
as a vector FST, through `asr_bn.decode.load_graph` (parse, checks, kaldifst object), in one run.

    python bench/graph_load.py                 # 150 k synthetic words: a graph of about 3 M arcs
    python bench/graph_load.py --words 2000    # a quick smoke run

The graph is `asr_bn.mkgraph.build_graph` of a word loop over a synthetic lexicon (random words of 4-12 of 40
phones) with a monophone model from Kaldi's gmm-init-mono; its const copy is made by OpenFst's
`fstconvert --fst_type=const` (both from ../shared/kaldi, which this bench needs).
Prints the arcs, the best of --repeats load times of each, the ratio const / vector (target <= 1.5), and
kaldifst's bare read of the vector file (what loading cost before graphs were checked).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from asr_bn.decode import load_graph
from asr_bn.fst import read_std_fst
from asr_bn.kaldi_ext import kaldifst
from asr_bn.lang import Lang
from asr_bn.mkgraph import build_graph

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KALDI_BIN = SHARED / "kaldi" / "bin"
NUM_PHONES = 40
TOPO = """<Topology>
<TopologyEntry> <ForPhones> {phones} </ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.75 <Transition> 2 0.25 </State>
<State> 2 <PdfClass> 2 <Transition> 2 0.75 <Transition> 3 0.25 </State>
<State> 3 </State> </TopologyEntry>
<TopologyEntry> <ForPhones> 1 </ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.5 <Transition> 2 0.5 </State>
<State> 2 </State> </TopologyEntry>
</Topology>
"""


def synthetic_lang_and_model(num_words: int, out: Path, seed: int = 0) -> tuple[Lang, Path]:
    """A lang of `num_words` random words of 4-12 phones over 40 phones (+ SIL), and a monophone model for those
    phones made by Kaldi's gmm-init-mono (3-state left-to-right phones, 2-state silence)."""
    rng = np.random.default_rng(seed)
    names = ["SIL", *(f"P{i}" for i in range(1, NUM_PHONES + 1))]
    phones = {"<eps>": 0, **{p: i + 1 for i, p in enumerate(names)}}
    lexicon = [("<SIL>", ["SIL"])]
    lexicon += [(f"W{i}", list(rng.choice(names[1:], rng.integers(4, 13)))) for i in range(num_words)]
    words = {"<eps>": 0, **{w: i + 1 for i, (w, _) in enumerate(lexicon)}}
    (out / "topo").write_text(TOPO.format(phones=" ".join(str(i) for i in range(2, NUM_PHONES + 2))))
    init = [str(KALDI_BIN / "gmm-init-mono"), str(out / "topo"), "13", str(out / "final.mdl"), str(out / "tree")]
    subprocess.run(init, check=True, capture_output=True)
    return Lang(lexicon, phones, words, "SIL"), out / "final.mdl"


def best_time(fn, repeats: int) -> float:  # noqa: ANN001 - a callable
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=150000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not KALDI_BIN.is_dir():
        raise SystemExit(f"{KALDI_BIN} is absent: this bench needs gmm-init-mono and fstconvert from ../shared/kaldi")
    with tempfile.TemporaryDirectory() as tmp:
        lang, model = synthetic_lang_and_model(args.words, Path(tmp))
        vec = Path(tmp) / "vector"
        t = time.perf_counter()
        build_graph(lang, model, vec)
        build_s = time.perf_counter() - t
        const = Path(tmp) / "const"
        shutil.copytree(vec, const)
        convert = [str(KALDI_BIN / "fstconvert"), "--fst_type=const", str(vec / "HCLG.fst"), str(const / "HCLG.fst")]
        subprocess.run(convert, check=True)
        arrays = read_std_fst(const / "HCLG.fst")
        print(f"graph: {args.words} words, {arrays.num_states} states, {len(arrays.arcs)} arcs "
              f"(built in {build_s:.1f} s)")
        vec_s = best_time(lambda: load_graph(vec, model), args.repeats)
        const_s = best_time(lambda: load_graph(const, model), args.repeats)
        read_s = best_time(lambda: kaldifst.StdVectorFst.read(str(vec / "HCLG.fst")), args.repeats)
    print(f"load_graph vector: {vec_s:.3f} s   const: {const_s:.3f} s   const / vector: {const_s / vec_s:.2f}  "
          f"(best of {args.repeats})")
    print(f"for reference, kaldifst's read of the vector file alone (no words.txt, model or checks): {read_s:.3f} s")


if __name__ == "__main__":
    main()
