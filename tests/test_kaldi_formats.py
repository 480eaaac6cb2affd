"""Every file asr-bn writes for Kaldi, read by the real Kaldi binary that reads it (../shared/kaldi): features
(copy-feats, feat-to-len), CMVN stats (compute-cmvn-stats, apply-cmvn + add-deltas against asr-bn's own pipeline),
alignments, pdf targets and counts (ali-to-pdf, copy-int-vector, analyze-counts, copy-vector), models and trees
(hmm-info, gmm-info, gmm-compute-likes, copy-transition-model, tree-info, copy-tree), hypotheses (compute-wer); and
the other direction, Kaldi's compute-fbank-feats against `asr-bn prep` on real 8 kHz and 16 kHz speech. Each test
skips with a reason when the Kaldi bundle or the real data is absent."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import run_kaldi_bytes, yesno_gmm_inputs
from test_data import an4_wavs, kaldi_files, write_dir
from test_features import _assert_linear_close, _assert_log_close
from typer.testing import CliRunner

from asr_bn.alignments import count_pdfs, read_alignments, read_transition_model, write_counts
from asr_bn.batching import UtteranceDataset
from asr_bn.features import FbankConfig
from asr_bn.gmm.align import align, AlignConfig
from asr_bn.gmm.mono import MonoConfig, train_mono
from asr_bn.gmm.system import GmmSystem
from asr_bn.io import read_matrix
from asr_bn.lang import read_lang
from asr_bn.synth import CorpusPaths, synthesize_corpus
from asr_bn_cli.main import build_app

app = build_app()

runner = CliRunner()


def _prep(data_dir: Path, out: Path, *options: str | Path) -> Path:
    result = runner.invoke(app, ["prep", "kaldi", str(data_dir), str(out), "--dither", "0", *map(str, options)])
    assert result.exit_code == 0, result.output
    return out


def _ark(data: bytes) -> dict[str, np.ndarray]:
    """A binary Kaldi archive written by a Kaldi binary to stdout, as {key: array}."""
    return dict(kaldiio.load_ark(io.BytesIO(data)))


@pytest.fixture
def kaldi(kaldi_bundle: Path) -> Callable[..., bytes]:
    """`run_kaldi_bytes` on the bundle: kaldi("copy-feats", …, stdin=b"…") gives stdout bytes (skips without it)."""
    return functools.partial(run_kaldi_bytes, kaldi_bundle)


@pytest.fixture
def an4_dir(tmp_path: Path, an4_root: Path) -> Path:
    """4 real AN4 utterances (16 kHz) of 2 speakers, absolute wav paths."""
    return write_dir(tmp_path / "an4", kaldi_files(an4_wavs(an4_root, 4)))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> CorpusPaths:
    """The demo's synthetic corpus, smallest form: data dirs, lang, Kaldi alignment dirs (final.mdl, tree, ali)."""
    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "corpus", seed=3, size="small", num_speakers=3)


@pytest.fixture(scope="module")
def synth_targets(synth: CorpusPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synth's training set through `asr-bn prep kaldi --ali-dir exp/ali_train` (features + pdf.ark/.scp)."""
    return _prep(synth.data["train"], tmp_path_factory.mktemp("synth_prep") / "train", "--ali-dir", synth.ali["train"])


@pytest.fixture(scope="module")
def mono(yesno_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """asr_bn.gmm.mono's monophone system trained on 8 yesno utterances (exp dir), its alignment dir (2 jobs), and
    the GMM features it was trained on."""
    feats, text = yesno_gmm_inputs(yesno_root, 8)
    lang = read_lang(yesno_root / "data" / "lang")
    root = tmp_path_factory.mktemp("mono")
    config = MonoConfig(num_iters=3, max_iter_inc=2, total_gauss=30, realign_iters=(1,))
    system, _ = train_mono(feats, text, lang, root / "mono", config)
    report = align(system, feats, text, lang, root / "mono_ali", AlignConfig(num_jobs=2))
    assert report.counts["aligned"] == 8
    return root / "mono", root / "mono_ali", feats


# ---------------------------------------------------------------------------------------------------------------
# Features and CMVN


@pytest.mark.parametrize("compress", [False, True], ids=["float", "compressed"])
def test_copy_feats_reads_prep_features(
    kaldi: Callable[..., bytes], an4_dir: Path, tmp_path: Path, compress: bool
) -> None:
    """copy-feats reads feats.scp (plain or Kaldi-compressed) to the matrices asr-bn's reader gives, bit for bit
    (plain ones also kaldiio's; kaldiio expands compressed ones up to 3 ulp off Kaldi, read_matrix as Kaldi does);
    feat-to-len gives utt2num_frames; compute-cmvn-stats on feats.scp the per-speaker stats of cmvn.scp."""
    out = _prep(an4_dir, tmp_path / "prep", *(["--compress"] if compress else []))
    scp = out / "feats.scp"
    ours = {u: read_matrix(loc, scp, u) for u, loc in (line.split() for line in scp.read_text().splitlines())}
    theirs = _ark(kaldi("copy-feats", f"scp:{scp}", "ark:-"))
    assert list(theirs) == list(ours) and len(ours) == 4
    for utt, mat in kaldiio.load_scp(str(scp)).items():
        np.testing.assert_array_equal(theirs[utt], ours[utt])
        if not compress:
            np.testing.assert_array_equal(theirs[utt], mat)
    lengths = kaldi("feat-to-len", f"scp:{out / 'feats.scp'}", "ark,t:-").decode()
    assert lengths.split() == (out / "utt2num_frames").read_text().split()
    stats = _ark(kaldi("compute-cmvn-stats", f"--spk2utt=ark:{out / 'spk2utt'}", f"scp:{out / 'feats.scp'}",
                            "ark:-"))
    cmvn = kaldiio.load_scp(str(out / "cmvn.scp"))
    assert sorted(stats) == sorted(cmvn) == ["fash", "fbbh"]
    for spk in stats:
        np.testing.assert_allclose(cmvn[spk], stats[spk], rtol=1e-9)  # sums of the same floats, in double


@pytest.mark.parametrize("norm_vars", [False, True], ids=["means", "norm-vars"])
@pytest.mark.parametrize("mode", ["speaker", "utterance", "global"])
def test_apply_cmvn_and_add_deltas_equal_the_pipeline(
    kaldi: Callable[..., bytes], an4_dir: Path, tmp_path: Path, mode: str, norm_vars: bool
) -> None:
    """Kaldi's `apply-cmvn [--norm-vars] [--utt2spk] scp:cmvn.scp scp:feats.scp | add-deltas` on a prepared dir gives
    the features asr-bn trains and decodes on (its FeaturePipeline through UtteranceDataset); global stats are
    given to apply-cmvn as the one matrix cmvn.scp points at (`cmvn.ark:offset`)."""
    out = _prep(an4_dir, tmp_path / "prep", "--cmvn", mode, *(["--norm-vars"] if norm_vars else []))
    apply = ["apply-cmvn", *(["--norm-vars=true"] if norm_vars else [])]
    apply += [f"--utt2spk=ark:{out / 'utt2spk'}"] if mode == "speaker" else []
    stats = f"scp:{out / 'cmvn.scp'}" if mode != "global" else (out / "cmvn.scp").read_text().split()[1]
    apply += [stats, f"scp:{out / 'feats.scp'}", "ark:-"]
    theirs = _ark(kaldi("add-deltas", f"ark:{' '.join(apply)} |", "ark:-"))
    dataset = UtteranceDataset(out, num_pdfs=1, targets=False)
    assert dataset.utts == list(theirs)
    for i, utt in enumerate(dataset.utts):
        ours = dataset[i][0].numpy()
        assert ours.shape == theirs[utt].shape == (len(ours), 120)
        np.testing.assert_allclose(ours, theirs[utt], rtol=0, atol=1e-5, err_msg=utt)  # float32 rounding: ~2e-6


@pytest.mark.parametrize("corpus", ["yesno-8k", "an4-16k", "an4-16k-linear"])
def test_compute_fbank_feats_agrees_with_prep(
    kaldi: Callable[..., bytes], yesno_root: Path, an4_root: Path, tmp_path: Path, corpus: str
) -> None:
    """Kaldi's compute-fbank-feats and `asr-bn prep` on the same real audio and Kaldi fbank.conf (dither 0; energy,
    HTK order, no snip-edges: the options that move frames and columns; linear mel energies), by the feature tests'
    criteria against kaldi-native-fbank (log values near each frame's maximum and the energy; linear ones relative
    to the frame's total)."""
    if corpus == "yesno-8k":
        waves = sorted((yesno_root / "waves_yesno").glob("*.wav"))[:3]
        data_dir = write_dir(tmp_path / "yesno", kaldi_files([(w.stem, "global", w) for w in waves]))
        conf = "--sample-frequency=8000\n--num-mel-bins=23\n"
    elif corpus == "an4-16k":
        data_dir = write_dir(tmp_path / "an4", kaldi_files(an4_wavs(an4_root, 3)))
        conf = "--num-mel-bins=40\n--use-energy=true\n--htk-compat=true\n--snip-edges=false\n"
    else:
        data_dir = write_dir(tmp_path / "an4", kaldi_files(an4_wavs(an4_root, 3)))
        conf = "--use-log-fbank=false\n--use-power=false\n--use-energy=true\n"
    (tmp_path / "fbank.conf").write_text(conf + "--dither=0\n")
    out = _prep(data_dir, tmp_path / "prep", "--config", tmp_path / "fbank.conf")
    theirs = _ark(kaldi("compute-fbank-feats", f"--config={tmp_path / 'fbank.conf'}",
                             f"scp:{data_dir / 'wav.scp'}", "ark:-"))
    ours = kaldiio.load_scp(str(out / "feats.scp"))
    cfg = FbankConfig.from_kaldi_conf(tmp_path / "fbank.conf")
    assert sorted(theirs) == sorted(ours) and len(ours) == 3
    for utt in ours:
        close = _assert_log_close if cfg.use_log_fbank else _assert_linear_close
        close(torch.from_numpy(np.array(ours[utt])), theirs[utt], cfg)


# ---------------------------------------------------------------------------------------------------------------
# Alignments, pdf targets, models, trees


def _ali_to_pdf(kaldi: Callable[..., bytes], model: Path, ali: list[Path]) -> dict[str, np.ndarray]:
    gz = " ".join(map(str, ali))
    return _ark(kaldi("ali-to-pdf", model, f"ark:gunzip -c {gz} |", "ark:-"))


def test_ali_to_pdf_reads_every_alignment_asr_bn_writes(
    kaldi: Callable[..., bytes], synth: CorpusPaths, synth_targets: Path, mono: tuple
) -> None:
    """ali-to-pdf on the synth's exp/ali_{train,dev} and the monophone aligner's ali.{1,2}.gz gives the pdfs of
    asr-bn's own reading; `prep --ali-dir`'s pdf.scp holds exactly ali-to-pdf's output (read by copy-int-vector)."""
    for ali_dir in (synth.ali["train"], synth.ali["dev"], mono[1]):
        files = sorted(ali_dir.glob("ali.*.gz"))
        assert files
        theirs = _ali_to_pdf(kaldi, ali_dir / "final.mdl", files)
        tm = read_transition_model(ali_dir / "final.mdl")
        ours = {lab.utt: tm.to_pdfs(lab.values) for lab in read_alignments(ali_dir)}
        assert sorted(theirs) == sorted(ours) and ours
        for utt in ours:
            np.testing.assert_array_equal(theirs[utt], ours[utt], err_msg=f"{ali_dir} {utt}")
    targets = _ark(kaldi("copy-int-vector", f"scp:{synth_targets / 'pdf.scp'}", "ark:-"))
    converted = _ali_to_pdf(kaldi, synth.ali["train"] / "final.mdl", [synth.ali["train"] / "ali.1.gz"])
    assert sorted(targets) == sorted(converted)
    for utt in converted:
        np.testing.assert_array_equal(targets[utt], converted[utt], err_msg=utt)


def _text_vector(data: bytes) -> np.ndarray:
    """A Kaldi text vector `[ 1 2 3 ]` written by a Kaldi binary."""
    words = data.decode().split()
    assert words[0] == "[" and words[-1] == "]", data[:80]
    return np.array(words[1:-1], dtype=np.float64)


def test_pdf_counts_are_analyze_counts_and_read_by_kaldi(
    kaldi: Callable[..., bytes], synth: CorpusPaths, synth_targets: Path, tmp_path: Path
) -> None:
    """count_pdfs over prep's pdf targets equals `analyze-counts --counts-dim` on pdf.scp but for the half frame
    analyze-counts adds to every pdf; the priors.vec write_counts makes (what training saves) is read back by
    Kaldi's copy-vector as the same counts."""
    num_pdfs = read_transition_model(synth.ali["train"] / "final.mdl").num_pdfs
    scp = f"scp:{synth_targets / 'pdf.scp'}"
    analyzed = _text_vector(kaldi("analyze-counts", "--binary=false", f"--counts-dim={num_pdfs}", scp, "-"))
    ours = count_pdfs(_ark(kaldi("copy-int-vector", scp, "ark:-")).values(), num_pdfs)
    np.testing.assert_array_equal(ours + 0.5, analyzed)
    assert (ours == 0).any() and ours.sum() > 0  # some pdfs never seen: the vector still has every pdf
    write_counts(tmp_path / "priors.vec", ours)
    np.testing.assert_array_equal(_text_vector(kaldi("copy-vector", "--binary=false", tmp_path / "priors.vec",
                                                          "-")), ours)


def _info(kaldi: Callable[..., bytes], program: str, path: Path) -> dict[str, int]:
    """The `name value` lines of hmm-info / gmm-info / tree-info as {name: int}."""
    lines = kaldi(program, path).decode().splitlines()
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in lines}


def test_models_and_trees_are_read_by_kaldi(
    kaldi: Callable[..., bytes], synth: CorpusPaths, mono: tuple, tmp_path: Path
) -> None:
    """hmm-info equals `asr-bn ali info`'s lines, gmm-info the GMM's sizes, gmm-compute-likes the log-likelihoods
    asr-bn computes with the same model (synth's final.mdl, the monophone trainer's and aligner's);
    copy-transition-model writes the TransitionModel back as asr-bn does, also from asr-bn's text form; tree-info
    agrees with the model and copy-tree writes the tree back byte for byte."""
    mono_dir, ali_dir, feats = mono
    utt = next(iter(feats))
    for exp in (synth.ali["train"], mono_dir, ali_dir):
        model = exp / "final.mdl"
        tm = read_transition_model(model)
        assert [f"{k} {v}" for k, v in _info(kaldi, "hmm-info", model).items()] == tm.info_lines()[:4]
        (tmp_path / "text.mdl").write_bytes(tm.to_kaldi(binary=False))
        for source in (model, tmp_path / "text.mdl"):
            assert kaldi("copy-transition-model", "--binary=true", source, "-") == tm.to_kaldi(binary=True)
        system = GmmSystem.load(model)
        gmm = _info(kaldi, "gmm-info", model)
        assert gmm["number of gaussians"] == system.am.num_gauss and gmm["number of pdfs"] == tm.num_pdfs
        if exp != synth.ali["train"]:  # a model of the yesno GMM features: Kaldi scores them as asr-bn does
            assert gmm["feature dimension"] == feats[utt].shape[1]
            buf = io.BytesIO()
            kaldiio.save_ark(buf, {utt: feats[utt]})
            likes = _ark(kaldi("gmm-compute-likes", model, "ark:-", "ark:-", stdin=buf.getvalue()))
            np.testing.assert_allclose(likes[utt], system.log_likelihoods(feats[utt]), rtol=1e-5, atol=1e-3)
        tree = _info(kaldi, "tree-info", exp / "tree")
        assert tree == {"num-pdfs": tm.num_pdfs, "context-width": 1, "central-position": 0}
        copied = kaldi("copy-tree", "--binary=true", exp / "tree", "-")
        assert copied == (exp / "tree").read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# Hypotheses


WER_CASES = {
    "substitutions": ("u1 A B C\nu2 D E\n", "u1 A X C\nu2 D E\n"),
    "insertions-deletions": ("u1 A B C D\nu2 E F G\nu3 H\n", "u1 A C D X Y\nu2 E F G\nu3\n"),
    "empty-hyp-and-extra": ("u1 A B\nu2 C D E\n", "u1\nu2 C D E\nu9 Z\n"),
    "missing-hyp": ("u1 A B C D\nu2 E F G\nu3 H I\nu4 J K L\n", "u1 A X C D E\nu2 F G\nu4 J K L\n"),
    "empty-ref-over-100": ("u1\nu2 A\nu3 C\n", "u1 X Y\nu2 B C D\nu3 C\n"),
}


@pytest.mark.parametrize("mode", ["all", "present"])
@pytest.mark.parametrize("case", list(WER_CASES))
def test_compute_wer_lines_equal_score_wer(
    kaldi: Callable[..., bytes], tmp_path: Path, case: str, mode: str
) -> None:
    """`asr-bn score wer --mode M` prints compute-wer's `%WER` (with `[PARTIAL]`), `%SER` and `Scored` lines; the
    %WER line then names the hypothesis file."""
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_text(WER_CASES[case][0])
    hyp.write_text(WER_CASES[case][1])
    theirs = kaldi("compute-wer", "--text", f"--mode={mode}", f"ark:{ref}", f"ark:{hyp}").decode().splitlines()
    result = runner.invoke(app, ["score", "wer", str(ref), str(hyp), "--mode", mode])
    assert result.exit_code == 0, result.output
    ours = result.output.splitlines()
    assert ours[0] == f"{theirs[0]} {hyp}" and ours[1:] == theirs[1:] and len(theirs) == 3
