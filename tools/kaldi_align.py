"""asr-bn's forced alignments against Kaldi's on the same system: Kaldi's compile-train-graphs + gmm-align-compiled
with asr-bn's model, tree and lexicon, on features Kaldi computes itself from the same static cepstra (add-deltas
for a deltas system; splice-feats + transform-feats with the system's final.mat for LDA+MLLT), and the share of
frames on which both chose the same transition-id (issue 12: at least 99 %). The tests run it on the synthesized
corpus; on a recipe's working dir (recipes/an4/run.sh --gmm sat … --stop-stage 4) it measures AN4's training set:

    python tools/kaldi_align.py RUN_DIR exp/tri1 exp/tri2b        # needs ../shared/kaldi beside the repository
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:
    from asr_bn.lang import Lang

REPO = Path(__file__).resolve().parents[1]
KALDI = REPO.parent / "shared" / "kaldi"


def kaldi_alignments(bundle: Path, system_dir: Path, gmm_feats: Mapping[str, np.ndarray], text: Mapping[str, str],
                     lang: Lang, work: Path) -> dict[str, np.ndarray]:
    """Kaldi's alignments (utterance → transition-ids) of `text` with the system in `system_dir` (final.mdl, tree,
    final.mat if LDA+MLLT), its features made by Kaldi's tools from the static cepstra of `gmm_feats`."""
    import kaldiio

    from asr_bn.lang import lexicon_fst

    work.mkdir(parents=True, exist_ok=True)
    static = {u: np.ascontiguousarray(f[:, : f.shape[1] // 3]) for u, f in gmm_feats.items()}  # cepstra, not Δ+ΔΔ
    kaldiio.save_ark(str(work / "static.ark"), static)
    mat = system_dir / "final.mat"
    if mat.is_file():
        context = (kaldiio.load_mat(str(mat)).shape[1] // next(iter(static.values())).shape[1] - 1) // 2
        feats = (f"ark:splice-feats --left-context={context} --right-context={context} ark:{work / 'static.ark'} "
                 f"ark:- | transform-feats {mat} ark:- ark:- |")
    else:
        feats = f"ark:add-deltas ark:{work / 'static.ark'} ark:- |"
    lexicon_fst(lang, 0.5).write(str(work / "L.fst"))
    (work / "disambig.int").write_text("".join(f"{i}\n" for i in lang.disambig_phone_ids))
    oov = lang.words.get(str(lang.oov), 0)  # words outside the lexicon: the OOV word, as asr-bn's --oov-policy map
    (work / "text.int").write_text("".join(f"{u} {' '.join(str(lang.words.get(w, oov)) for w in text[u].split())}\n"
                                           for u in sorted(text) if u in gmm_feats))
    env = {**os.environ, "PATH": f"{bundle / 'bin'}:{os.environ['PATH']}", "LC_ALL": "C", "OPENBLAS_NUM_THREADS": "1"}
    script = (f"compile-train-graphs --read-disambig-syms={work / 'disambig.int'} {system_dir / 'tree'} "
              f"{system_dir / 'final.mdl'} {work / 'L.fst'} ark:{work / 'text.int'} ark:- | "
              f"gmm-align-compiled --transition-scale=1.0 --acoustic-scale=0.1 --self-loop-scale=0.1 --beam=10 "
              f"--retry-beam=40 {system_dir / 'final.mdl'} ark:- '{feats}' ark,t:-")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Kaldi's alignment failed: {done.stderr[-2000:]}")
    return {line.split()[0]: np.array(line.split()[1:], int) for line in done.stdout.splitlines()}


def agreement(ours: Mapping[str, np.ndarray], kaldi: Mapping[str, np.ndarray]) -> tuple[float, int, int]:
    """(share of frames with the same transition-id, utterances aligned by one side only, frames compared) over the
    utterances both aligned."""
    both = sorted(set(ours) & set(kaldi))
    same = sum(int((np.asarray(ours[u]) == kaldi[u]).sum()) for u in both if len(ours[u]) == len(kaldi[u]))
    frames = sum(len(kaldi[u]) for u in both)
    return same / max(frames, 1), len(set(ours) ^ set(kaldi)), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a recipes/any/run.sh working dir (prep/train, data/lang)")
    parser.add_argument("systems", nargs="+", help="system dirs under it, e.g. exp/tri1 exp/tri2b")
    args = parser.parse_args()
    if not (KALDI / "bin").is_dir():
        sys.exit(f"{KALDI} is absent: the comparison needs Kaldi's binaries")
    from asr_bn.alignments import read_alignments
    from asr_bn.gmm.align import AlignConfig, align
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.gmm.sat import speaker_independent_features
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.lang import read_lang

    run = args.run_dir
    feats, text, _ = prepared_gmm_features(run / "prep" / "train", in_memory=True)
    lang = read_lang(run / "data" / "lang")

    for name in args.systems:
        system_dir = run / name
        with tempfile.TemporaryDirectory() as tmp:
            align(GmmSystem.load(system_dir / "final.mdl"), speaker_independent_features(feats, system_dir), text,
                  lang, Path(tmp) / "ali", AlignConfig())
            ours = {labels.utt: labels.values for labels in read_alignments(Path(tmp) / "ali")}
            kaldi = kaldi_alignments(KALDI, system_dir, feats, text, lang, Path(tmp) / "kaldi")
        share, one_side, frames = agreement(ours, kaldi)
        print(f"{name}: {100 * share:.2f} % of {frames} frames on the same transition-id as gmm-align-compiled "
              f"({round(frames * (1 - share))} differ; {len(ours)} utterances aligned by asr-bn, {len(kaldi)} by "
              f"Kaldi, {one_side} by one side only)")


if __name__ == "__main__":
    main()
