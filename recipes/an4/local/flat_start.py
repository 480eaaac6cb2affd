#!/usr/bin/env python3
"""The monophone's flat start, shared between asr-bn and Kaldi (docs/RESULTS.md, the word-loop gap).

    flat_start.py ali  FEATS LANG SEED OUT_ALI    # asr-bn's equal alignment of seed SEED, a Kaldi text archive
    flat_start.py mono FEATS LANG ALI OUT_DIR     # asr-bn's monophone (Kaldi's defaults) from the first-pass ALI

FEATS: a Kaldi data dir or `asr-bn prep` dir (its GMM features, as `asr-bn gmm mono` reads them); LANG: the lang dir;
ALI: a text archive of transition-ids per utterance (e.g. Kaldi's align-equal-compiled output, ark,t).
"""

from __future__ import annotations

import sys
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.gmm.features import prepared_gmm_features
from asr_bn.gmm.mono import MonoConfig, flat_start, train_mono
from asr_bn.io import write_text
from asr_bn.lang import read_lang


def read_ali_text(path: Path) -> dict[str, list[int]]:
    """utt → transition-ids of a Kaldi text alignment archive (one utterance per line)."""
    try:
        return {w[0]: [int(t) for t in w[1:]] for w in (line.split() for line in path.read_text().splitlines()) if w}
    except (OSError, ValueError) as e:
        raise AsrBnError(f"{path}: not a readable text archive of transition-ids ({e}); write it with ark,t:") from e


def main() -> None:
    if len(sys.argv) != 6 or sys.argv[1] not in ("ali", "mono"):
        raise SystemExit(__doc__)
    what, feats_dir, lang_dir, arg, out = sys.argv[1:]
    feats, text, _ = prepared_gmm_features(feats_dir)
    lang = read_lang(lang_dir)
    if what == "ali":
        alis = flat_start(feats, text, lang, MonoConfig(seed=int(arg)))
        write_text(Path(out), "".join(f"{u} {' '.join(map(str, a))}\n" for u, a in sorted(alis.items())))
    else:
        train_mono(feats, text, lang, out, MonoConfig(), first_alignments=read_ali_text(Path(arg)))


if __name__ == "__main__":
    try:
        main()
    except AsrBnError as e:
        raise SystemExit(f"flat_start.py: {e}") from None
