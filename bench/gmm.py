"""One triphone training iteration and one alignment pass: asr-bn's library against Kaldi's binaries, side by side.

    python bench/gmm.py                 # the synthesized corpus's 720 training utterances, 3 paired runs
    python bench/gmm.py --runs 5 --nj 4

A short train_deltas run makes the model (both sides then use it, with the same features and training graphs):
  iteration  asr-bn accumulate + estimate (in process)    vs  gmm-acc-stats-ali + gmm-est
  align      asr-bn alignment of the training set (in process)  vs  gmm-align-compiled
and both again with `--nj` jobs (default 2) side by side: asr-bn's forked jobs (asr_bn.jobs) against Kaldi's
processes per part of the data (utils/split_data.sh's split) started together, then gmm-sum-accs + gmm-est.
Kaldi's figures are whole processes (start-up included, a few ms); asr-bn's are the library calls, its start-up
(imports, the features already in memory) left out. Prints median seconds and the median of per-pair ratios
(the issue's targets: at most 1.5x). Needs ../shared/kaldi.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import ENV, KALDI  # noqa: E402 - the bench's shared Kaldi dir and environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nj", type=int, default=2, help="jobs of the second pair of rows")
    parser.add_argument("--work", type=Path, help="keep the corpus and outputs here (default: a temporary dir)")
    args = parser.parse_args()
    if not (KALDI / "bin").is_dir():
        sys.exit(f"{KALDI} is absent: this benchmark compares against Kaldi's binaries")
    import kaldiio

    from asr_bn.features import FeaturePipeline
    from asr_bn.gmm.train_deltas import DeltasConfig, train_deltas
    from asr_bn.gmm.align import align_all, AlignConfig, compile_graphs, gmm_scorer, kaldi_split
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.gmm.estimate import PassStats
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.lang import lexicon_fst, read_lang
    from asr_bn.prep import prepare_kaldi
    from asr_bn.synth import synthesize_corpus

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_gmm_"))
    corpus = synthesize_corpus(work / "corpus", seed=0, size="full")
    prep = work / "prep"
    prepare_kaldi(corpus.data["train"], prep, FeaturePipeline())
    feats, text, _ = prepared_gmm_features(prep, in_memory=True)  # computed once, before any timing: the passes
    # are measured without computing or reading features (Kaldi's read ready ones from feats.ark)
    lang = read_lang(corpus.lang)
    tri = work / "tri1"
    system, _ = train_deltas(feats, text, lang, corpus.ali["train"], tri,
                             DeltasConfig(num_leaves=500, tot_gauss=2000, num_iters=4, realign_iters=(2,), max_iter_inc=3))
    lexicon_fst(lang, 0.5).write(str(work / "L.fst"))
    (work / "disambig.int").write_text("".join(f"{i}\n" for i in lang.disambig_phone_ids))
    text_int = [f"{u} {' '.join(str(lang.words[w]) for w in text[u].split())}\n" for u in sorted(text)]
    report = __import__("asr_bn.report", fromlist=["Report"]).Report("bench")
    graphs = compile_graphs(system, lang, text, sorted(text), 0.5, report)
    scales = AlignConfig()
    alis, _, _, _ = align_all(system, gmm_scorer(system, system.am, feats, 0.1), graphs, 10, 40, scales)
    from asr_bn.gmm.align import write_alignments

    write_alignments(work / "ali", alis, [sorted(alis)])

    def ours_iteration(jobs: list[list[str]]) -> float:
        model = GmmSystem.load(tri / "final.mdl")  # every run updates the same model, as Kaldi's gmm-est does
        start = time.perf_counter()
        stats = PassStats(model, feats, alis, jobs)
        stats.update(model, 10.0, model.am.num_gauss, 0.25)
        return time.perf_counter() - start

    def ours_align(jobs: list[list[str]]) -> float:
        start = time.perf_counter()
        align_all(system, gmm_scorer(system, system.am, feats, 0.1), graphs, 10, 40, scales, jobs=jobs)
        return time.perf_counter() - start

    def kaldi(cmd: str) -> float:
        start = time.perf_counter()
        subprocess.run(["sh", "-c", cmd], env=ENV, check=True, capture_output=True)
        return time.perf_counter() - start

    mdl = tri / "final.mdl"
    ali = f"'ark:gunzip -c {work / 'ali' / 'ali.1.gz'}|'"
    print(f"{'step':14} {'asr-bn s':>9} {'Kaldi s':>8} {'ratio':>6}   ({args.runs} paired runs, medians; "
          f"{len(feats)} utterances, {system.am.num_pdfs} pdfs, {system.am.num_gauss} Gaussians)")
    for nj in (1, args.nj):
        jobs = kaldi_split(sorted(feats), nj, feats.utt2spk)
        for n, part in enumerate(map(set, jobs), 1):  # each Kaldi job reads its own part's features and graphs
            kaldiio.save_ark(str(work / f"feats.{nj}.{n}.ark"), {u: feats[u] for u in part})
            (work / f"text.{nj}.{n}.int").write_text("".join(line for line in text_int if line.split()[0] in part))
            subprocess.run([str(a) for a in ["compile-train-graphs", f"--read-disambig-syms={work / 'disambig.int'}",
                            tri / "tree", mdl, work / "L.fst", f"ark:{work / f'text.{nj}.{n}.int'}",
                            f"ark:{work / f'g.{nj}.{n}.fsts'}"]], env=ENV, check=True, capture_output=True)
        parts = range(1, nj + 1)
        kaldi_iteration = (" & ".join(f"gmm-acc-stats-ali {mdl} ark:{work / f'feats.{nj}.{n}.ark'} {ali} "
                                      f"{work / f'{n}.acc'}" for n in parts) + " & wait; "
                           f"gmm-sum-accs {work / 'acc'} {' '.join(str(work / f'{n}.acc') for n in parts)} && "
                           f"gmm-est --mix-up=0 {mdl} {work / 'acc'} {work / 'est.mdl'}")
        kaldi_align = " & ".join(
            f"gmm-align-compiled --transition-scale=1.0 --acoustic-scale=0.1 --self-loop-scale=0.1 --beam=10 "
            f"--retry-beam=40 {mdl} ark:{work / f'g.{nj}.{n}.fsts'} ark:{work / f'feats.{nj}.{n}.ark'} ark:/dev/null"
            for n in parts) + " & wait"
        for name, ours, cmd in (("iteration", ours_iteration, kaldi_iteration), ("align", ours_align, kaldi_align)):
            pairs = [(ours(jobs), kaldi(cmd)) for _ in range(args.runs)]
            a, b = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            print(f"{f'{name} nj={nj}':14} {a:9.3f} {b:8.3f} {statistics.median(p[0] / p[1] for p in pairs):6.2f}"
                  "   (target: at most 1.5x)")


if __name__ == "__main__":
    main()
