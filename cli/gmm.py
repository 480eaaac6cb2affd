"""`asr-bn gmm`: the HMM-GMM ladder that gives the networks their targets (Kaldi's steps/train_*.sh, align_si.sh).

One subcommand per rung or tool, Kaldi's argument order and option names: `mono` (steps/train_mono.sh), `align`
(steps/align_si.sh; with --loglikes, steps/nnet/align.sh), `likes` (gmm-compute-likes, to decode with the GMM).
Later rungs (deltas, lda-mllt, sat) join this group the same way.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from asr_bn.config import Range
from asr_bn_cli.options import in_range

app = typer.Typer(help="HMM-GMM training and forced alignment (Kaldi's steps/train_mono.sh, align_si.sh), no Kaldi "
                       "binaries needed.", no_args_is_help=True)

_DATA = "An `asr-bn prep` output dir (feats.scp of fbank, text, utt2spk); GMM features are its MFCC-like cepstra " \
        "with per-speaker mean normalisation and deltas."
_OOV = "Transcript words outside the lexicon: map (to the lang's oov.txt word, counted per word) or skip the " \
       "utterance (named)."
_POSITIVE, _COUNT = Range(0.0, low_open=True), Range(1)


class OovPolicy(str, Enum):
    """What GMM training and alignment do with transcript words outside the lexicon."""

    map = "map"
    skip = "skip"


def _features(data: Path):  # noqa: ANN202 - (features, text)
    from asr_bn.hmm_gmm import prepared_gmm_features

    feats, text, report = prepared_gmm_features(data)
    for line in report.lines():
        typer.echo(line, err=True)
    return feats, text


def _print(report) -> None:  # noqa: ANN001 - asr_bn.report.Report
    for line in report.lines():
        typer.echo(line)


@app.command("mono")
def mono(
    data: Annotated[Path, typer.Argument(help=_DATA)],
    lang: Annotated[Path, typer.Argument(help="Lang folder (asr-bn lang, or Kaldi's prepare_lang.sh).")],
    exp_dir: Annotated[Path, typer.Argument(help="Output: final.mdl, tree, phones.txt, topo, iterations.jsonl, "
                                            "config.json, report.json (written last).")],
    num_iters: Annotated[int, typer.Option("--num-iters", help="Training iterations.",
                                           callback=in_range(_COUNT))] = 40,
    max_iter_inc: Annotated[int, typer.Option("--max-iter-inc", help="Gaussians grow until this iteration.",
                                              callback=in_range(Range(0)))] = 30,
    totgauss: Annotated[int, typer.Option("--totgauss", help="Target number of Gaussians.",
                                          callback=in_range(_COUNT))] = 1000,
    boost_silence: Annotated[float, typer.Option("--boost-silence", help="Factor on silence likelihoods while "
                                                 "aligning.", callback=in_range(_POSITIVE))] = 1.0,
    fast: Annotated[bool, typer.Option("--fast", help="CI: 10 iterations, 300 Gaussians (rougher alignments); "
                                       "overrides the three options above.")] = False,
    oov_policy: Annotated[OovPolicy, typer.Option("--oov-policy", help=_OOV)] = OovPolicy.map,
) -> None:
    """Train a monophone HMM-GMM as steps/train_mono.sh, e.g. asr-bn gmm mono prep/train data/lang exp/mono"""
    from dataclasses import replace

    from asr_bn.hmm_gmm import FAST_MONO, MonoConfig, train_mono
    from asr_bn.lang import read_lang

    cfg = replace(FAST_MONO if fast else MonoConfig(num_iters=num_iters, max_iter_inc=max_iter_inc,
                                                    total_gauss=totgauss),
                  boost_silence=boost_silence, oov_policy=oov_policy.value)
    cfg.validate()
    lang_obj = read_lang(lang)
    feats, text = _features(data)
    _, report = train_mono(feats, text, lang_obj, exp_dir, cfg,
                           feature_info={"prep_dir": str(data.resolve()), "num_ceps": 13,
                                         "cmvn": "per-speaker means", "deltas": 2})
    _print(report)


@app.command("align")
def align(
    data: Annotated[Path, typer.Argument(help=_DATA)],
    lang: Annotated[Path, typer.Argument(help="Lang folder the model was trained with.")],
    src_dir: Annotated[Path, typer.Argument(help="Model dir (its final.mdl and tree).")],
    ali_dir: Annotated[Path, typer.Argument(help="Output: ali.1.gz … ali.N.gz, num_jobs, final.mdl, tree, "
                                            "phones.txt, topo, report.json (written last).")],
    nj: Annotated[int, typer.Option("--nj", help="Number of ali.N.gz archives.", callback=in_range(_COUNT))] = 1,
    beam: Annotated[float, typer.Option("--beam", help="Alignment beam.", callback=in_range(_POSITIVE))] = 10.0,
    retry_beam: Annotated[float, typer.Option("--retry-beam", help="Beam of the retry when the first fails.",
                                              callback=in_range(_POSITIVE))] = 40.0,
    boost_silence: Annotated[float, typer.Option("--boost-silence", help="Factor on silence likelihoods.",
                                                 callback=in_range(_POSITIVE))] = 1.0,
    loglikes: Annotated[Optional[str], typer.Option("--loglikes", help="scp of a network's log-likelihoods "
                                                    "(asr-bn forward) to align with instead of the GMM "
                                                    "(steps/nnet/align.sh).")] = None,
    oov_policy: Annotated[OovPolicy, typer.Option("--oov-policy", help=_OOV)] = OovPolicy.map,
) -> None:
    """Force-align with a trained model as steps/align_si.sh, e.g.
    asr-bn gmm align prep/train data/lang exp/mono exp/mono_ali --nj 4"""
    from asr_bn.decode import read_loglikes
    from asr_bn.hmm_gmm import AlignConfig, GmmSystem
    from asr_bn.hmm_gmm import align as run
    from asr_bn.lang import read_lang

    cfg = AlignConfig(beam=beam, retry_beam=retry_beam, boost_silence=boost_silence, num_jobs=nj,
                      oov_policy=oov_policy.value)
    lang_obj = read_lang(lang)
    system = GmmSystem.load(src_dir / "final.mdl")
    feats, text = _features(data)
    if loglikes:
        feats = dict(read_loglikes(loglikes))
    _print(run(system, feats, text, lang_obj, ali_dir, cfg, network=bool(loglikes)))


@app.command("likes")
def likes(
    data: Annotated[Path, typer.Argument(help=_DATA)],
    src_dir: Annotated[Path, typer.Argument(help="Model dir (its final.mdl).")],
    out_dir: Annotated[Path, typer.Argument(help="Output: loglikes.ark, loglikes.scp.")],
) -> None:
    """Per-frame log-likelihoods of every pdf (gmm-compute-likes), for `asr-bn decode` with the GMM, e.g.
    asr-bn gmm likes prep/test exp/mono exp/mono/decode_test"""
    from asr_bn.hmm_gmm import GmmSystem
    from asr_bn.io import write_ark_scp

    system = GmmSystem.load(src_dir / "final.mdl")
    feats, _ = _features(data)
    n = write_ark_scp(out_dir / "loglikes.ark", out_dir / "loglikes.scp",
                      ((utt, system.log_likelihoods(f)) for utt, f in feats.items()))
    typer.echo(f"wrote log-likelihoods of {n} utterances to {out_dir}/loglikes.scp")
