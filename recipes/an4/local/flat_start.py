#!/usr/bin/env python3
"""The flat start asr-bn's monophone draws (docs/RESULTS.md, the word-loop gap), for Kaldi's train_mono.sh to start from.

    flat_start.py FEATS LANG SEED ALI_DIR    # asr-bn's equal alignment of seed SEED as ALI_DIR/ali.1.gz

FEATS: a Kaldi data dir or `asr-bn prep` dir (its GMM features, as `asr-bn gmm mono` reads them); LANG: the lang dir.
The other direction needs no script: `asr-bn gmm mono FEATS LANG EXP --first-ali ALI` trains from given alignments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.gmm.align import write_alignments
from asr_bn.gmm.features import prepared_gmm_features
from asr_bn.gmm.mono import MonoConfig, flat_start
from asr_bn.lang import read_lang


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    feats_dir, lang_dir, seed, out = sys.argv[1:]
    feats, text, _ = prepared_gmm_features(feats_dir)
    alis = flat_start(feats, text, read_lang(lang_dir), MonoConfig(seed=int(seed)))
    Path(out).mkdir(parents=True, exist_ok=True)
    write_alignments(out, alis)


if __name__ == "__main__":
    try:
        main()
    except AsrBnError as e:
        raise SystemExit(f"flat_start.py: {e}") from None
