"""`asr-bn gmm`: the HMM-GMM ladder that gives the networks their targets (Kaldi's steps/train_*.sh, align_*.sh).

One subcommand per rung or tool, Kaldi's argument order and option names: `mono` (steps/train_mono.sh), `deltas`,
`lda-mllt`, `sat` (train_deltas.sh, train_lda_mllt.sh, train_sat.sh), `align` (steps/align_si.sh; with --loglikes,
steps/nnet/align.sh), `align-fmllr` (align_fmllr.sh), `likes` (gmm-compute-likes, to decode with the GMM),
`decode-fmllr` (decode_fmllr.sh: a speaker-adapted system's two-pass decoding).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from asr_bn.config import DecodeFmllrConfig
from asr_bn.ranges import Range
from asr_bn_cli.options import field_range, in_range

app = typer.Typer(help="HMM-GMM training and forced alignment (Kaldi's steps/train_mono.sh, align_si.sh), no Kaldi "
                       "binaries needed.", no_args_is_help=True)

_DATA = "An `asr-bn prep` output dir (feats.scp of fbank, text, utt2spk); GMM features are its MFCC-like cepstra " \
        "with per-speaker mean normalisation and deltas. A Kaldi data dir without pipeline.json (e.g. make_mfcc.sh's " \
        "MFCC) gives its feats.scp as they are, with the same normalisation and deltas."
_OOV = "Transcript words outside the lexicon: map (to the lang's oov.txt word, counted per word) or skip the " \
       "utterance (named)."
_POSITIVE, _COUNT = Range(0.0, low_open=True), Range(1)
_NJ_HELP = ("Kaldi's jobs: parts of the data (whole speakers, as utils/split_data.sh splits them), each worked on in a "
            "process of its own, side by side; one ali.N.gz per job where alignments are written.")
_Cache = Annotated[bool, typer.Option("--cache", help="Keep the GMM features in memory (faster passes); by default "
                                      "each pass reads them from feats.scp, for corpora of any size.")]


class OovPolicy(str, Enum):
    """What GMM training and alignment do with transcript words outside the lexicon."""

    map = "map"
    skip = "skip"


def _features(data: Path, cache: bool = False):  # noqa: ANN202 - (features, text)
    """The prepared dir's GMM features, computed per utterance when asked for, or kept in memory with `cache`."""
    from asr_bn.gmm.features import prepared_gmm_features

    feats, text, report = prepared_gmm_features(data, in_memory=cache)
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
    nj: Annotated[int, typer.Option("--nj", help=_NJ_HELP, callback=in_range(_COUNT))] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the flat start (the equal alignment of the first pass) "
                                      "and of the Gaussian splits: 0 draws Kaldi's own flat start (align-equal-compiled's"
                                      "), others other ones; the flat start alone moves a monophone's WER by a point or "
                                      "more.", callback=in_range(Range(0)))] = 0,
    first_ali: Annotated[Optional[Path], typer.Option("--first-ali", help="Alignments for the first pass instead of "
                                                      "the seed's flat start: a Kaldi archive or ali dir, e.g. "
                                                      "align-equal-compiled's output, to start as Kaldi did.")] = None,
    cache: _Cache = False,
) -> None:
    """Train a monophone HMM-GMM as steps/train_mono.sh, e.g. asr-bn gmm mono prep/train data/lang exp/mono"""
    from dataclasses import replace

    from asr_bn.gmm.mono import FAST_MONO, MonoConfig, train_mono
    from asr_bn.lang import read_lang

    cfg = replace(FAST_MONO if fast else MonoConfig(num_iters=num_iters, max_iter_inc=max_iter_inc,
                                                    total_gauss=totgauss),
                  boost_silence=boost_silence, oov_policy=oov_policy.value, seed=seed, num_jobs=nj)
    cfg.validate()
    lang_obj = read_lang(lang)
    first = None
    if first_ali is not None:
        from asr_bn.alignments import read_alignments

        first = {lab.utt: lab.values for lab in read_alignments(first_ali)}
    feats, text = _features(data, cache)
    _, report = train_mono(feats, text, lang_obj, exp_dir, cfg,
                           feature_info={"prep_dir": str(data.resolve()), "num_ceps": feats.num_ceps,
                                         "cmvn": "per-speaker means", "deltas": 2}, first_alignments=first)
    _print(report)


def _iters(text: str) -> tuple[int, ...]:
    """A Kaldi-style list of iterations, e.g. "10 20 30" (empty: none)."""
    try:
        return tuple(int(w) for w in text.replace(",", " ").split())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a list of iteration numbers such as '10 20 30'") from None


_Leaves = Annotated[int, typer.Argument(help="Most leaves of the tree (Kaldi's <num-leaves>).", callback=in_range(_COUNT))]
_Gauss = Annotated[int, typer.Argument(help="Gaussians to grow to (Kaldi's <tot-gauss>).", callback=in_range(_COUNT))]
_Lang = Annotated[Path, typer.Argument(help="Lang folder (asr-bn lang, or Kaldi's prepare_lang.sh).")]
_AliDir = Annotated[Path, typer.Argument(help="Alignments of the previous rung (final.mdl, tree, ali.*.gz).")]
_ExpDir = Annotated[Path, typer.Argument(help="Output: final.mdl, tree, ali.N.gz, num_jobs, treeacc, questions.int, "
                                         "iterations.jsonl, config.json, report.json (written last).")]
_NumIters = Annotated[int, typer.Option("--num-iters", help="Training passes.", callback=in_range(Range(2)))]
_MaxIterInc = Annotated[int, typer.Option("--max-iter-inc", help="Last pass that adds Gaussians.",
                                          callback=in_range(_COUNT))]
_Realign = Annotated[str, typer.Option("--realign-iters", help="Passes that realign first, e.g. '10 20 30'.")]
_Boost = Annotated[float, typer.Option("--boost-silence", help="Factor on silence likelihoods while aligning.",
                                       callback=in_range(_POSITIVE))]
_Power = Annotated[float, typer.Option("--power", help="Exponent of the occupancy that shares out Gaussians.",
                                       callback=in_range(_POSITIVE))]
_Cluster = Annotated[float, typer.Option("--cluster-thresh", help="Merge tree leaves costing less than this (-1: the "
                                         "smallest split made; 0: none).", callback=in_range(Range(-1.0)))]
_Fast = Annotated[bool, typer.Option("--fast", help="CI: 8 passes (realign at 3 6, transforms at 2 4); overrides "
                                     "--num-iters, --max-iter-inc and the iteration lists.")]
_Oov = Annotated[OovPolicy, typer.Option("--oov-policy", help=_OOV)]


def _rung_config(cls: type, fast: bool, num_leaves: int, tot_gauss: int, num_iters: int, max_iter_inc: int,
                 realign_iters: str, **options: object):  # noqa: ANN202 - a DeltasConfig subclass
    """The rung's config from the command line (`fast`: the CI schedule), checked."""
    from dataclasses import fields

    schedule = dict(num_iters=8, max_iter_inc=5, realign_iters=(3, 6)) if fast else dict(
        num_iters=num_iters, max_iter_inc=max_iter_inc, realign_iters=_iters(realign_iters))
    names = {f.name for f in fields(cls)}
    lists = {k: ((2, 4) if fast else _iters(v)) for k, v in options.items() if k.endswith("_iters")}
    rest = {k: (v.value if isinstance(v, Enum) else v) for k, v in options.items() if not k.endswith("_iters")}
    cfg = cls(num_leaves=num_leaves, tot_gauss=tot_gauss, **schedule, **{k: v for k, v in {**rest, **lists}.items()
                                                                          if k in names})
    cfg.validate()
    return cfg


@app.command("deltas")
def deltas(num_leaves: _Leaves, tot_gauss: _Gauss, data: Annotated[Path, typer.Argument(help=_DATA)], lang: _Lang,
           ali_dir: _AliDir, exp_dir: _ExpDir, num_iters: _NumIters = 35, max_iter_inc: _MaxIterInc = 25,
           realign_iters: _Realign = "10 20 30", boost_silence: _Boost = 1.0, power: _Power = 0.25,
           cluster_thresh: _Cluster = -1.0, fast: _Fast = False, oov_policy: _Oov = OovPolicy.map,
           cache: _Cache = False) -> None:
    """Train a triphone system on Δ+ΔΔ features as steps/train_deltas.sh, e.g.
    asr-bn gmm deltas 2000 10000 prep/train data/lang exp/mono_ali exp/tri1"""
    from asr_bn.gmm.train_deltas import DeltasConfig, train_deltas

    cfg = _rung_config(DeltasConfig, fast, num_leaves, tot_gauss, num_iters, max_iter_inc, realign_iters,
                       boost_silence=boost_silence, power=power, cluster_thresh=cluster_thresh, oov_policy=oov_policy)
    lang_obj, (feats, text) = _lang(lang), _features(data, cache)
    _print(train_deltas(feats, text, lang_obj, ali_dir, exp_dir, cfg)[1])


@app.command("lda-mllt")
def lda_mllt(num_leaves: _Leaves, tot_gauss: _Gauss, data: Annotated[Path, typer.Argument(help=_DATA)], lang: _Lang,
             ali_dir: _AliDir, exp_dir: _ExpDir, num_iters: _NumIters = 35, max_iter_inc: _MaxIterInc = 25,
             realign_iters: _Realign = "10 20 30", boost_silence: _Boost = 1.0, power: _Power = 0.25,
             cluster_thresh: _Cluster = -1.0, fast: _Fast = False, oov_policy: _Oov = OovPolicy.map,
             cache: _Cache = False,
             dim: Annotated[int, typer.Option("--dim", help="LDA output dimension.", callback=in_range(_COUNT))] = 40,
             splice_context: Annotated[int, typer.Option("--splice-context", help="Frames spliced on each side "
                                                         "(splice-feats --left/right-context).",
                                                         callback=in_range(Range(0)))] = 3,
             mllt_iters: Annotated[str, typer.Option("--mllt-iters", help="Passes that re-estimate MLLT.")] = "2 4 6 12",
             randprune: Annotated[float, typer.Option("--randprune", help="acc-lda / gmm-acc-mllt --rand-prune: "
                                                      "keep about 1/N of the frames, drawn as Kaldi draws them; 0 = "
                                                      "all.", callback=in_range(Range(0.0)))] = 4.0,
             ) -> None:
    """Train an LDA+MLLT triphone system as steps/train_lda_mllt.sh (writes final.mat), e.g.
    asr-bn gmm lda-mllt 2500 15000 prep/train data/lang exp/tri1_ali exp/tri2b"""
    from asr_bn.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt

    cfg = _rung_config(LdaMlltConfig, fast, num_leaves, tot_gauss, num_iters, max_iter_inc, realign_iters,
                       boost_silence=boost_silence, power=power, cluster_thresh=cluster_thresh, oov_policy=oov_policy,
                       dim=dim, context=splice_context, mllt_iters=mllt_iters, randprune=randprune)
    lang_obj, (feats, text) = _lang(lang), _features(data, cache)
    _print(train_lda_mllt(feats, text, lang_obj, ali_dir, exp_dir, cfg)[1])


@app.command("sat")
def sat(num_leaves: _Leaves, tot_gauss: _Gauss, data: Annotated[Path, typer.Argument(help=_DATA)], lang: _Lang,
        ali_dir: _AliDir, exp_dir: _ExpDir, num_iters: _NumIters = 35, max_iter_inc: _MaxIterInc = 25,
        realign_iters: _Realign = "10 20 30", boost_silence: _Boost = 1.0, power: _Power = 0.2,
        cluster_thresh: _Cluster = -1.0, fast: _Fast = False, oov_policy: _Oov = OovPolicy.map,
        cache: _Cache = False,
        fmllr_iters: Annotated[str, typer.Option("--fmllr-iters", help="Passes that re-estimate fMLLR.")] = "2 4 6 12",
        silence_weight: Annotated[float, typer.Option("--silence-weight", help="Weight of silence frames in fMLLR.",
                                                      callback=in_range(Range(0.0)))] = 0.0,
        ) -> None:
    """Train a speaker-adapted (fMLLR) system as steps/train_sat.sh (writes trans.1, final.alimdl), e.g.
    asr-bn gmm sat 2500 15000 prep/train data/lang exp/tri2b_ali exp/tri3b"""
    from asr_bn.gmm.sat import SatConfig, train_sat

    cfg = _rung_config(SatConfig, fast, num_leaves, tot_gauss, num_iters, max_iter_inc, realign_iters,
                       boost_silence=boost_silence, power=power, cluster_thresh=cluster_thresh, oov_policy=oov_policy,
                       fmllr_iters=fmllr_iters, silence_weight=silence_weight)
    lang_obj, (feats, text) = _lang(lang), _features(data, cache)
    _print(train_sat(feats, text, feats.utt2spk, lang_obj, ali_dir, exp_dir, cfg)[1])


@app.command("align-fmllr")
def align_fmllr(
    data: Annotated[Path, typer.Argument(help=_DATA)],
    lang: _Lang,
    src_dir: Annotated[Path, typer.Argument(help="A speaker-adapted system (asr-bn gmm sat): final.mdl, "
                                            "final.alimdl, tree, final.mat.")],
    ali_dir: Annotated[Path, typer.Argument(help="Output: ali.1.gz …, num_jobs, trans.1, final.mdl, tree, "
                                            "report.json (written last).")],
    nj: Annotated[int, typer.Option("--nj", help=_NJ_HELP, callback=in_range(_COUNT))] = 1,
    boost_silence: _Boost = 1.0,
    oov_policy: _Oov = OovPolicy.map,
    cache: _Cache = False,
) -> None:
    """Align with a speaker-adapted system as steps/align_fmllr.sh, e.g.
    asr-bn gmm align-fmllr prep/train data/lang exp/tri3b exp/tri3b_ali"""
    from asr_bn.gmm.sat import align_fmllr as run
    from asr_bn.gmm.align import AlignConfig

    cfg = AlignConfig(num_jobs=nj, boost_silence=boost_silence, oov_policy=oov_policy.value)
    lang_obj, (feats, text) = _lang(lang), _features(data, cache)
    _print(run(src_dir, feats, text, feats.utt2spk, lang_obj, ali_dir, cfg))


def _lang(path: Path):  # noqa: ANN202 - asr_bn.lang.Lang
    from asr_bn.lang import read_lang

    return read_lang(path)


def _refuse_adapted(src_dir: Path, command: str, instead: str) -> None:
    """A speaker-adapted system (final.alimdl) needs its speakers' fMLLR transforms, which align and likes do not
    estimate: one usage line pointing to the command that does (`instead`)."""
    if (src_dir / "final.alimdl").is_file():
        from asr_bn.errors import UsageError

        raise UsageError(f"{src_dir} is speaker-adapted (final.alimdl): `asr-bn gmm {command}` cannot estimate its "
                         f"speakers' fMLLR transforms; use {instead}")


def _system_features(feats: dict, src_dir: Path) -> dict:
    """The features a system in `src_dir` models: its final.mat (LDA+MLLT) applied, else the GMM features."""
    from asr_bn.gmm.sat import speaker_independent_features

    return speaker_independent_features(feats, src_dir)


@app.command("align")
def align(
    data: Annotated[Path, typer.Argument(help=_DATA)],
    lang: Annotated[Path, typer.Argument(help="Lang folder the model was trained with.")],
    src_dir: Annotated[Path, typer.Argument(help="Model dir (its final.mdl and tree).")],
    ali_dir: Annotated[Path, typer.Argument(help="Output: ali.1.gz … ali.N.gz, num_jobs, final.mdl, tree, "
                                            "phones.txt, topo, report.json (written last).")],
    nj: Annotated[int, typer.Option("--nj", help=_NJ_HELP, callback=in_range(_COUNT))] = 1,
    beam: Annotated[float, typer.Option("--beam", help="Alignment beam.", callback=in_range(_POSITIVE))] = 10.0,
    retry_beam: Annotated[float, typer.Option("--retry-beam", help="Beam of the retry when the first fails.",
                                              callback=in_range(_POSITIVE))] = 40.0,
    boost_silence: Annotated[float, typer.Option("--boost-silence", help="Factor on silence likelihoods.",
                                                 callback=in_range(_POSITIVE))] = 1.0,
    loglikes: Annotated[Optional[list[str]], typer.Option("--loglikes", help="scp of a network's log-likelihoods "
                                                          "(asr-bn forward) to align with instead of the GMM "
                                                          "(steps/nnet/align.sh); given several times, their "
                                                          "frame-by-frame mean (Kaldi's matrix-sum --average=true): "
                                                          "an ensemble's alignment.")] = None,
    oov_policy: Annotated[OovPolicy, typer.Option("--oov-policy", help=_OOV)] = OovPolicy.map,
    cache: _Cache = False,
) -> None:
    """Force-align with a trained model as steps/align_si.sh, e.g.
    asr-bn gmm align prep/train data/lang exp/mono exp/mono_ali --nj 4"""
    from asr_bn.decode import MeanLoglikes
    from asr_bn.gmm.align import AlignConfig, align as run
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.lang import read_lang

    if not loglikes:
        _refuse_adapted(src_dir, "align", "`asr-bn gmm align-fmllr`")
    cfg = AlignConfig(beam=beam, retry_beam=retry_beam, boost_silence=boost_silence, num_jobs=nj,
                      oov_policy=oov_policy.value)
    lang_obj = read_lang(lang)
    system = GmmSystem.load(src_dir / "final.mdl")
    feats, text = _features(data, cache)
    if loglikes:
        feats = MeanLoglikes(loglikes)  # read utterance by utterance: any set size
    else:
        feats = _system_features(feats, src_dir)
        system.check_features(feats, src_dir / "final.mdl")
    _print(run(system, feats, text, lang_obj, ali_dir, cfg, network=bool(loglikes)))
    if not loglikes:
        from asr_bn.gmm.lda_mllt import copy_feature_transform

        copy_feature_transform(src_dir, ali_dir)


@app.command("likes")
def likes(
    data: Annotated[Path, typer.Argument(help=_DATA)],
    src_dir: Annotated[Path, typer.Argument(help="Model dir (its final.mdl).")],
    out_dir: Annotated[Path, typer.Argument(help="Output: loglikes.ark, loglikes.scp.")],
    transform_dir: Annotated[Optional[Path], typer.Option("--transform-dir", help="Apply the speakers' fMLLR "
                                                          "transforms trans.* of this dir (asr-bn gmm decode-fmllr "
                                                          "or align-fmllr on these utterances), as Kaldi's decode.sh "
                                                          "--transform-dir.")] = None,
) -> None:
    """Per-frame log-likelihoods of every pdf (gmm-compute-likes), for `asr-bn decode` with the GMM, e.g.
    asr-bn gmm likes prep/test exp/mono exp/mono/decode_test"""
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.io import write_ark_scp

    if transform_dir is None:
        _refuse_adapted(src_dir, "likes", "`asr-bn gmm decode-fmllr`, or give --transform-dir (the trans.* of a "
                        "decode-fmllr or align-fmllr dir)")
    system = GmmSystem.load(src_dir / "final.mdl")
    prepared = _features(data)[0]
    feats = _system_features(prepared, src_dir)
    system.check_features(feats, src_dir / "final.mdl")
    if transform_dir is not None:
        from asr_bn.gmm.sat import speaker_adapted_features

        feats = speaker_adapted_features(feats, transform_dir, prepared.utt2spk)
    n = write_ark_scp(out_dir / "loglikes.ark", out_dir / "loglikes.scp",
                      ((utt, system.log_likelihoods(f)) for utt, f in feats.items()))
    typer.echo(f"wrote log-likelihoods of {n} utterances to {out_dir}/loglikes.scp")


_F = "Decoding (steps/decode_fmllr.sh's defaults)"


@app.command("decode-fmllr")
def decode_fmllr(
    graph_dir: Annotated[Path, typer.Argument(help="Graph dir of this system (asr-bn mkgraph or Kaldi's mkgraph.sh): "
                                              "HCLG.fst, words.txt, phones/silence.csl.")],
    data: Annotated[Path, typer.Argument(help=_DATA)],
    src_dir: Annotated[Path, typer.Argument(help="The speaker-adapted system (asr-bn gmm sat): final.mdl, "
                                            "final.alimdl, tree, final.mat (Kaldi takes the decode dir's parent).")],
    out_dir: Annotated[Path, typer.Argument(help="Output: trans.1, num_jobs, lat.ark/.scp, text, hyp_LMWT, "
                                            "report.json (last); the speaker-independent pass goes to OUT_DIR.si.")],
    acwt: Annotated[float, typer.Option("--acwt", help="Acoustic scale of decoding and of the fMLLR posteriors.",
                                        rich_help_panel=_F,
                                        callback=field_range(DecodeFmllrConfig, "acwt"))] = 0.083333,
    first_beam: Annotated[float, typer.Option("--first-beam", help="Beam of the speaker-independent pass.",
                                              rich_help_panel=_F,
                                              callback=field_range(DecodeFmllrConfig, "first_beam"))] = 10.0,
    beam: Annotated[float, typer.Option("--beam", help="Beam of the adapted pass.", rich_help_panel=_F,
                                        callback=field_range(DecodeFmllrConfig, "beam"))] = 13.0,
    lattice_beam: Annotated[float, typer.Option("--lattice-beam", help="Lattice pruning beam.", rich_help_panel=_F,
                                                callback=field_range(DecodeFmllrConfig, "lattice_beam"))] = 6.0,
    silence_weight: Annotated[float, typer.Option("--silence-weight", help="Weight of silence frames in the fMLLR "
                                                  "statistics.", rich_help_panel=_F,
                                                  callback=field_range(DecodeFmllrConfig, "silence_weight"))] = 0.01,
    fmllr_min_count: Annotated[float, typer.Option("--fmllr-min-count", help="A speaker with fewer weighted frames "
                                                   "keeps the identity transform (counted).", rich_help_panel=_F,
                                                   callback=field_range(DecodeFmllrConfig, "fmllr_min_count"))] = 500.0,
    lmwt: Annotated[Optional[str], typer.Option("--lmwt", help="Also write hyp_LMWT for each LM weight of this range, "
                                                "e.g. 7:17 (score.sh's sweep).")] = None,
    nj: Annotated[int, typer.Option("--nj", help=_NJ_HELP, callback=in_range(_COUNT))] = 1,
    cache: _Cache = False,
) -> None:
    """Decode with a speaker-adapted system in two passes with fMLLR as steps/decode_fmllr.sh, e.g.
    asr-bn gmm decode-fmllr exp/tri3b/graph prep/test exp/tri3b exp/tri3b/decode_test --lmwt 7:17"""
    from asr_bn.gmm.decode_fmllr import decode_fmllr as run
    from asr_bn_cli.decode import lmwt_range

    cfg = DecodeFmllrConfig(acwt=acwt, first_beam=first_beam, beam=beam, lattice_beam=lattice_beam,
                            silence_weight=silence_weight, fmllr_min_count=fmllr_min_count, lmwt=lmwt_range(lmwt),
                            num_jobs=nj)
    feats, _ = _features(data, cache)
    _print(run(graph_dir, feats, feats.utt2spk, src_dir, out_dir, cfg))


@app.command("fmllr-feats")
def fmllr_feats(
    data: Annotated[Path, typer.Argument(help="An `asr-bn prep` output dir (fbank, text, utt2spk): the features the "
                                         "SAT system's GMM features are computed from.")],
    src_dir: Annotated[Path, typer.Argument(help="The speaker-adapted system (asr-bn gmm sat): final.mat, final.mdl.")],
    out_dir: Annotated[Path, typer.Argument(help="Output: a prepared dir of the adapted features (feats.ark/.scp, "
                                            "utt2num_frames, data files, pipeline.json, report.json last).")],
    transform_dir: Annotated[Path, typer.Option("--transform-dir", help="The speakers' fMLLR transforms trans.* "
                                                "(align-fmllr or decode-fmllr on these utterances).")],
    ali_dir: Annotated[Optional[Path], typer.Option("--ali-dir", help="Join these alignments' pdf-ids as targets "
                                                    "(pdf.scp), as asr-bn prep --ali-dir.")] = None,
    delta_order: Annotated[int, typer.Option("--delta-order", help="Δ orders the network adds (0: none, as nnet1 "
                                             "on fMLLR features).", callback=in_range(Range(0, 2)))] = 0,
    append_fbank: Annotated[bool, typer.Option("--append-fbank", help="Append each frame's fbank (DATA's own, after "
                                               "its CMVN, without Δ) to the adapted features, as Kaldi's paste-feats "
                                               "of the two: the network reads both.")] = False,
) -> None:
    """Speaker-adapted features of a SAT system for a network as steps/nnet/make_fmllr_feats.sh, e.g.
    asr-bn gmm fmllr-feats prep/train exp/tri3b prep/train_fmllr --transform-dir exp/tri3b_ali"""
    from asr_bn.gmm.fmllr_feats import write_fmllr_feats

    report, targets = write_fmllr_feats(data, src_dir, transform_dir, out_dir, delta_order=delta_order, ali_dir=ali_dir,
                                        append_fbank=append_fbank)
    for one in (report, targets):
        if one is not None:
            _print(one)
