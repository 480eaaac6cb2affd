"""recipes/wsj/run.sh end to end on a miniature Kaldi egs/wsj/s5 tree made of the real yesno Kaldi run.

The tree has WSJ's shape (data/train_si284, data/test_dev93, data/test_eval92 with `cat x.wav |` pipes,
exp/tri4b_ali_si284 and exp/tri4b_ali_dev93 with ali.1.gz + final.mdl, exp/tri4b/final.mdl, exp/tri4b/graph_tgpr)
and Kaldi's own yesno files in it: 24 of the 31 aligned training utterances are "si284", the other 7 "dev93" (their
lines of exp/mono/ali.1.gz), test_yesno is "eval92"; the model, alignments and HCLG graph are exp/mono's. The audio
is 8 kHz, so prep gets `--sample-frequency 8000`. The recipe runs all five stages in fast mode (a 1 x 32 BLSTM, 3
epochs); without Kaldi binaries stage 4 says it skips the Kaldi decode. The Kaldi branch runs Kaldi's real
latgen-faster-mapped and steps/score_kaldi.sh (../shared/kaldi; skipped when absent)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import pytest

from asr_bn.features import FeaturePipeline
from conftest import kaldi_s5_scripts, run_kaldi

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "recipes" / "wsj" / "run.sh"
# Fast mode: yesno's 8 kHz audio, a tiny model that still learns yes/no in 3 epochs, eval92 decoded only.
FAST = [
    "--nj", "1", "--prep-opts", "--sample-frequency 8000 --dither 0", "--layers", "1", "--units", "32",
    "--epochs", "3", "--train-opts", "--optimizer adam --lr 0.02 --batch-size 8 --num-workers 0 --device cpu --cache",
    "--test-sets", "test_eval92",
]  # fmt: skip
DEV = 7  # the last 7 aligned training utterances are "dev93"


def wsj_tree(root: Path, yesno: Path) -> Path:
    """A Kaldi egs/wsj/s5 of WSJ's shape holding the yesno Kaldi run (see the module docstring); returns s5."""
    s5 = root / "s5"
    train = sorted(line.split()[0] for line in (yesno / "data/train_yesno/text").read_text().splitlines())
    test = sorted(line.split()[0] for line in (yesno / "data/test_yesno/text").read_text().splitlines())
    sets = {
        "train_si284": (train[:-DEV], "train_yesno"),
        "test_dev93": (train[-DEV:], "train_yesno"),
        "test_eval92": (test, "test_yesno"),
    }
    for name, (utts, source) in sets.items():
        src = yesno / "data" / source
        wav = dict(line.split(maxsplit=1) for line in (src / "wav.scp").read_text().splitlines())
        text = dict(line.split(maxsplit=1) for line in (src / "text").read_text().splitlines())
        out = s5 / "data" / name
        out.mkdir(parents=True)
        (out / "wav.scp").write_text("".join(f"{u} cat {shlex.quote(str(yesno / wav[u].strip()))} |\n" for u in utts))
        (out / "text").write_text("".join(f"{u} {text[u]}\n" for u in utts))
        (out / "utt2spk").write_text("".join(f"{u} {u[:3]}\n" for u in utts))  # WSJ: speaker = 3-character prefix
    ali = gzip.decompress((yesno / "exp/mono/ali.1.gz").read_bytes()).decode().splitlines()
    for name, (utts, _) in (("tri4b_ali_si284", sets["train_si284"]), ("tri4b_ali_dev93", sets["test_dev93"])):
        d = s5 / "exp" / name
        d.mkdir(parents=True)
        shutil.copy(yesno / "exp/mono/final.mdl", d / "final.mdl")
        (d / "ali.1.gz").write_bytes(gzip.compress("".join(f"{a}\n" for a in ali if a.split()[0] in utts).encode()))
    graph = s5 / "exp/tri4b/graph_tgpr"
    graph.mkdir(parents=True)
    shutil.copy(yesno / "exp/mono/final.mdl", s5 / "exp/tri4b/final.mdl")
    for name in ("HCLG.fst", "words.txt"):
        shutil.copy(yesno / "exp/mono/graph" / name, graph / name)
    return s5


def run(*args: str | Path, path: list[Path] = ()) -> subprocess.CompletedProcess:
    """run.sh ARGS with this environment's asr-bn, no Kaldi (no KALDI_ROOT, PATH without Kaldi), one torch thread
    (small matrices on a busy machine)."""
    env = {k: v for k, v in os.environ.items() if k != "KALDI_ROOT"}
    env["PATH"] = os.pathsep.join([*map(str, path), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        ["bash", str(RUN), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def one_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("run.sh: error:")]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def recipe(yesno_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The whole recipe run once: (s5, OUT_DIR, its output)."""
    root = tmp_path_factory.mktemp("wsj")
    s5 = wsj_tree(root, yesno_root)
    result = run(*FAST, s5, root / "out")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return s5, root / "out", result.stdout + result.stderr


def _wer(path: Path) -> float:
    return min(float(m.group(1)) for m in re.finditer(r"%WER ([0-9.]+)", path.read_text()))


@pytest.mark.slow
def test_every_stage_writes_its_outputs(recipe: tuple[Path, Path, str]) -> None:
    s5, out, log = recipe
    for stage in range(1, 6):
        assert f"Stage {stage}:" in log
    # stage 1: 8 kHz features of every set; targets for train and dev only
    for name, n in (("train_si284", 24), ("test_dev93", DEV), ("test_eval92", 29)):
        prep = out / "prep" / name
        assert len(kaldiio.load_scp(str(prep / "feats.scp"))) == n
        assert FeaturePipeline.load(prep / "pipeline.json").fbank.sample_frequency == 8000
        assert (prep / "pdf.scp").is_file() == (name != "test_eval92")
    # stages 2, 3: the baseline and the BN run, same seed and shape, differing by their BN only
    configs = {}
    for model, bn in (("blstm", "none"), ("blstm_bn_sequence", "sequence")):
        exp = out / "exp" / model
        assert (exp / "final.pt").is_file() and (exp / ".done").is_file()
        configs[bn] = (exp / "config.json").read_text()
    base, seq = (json.loads(configs[k]) for k in ("none", "sequence"))
    assert {k for k in base if base[k] != seq[k]} == {"bn", "exp_dir"}
    assert (base["layers"], base["units"], base["epochs"], base["optimizer"]) == (1, 32, 3, "adam")
    assert base["max_train_frames"] == 1300 and base["momentum"] == 0.9  # the paper's preset under the overrides
    # stage 4: no Kaldi here, so asr-bn decode; yes/no words are easy even for this tiny model
    assert "latgen-faster-mapped not found" in log and "skipping the Kaldi decode" in log
    for model in ("blstm", "blstm_bn_sequence"):
        decode = out / "exp" / model / "decode_tgpr_eval92"
        assert not decode.with_name("decode_tgpr_eval92_kaldi").exists()
        hyps = dict(line.split(maxsplit=1) for line in (decode / "text").read_text().splitlines())
        assert len(hyps) == 29 and set(" ".join(hyps.values()).split()) <= {"YES", "NO"}
        assert {p.name for p in decode.glob("hyp_*")} == {f"hyp_{w}" for w in range(9, 21)}  # the LM-weight sweep
        assert (decode / "wer_details" / "per_utt").is_file()
        assert _wer(decode / "wer") <= 15.0, (decode / "wer").read_text()
    # stage 5: the paper's table and the learning curves
    report = (out / "report.md").read_text()
    assert "| model | BN | train CE | train FER | dev CE | dev FER |" in report
    for model in ("blstm", "blstm_bn_sequence"):
        frames = (out / "exp" / model / "frames_test_dev93").read_text()
        ce = float(re.search(r"CE\s+([0-9.]+)", frames).group(1))
        row = next(line for line in report.splitlines() if line.startswith(f"| {model} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) == pytest.approx(ce, abs=1e-3) and 0 < ce < 2.4  # below chance (log 11)
        assert cells[-1].endswith("%")  # WER eval92 (asr-bn decode)
    assert "1 x 32 BLSTM, adam lr 0.02" in report and "train_si284 24 utterances" in report
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_rerun_skips_every_stage(recipe: tuple[Path, Path, str]) -> None:
    s5, out, _ = recipe
    before = {p: p.stat().st_mtime_ns for p in (out / "exp").rglob("*.pt")}
    result = run(*FAST, s5, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already done") == 3
    for marker in ("blstm/.done", "blstm_bn_sequence/.done", "decode_tgpr_eval92/.done", "blstm/.scored"):
        assert re.search(rf"{re.escape(marker)} exists - skipping", result.stdout), marker
    assert before == {p: p.stat().st_mtime_ns for p in (out / "exp").rglob("*.pt")}
    other = run(*FAST, "--units", "16", "--stage", "2", "--stop-stage", "2", s5, out)
    assert other.returncode == 1 and "was made with other options" in one_error(other)


@pytest.mark.slow
def test_kaldi_branch_decodes_with_latgen_and_scores_with_score_kaldi(
    recipe: tuple[Path, Path, str], kaldi_bundle: Path, tmp_path: Path
) -> None:
    """Stage 4's Kaldi branch with Kaldi's real binaries and scripts: asr-bn forward | latgen-faster-mapped, then
    steps/score_kaldi.sh; first with a partial Kaldi on PATH (no scoring binaries), then found through s5/path.sh."""
    s5, out = (shutil.copytree(d, tmp_path / d.name, symlinks=True) for d in recipe[:2])  # the others' stay as made
    kaldi_s5_scripts(s5, kaldi_bundle)
    (s5 / "path.sh").rename(s5 / "path.sh.whole")
    partial = tmp_path / "partial_bin"
    partial.mkdir()
    for name in ("latgen-faster-mapped", "lattice-scale", "lattice-best-path"):  # latbin only half built, no src/bin
        (partial / name).symlink_to(kaldi_bundle / "bin" / name)
    # the baseline only; a narrow lattice beam (the tiny model's flat scores make Kaldi's lattice determinization
    # slow) and two LM weights (score_kaldi.sh scores each with three insertion penalties)
    stage4 = [*FAST, "--stage", "4", "--decoder", "kaldi", "--bn-modes", "", "--lattice-beam", "2", "--lmwt", "9:10",
              s5, out]  # fmt: skip
    decode = out / "exp/blstm/decode_tgpr_eval92_kaldi"
    result = run(*stage4, path=[partial])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        f"lattices in {decode}/lat.1.gz not scored: Kaldi's lattice-add-penalty compute-wer align-text not "
        "found (build Kaldi's src); with them in place, score in"
    ) in result.stdout
    assert not (decode / "scoring_kaldi").exists()
    (decode / ".done").unlink()
    (s5 / "path.sh.whole").rename(s5 / "path.sh")
    result = run(*stage4)  # no Kaldi on PATH: found through s5/path.sh, as Kaldi's own scripts find it
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (decode / "log/decode.1.log").read_text()
    assert re.search(r"Done 29 utterances, failed for 0", log), log[-2000:]
    assert "--acoustic-scale=0.1" in log and "--beam=13.0" in log and "--lattice-beam=2" in log
    lattices = run_kaldi(kaldi_bundle, "lattice-copy", f"ark:gunzip -c {decode}/lat.1.gz|", "ark,t:-")
    assert sum(1 for line in lattices.splitlines() if len(line.split()) == 1) == 29  # 29 keys, 29 lattices
    assert (decode / "num_jobs").read_text().strip() == "1"
    best = (decode / "scoring_kaldi/best_wer").read_text()
    wer = re.match(r"%WER ([0-9.]+) \[ \d+ / 232,", best)  # 29 utterances of 8 words, scored by compute-wer
    assert wer, best
    assert (decode / "scoring_kaldi/wer_details/per_utt").is_file()
    assert sorted(p.name for p in (decode / "scoring_kaldi/penalty_0.5").glob("*.txt")) == ["10.txt", "9.txt"]
    assert f"%WER {wer.group(1)}" in result.stdout
    report = (out / "report.md").read_text().splitlines()
    head = next(line for line in report if line.startswith("| model |"))
    row = next(line for line in report if line.startswith("| blstm |"))
    assert head.endswith("| WER eval92 (asr-bn decode) | WER eval92 (Kaldi latgen) |")
    assert row.endswith(f"| {float(wer.group(1)):.2f} % |")


def test_kaldi_decoder_asked_for_but_absent(yesno_root: Path, tmp_path: Path) -> None:
    s5 = wsj_tree(tmp_path, yesno_root)
    result = run("--stage", "4", "--decoder", "kaldi", s5, tmp_path / "out")
    assert result.returncode == 1
    message = one_error(result)
    assert "latgen-faster-mapped not found" in message and "KALDI_ROOT" in message and "--decoder asr-bn" in message
    assert not (tmp_path / "out").exists()  # inputs are checked before anything is written


def test_usage_and_bad_inputs(yesno_root: Path, tmp_path: Path) -> None:
    usage = run()
    assert usage.returncode == 2 and "Usage: recipes/wsj/run.sh" in usage.stderr and "e.g." in usage.stderr
    assert "Stages" in run("--help").stdout
    s5 = wsj_tree(tmp_path, yesno_root)
    bad = run("--units-per-layer", "3", s5)
    assert bad.returncode == 1 and "unknown option --units-per-layer" in one_error(bad)
    bad = run("--bn-modes", "layer", s5)
    assert bad.returncode == 1 and "layer is not sequence or frame" in one_error(bad)
    bad = run(tmp_path / "nowhere")
    assert bad.returncode == 1 and "has no data/ folder" in one_error(bad)
    shutil.rmtree(s5 / "exp/tri4b_ali_dev93")
    bad = run(s5, tmp_path / "out")
    message = one_error(bad)
    assert bad.returncode == 1 and "no dev alignments" in message
    assert "steps/align_fmllr.sh --nj 8 --cmd run.pl data/test_dev93 data/lang exp/tri4b exp/tri4b_ali_dev93" in message
    assert not (tmp_path / "out").exists()
    bad = run("--stage", "5", s5, tmp_path / "out")
    assert bad.returncode == 1 and "final.pt: run stage 2 first" in one_error(bad)


def test_report_wer_noise_lines(tmp_path: Path) -> None:
    """Stage 5's report: per WER column with per-utterance errors, each model's bootstrap interval and
    P(model better than blstm); a column without per_utt files gets no line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wsj_report", RUN.parent / "local" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    for model, wrong in (("blstm", 3), ("blstm_bn_sequence", 0)):
        details = tmp_path / model / "decode_tgpr_eval92" / "wer_details"
        details.mkdir(parents=True)
        # 20 utterances of 2 words; blstm substitutes one word in the first `wrong`
        (details / "per_utt").write_text("".join(f"u{i} #csid {1 if i < wrong else 2} {int(i < wrong)} 0 0\n"
                                                 for i in range(20)))  # fmt: skip
    columns = [("decode_tgpr_eval92", "wer_details/per_utt", "WER eval92 (asr-bn decode)"),
               ("decode_tgpr_eval92_kaldi", "scoring_kaldi/wer_details/per_utt", "WER eval92 (Kaldi latgen)")]
    lines = report.wer_noise(tmp_path, ["blstm", "blstm_bn_sequence"], columns)
    assert len(lines) == 1 and lines[0].startswith(
        "- WER eval92 (asr-bn decode), 95 % intervals (compute-wer-bootci's bootstrap over 20 utterances, 10000 "
        "replications): blstm ("
    ), lines
    assert "blstm_bn_sequence (0.00, 0.00); P(blstm_bn_sequence better than blstm) = " in lines[0]
    # BN is better unless none of the 3 wrong utterances is drawn: P = 1 - (17/20)^20 = 0.96
    assert float(lines[0].rstrip(".").split()[-1]) == pytest.approx(1 - 0.85**20, abs=0.02)
