"""`asr-bn lm`: interpolated Kneser-Ney normalised for every history, ARPA read by kaldilm's arpa2fst, perplexity
equal to an independent back-off evaluation of the written ARPA file, OOV words mapped and named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asr_bn.errors import AsrBnError
from asr_bn.lm import arpa_text, kneser_ney, read_sentences
from asr_bn.report import Report
from asr_bn_cli.main import build_app

app = build_app()


def _parse_arpa(text: str) -> list[dict[tuple[str, ...], tuple[float, float]]]:
    """The n-gram tables of ARPA text, parsed here (not by asr_bn): gram → (log10 p, log10 bow)."""
    model: list[dict] = []
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            model.append({})
        elif model and line and not line.startswith("\\"):
            fields = line.split("\t")
            n = len(model)
            model[-1][tuple(fields[1].split())] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
            assert len(fields[1].split()) == n
    return model


def _arpa_prob(model: list[dict], word: str, history: tuple[str, ...]) -> float:
    """p(word | history) by ARPA back-off."""
    history = history[-(len(model) - 1):] if len(model) > 1 else ()
    gram = history + (word,)
    if gram in model[len(gram) - 1]:
        return 10 ** model[len(gram) - 1][gram][0]
    bow = 10 ** model[len(history) - 1][history][1] if history in model[len(history) - 1] else 1.0
    return bow * _arpa_prob(model, word, history[1:])


def test_kneser_ney_is_normalized_and_readable(tmp_path: Path) -> None:
    """Every history's distribution sums to 1 over the vocabulary (unseen lexicon words included), and the ARPA
    text is what kaldilm's arpa2fst (the graph builder's reader) accepts."""
    from asr_bn.kaldi_ext import kaldilm

    sentences = [["A", "B", "C"], ["A", "B"], ["B", "C", "C"], ["ONE", "TWO"], ["A"]]
    vocab = ["A", "B", "C", "ONE", "TWO", "NEVER"]
    for order in (1, 2, 3, 4):
        model = _parse_arpa(arpa_text(kneser_ney(sentences, vocab, order=order)))
        targets = [*vocab, "</s>"]
        histories = [(), ("<s>",), ("A",), ("NEVER",), ("<s>", "A"), ("A", "B"), ("B", "C"), ("C", "A"),
                     ("<s>", "A", "B")]
        for h in histories:
            assert sum(_arpa_prob(model, w, h) for w in targets) == pytest.approx(1.0, abs=1e-5), (order, h)
    assert _arpa_prob(model, "NEVER", ("A", "B")) > 0
    assert _arpa_prob(model, "B", ("<s>", "A")) > _arpa_prob(model, "C", ("<s>", "A"))
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(arpa_text(kneser_ney(sentences, vocab, order=3)))
    words = tmp_path / "words.txt"
    words.write_text("".join(f"{w} {i}\n" for i, w in enumerate(["<eps>", *vocab, "#0", "<s>", "</s>"])))
    fst = kaldilm.arpa2fst(input_arpa=str(arpa), disambig_symbol="#0", read_symbol_table=str(words))
    assert fst.strip()
    with pytest.raises(AsrBnError, match="--order must be 1, 2, 3 or 4, got 5"):
        kneser_ney(sentences, vocab, order=5)


def test_unknown_words_error_or_map_to_oov(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("u1 A B\nu2 A ZEBRA\nu3 ZEBRA YAK ZEBRA\n")
    with pytest.raises(AsrBnError, match=r"text:2: utterance u2 .*ZEBRA"):
        read_sentences(text, {"A", "B"}, Report("lm"))
    report = Report("lm")
    assert read_sentences(tmp_path, {"A", "B", "<UNK>"}, report, "<UNK>")[1:] == [["A", "<UNK>"], ["<UNK>"] * 3]
    assert report.counts["words mapped to <UNK>"] == 4 and "ZEBRA (3), YAK (1)" in report.notes[0]


def test_cli_writes_arpa_and_perplexity_matches_an_independent_evaluation(tmp_path: Path) -> None:
    (tmp_path / "lexicon.txt").write_text("<SIL> SIL\nA AH\nB B IY\nC S IY\nD D IY\n")
    assert CliRunner().invoke(app, ["lang", str(tmp_path / "lexicon.txt"), str(tmp_path / "lang")]).exit_code == 0
    train = tmp_path / "train"
    train.mkdir()
    (train / "text").write_text("u1 A B C\nu2 A B\nu3 B C C\nu4 C A B\nu5 D A\n")
    (tmp_path / "heldout").write_text("h1 A B D\nh2 C C A Q\n")
    run = CliRunner().invoke(app, ["lm", str(train), str(tmp_path / "lang"), str(tmp_path / "lm.arpa"),
                                   "--order", "2", "--heldout", str(tmp_path / "heldout")])
    assert run.exit_code == 0, run.output
    model = _parse_arpa((tmp_path / "lm.arpa").read_text())
    assert len(model) == 2 and {w for (w,) in model[0]} == {"<SIL>", "<UNK>", "A", "B", "C", "D", "<s>", "</s>"}
    logprob, count = 0.0, 0
    for words in (["A", "B", "D"], ["C", "C", "A", "<UNK>"]):  # Q maps to the lang's OOV word <UNK>
        history = ("<s>",)
        for w in [*words, "</s>"]:
            logprob += math.log10(_arpa_prob(model, w, history))
            count += 1
            history = history + (w,)
    assert f"perplexity {10 ** (-logprob / count):.2f} on" in run.output and "(7 words, 0 OOVs)" in run.output
    assert "Q (1)" in run.output
