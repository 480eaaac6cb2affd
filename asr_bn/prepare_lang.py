"""Kaldi's utils/prepare_lang.sh: a dict dir (or a bare lexicon) → a complete Kaldi lang folder.

    >>> lang, report = prepare_lang(read_dict_dir("data/local/dict", report), "data/lang")

A dict dir holds lexicon.txt or lexiconp.txt, nonsilence_phones.txt, silence_phones.txt, optional_silence.txt and
optionally extra_questions.txt (one line per phone set, e.g. a vowel's stress variants). The lang folder gets what
prepare_lang.sh writes (phones.txt, words.txt, topo, L.fst, L_disambig.fst, oov.{txt,int}, phones/{sets, roots,
extra_questions, word_boundary, disambig, silence, nonsilence, optional_silence, context_indep, align_lexicon,
wdisambig…} as .txt/.int/.csl) with the same phone and word numbering, plus lexiconp.txt (the lexicon over the
lang's phones, which `asr_bn.lang.read_lang` reads). Position-dependent phones (Kaldi's default): each phone of a
pronunciation gets _B, _I, _E (begin, internal, end of a word) or _S (a one-phone word); silence phones keep their
plain form too; the variants of a phone share its monophone pdfs (phones/sets.txt).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.io import read_rows, write_text
from asr_bn.lang import EPS, Lang, add_lex_disambig, lexicon_disambig_fst, lexicon_fst, read_lexicon, read_lexiconp
from asr_bn.report import Report

__all__ = ["DictDir", "read_dict_dir", "prepare_lang", "POSITIONS"]

POSITIONS = ("_B", "_E", "_I", "_S")  # begin, end, internal, singleton: Kaldi's word-position suffixes
_BOUNDARY = {"_B": "begin", "_E": "end", "_I": "internal", "_S": "singleton"}
RESERVED_WORDS = (EPS, "#0", "<s>", "</s>")


@dataclass
class DictDir:
    """A Kaldi dict dir: the lexicon (with pronunciation probabilities) and the phone lists, one set per line."""

    lexicon: list[tuple[str, list[str]]]
    probs: list[float]
    silence: list[list[str]]
    nonsilence: list[list[str]]
    optional_silence: str
    extra_questions: list[list[str]]


def _phone_lines(path: Path) -> list[list[str]]:
    return [[row.key, *row.fields] for row in read_rows(path, "a dict dir needs it; see Kaldi's prepare_lang.sh")]


def read_dict_dir(source: str | Path, report: Report, silence_phone: str = "SIL") -> DictDir:
    """Read a dict dir, or a bare lexicon file (the phone lists then derived from it: `silence_phone` and SPN, if
    the lexicon uses them, are silence, every other phone is a nonsilence set of its own; said in `report`)."""
    source = Path(source)
    if source.is_file():
        lexicon = read_lexicon(source)
        used = sorted({p for _, pron in lexicon for p in pron})
        silence = [[p] for p in (silence_phone, "SPN") if p in used or p == silence_phone]
        nonsilence = [[p] for p in used if [p] not in silence]
        report.note(f"{source} is a bare lexicon: phone lists derived from it (silence: "
                    f"{' '.join(p for [p] in silence)}; optional silence: {silence_phone}; {len(nonsilence)} nonsilence "
                    f"phones, one set each; no extra questions); give a dict dir to choose them")
        return DictDir(lexicon, [1.0] * len(lexicon), silence, nonsilence, silence_phone, [])
    if not source.is_dir():
        raise AsrBnError(f"{source} does not exist (give a Kaldi dict dir or a lexicon file)")
    if (source / "lexiconp.txt").exists():  # as prepare_lang.sh: lexiconp.txt wins over lexicon.txt
        lexicon, probs = read_lexiconp(source / "lexiconp.txt")
    else:
        lexicon = read_lexicon(source / "lexicon.txt")
        probs = [1.0] * len(lexicon)
    optional = _phone_lines(source / "optional_silence.txt")
    if len(optional) != 1 or len(optional[0]) != 1:
        raise AsrBnError(f"{source}/optional_silence.txt must hold exactly one phone (e.g. SIL)")
    extra = _phone_lines(source / "extra_questions.txt") if (source / "extra_questions.txt").exists() else []
    return DictDir(lexicon, probs, _phone_lines(source / "silence_phones.txt"),
                   _phone_lines(source / "nonsilence_phones.txt"), optional[0][0], extra)


def _check(d: DictDir, oov: str, report: Report) -> None:
    """validate_dict_dir.pl's checks, one line each; an OOV word missing from the lexicon is added as `OOV SPN`."""
    silence = [p for line in d.silence for p in line]
    nonsilence = [p for line in d.nonsilence for p in line]
    every = silence + nonsilence
    if not silence or not nonsilence:
        raise AsrBnError("the dict dir needs at least one silence and one nonsilence phone")
    dup = sorted({p for p in every if every.count(p) > 1})
    if dup:
        raise AsrBnError(f"phones {dup} are listed twice in silence_phones.txt / nonsilence_phones.txt; list each once")
    bad = sorted(p for p in every if p == EPS or p.startswith("#") or p.endswith(POSITIONS))
    if bad:
        raise AsrBnError(f"phones {bad} have reserved names (<eps>, #n, or a _B _E _I _S suffix); rename them")
    if d.optional_silence not in silence:
        raise AsrBnError(f"the optional silence {d.optional_silence} is not in silence_phones.txt; add it there")
    words = {w for w, _ in d.lexicon}
    if oov not in words:
        if "SPN" not in every:
            d.silence.append(["SPN"])
        d.lexicon.append((oov, ["SPN"]))
        d.probs.append(1.0)
        report.note(f"the lexicon has no {oov}: added `{oov} SPN` (spoken noise, a silence phone) for words outside it")
    reserved = sorted(words & set(RESERVED_WORDS))
    if reserved:
        raise AsrBnError(f"lexicon words {reserved} are reserved in words.txt; drop them from the lexicon")
    known = set(every) | {"SPN"}
    for word, pron in d.lexicon:
        unknown = [p for p in pron if p not in known]
        if unknown:
            raise AsrBnError(f"lexicon word {word!r} uses phones {unknown} that no phone list names; add them to "
                             "nonsilence_phones.txt (or silence_phones.txt)")
    for line in d.extra_questions:
        unknown = [p for p in line if p not in known]
        if unknown:
            raise AsrBnError(f"extra_questions.txt names phones {unknown} that no phone list names")


def _positional(pron: list[str]) -> list[str]:
    """A pronunciation's position-dependent phones: _S alone, else _B, _I…, _E."""
    if len(pron) == 1:
        return [pron[0] + "_S"]
    return [pron[0] + "_B", *(p + "_I" for p in pron[1:-1]), pron[-1] + "_E"]


def prepare_lang(d: DictDir, out_dir: str | Path, report: Report, oov: str = "<UNK>", position_dependent: bool = True,
                 sil_prob: float = 0.5, num_sil_states: int = 5, num_nonsil_states: int = 3) -> Lang:
    """Write the Kaldi lang folder of a dict dir into `out_dir` (replaced as a whole once complete) and return it."""
    from asr_bn.alignments import topology_text
    from asr_bn.gmm.system import make_topology

    if not 0.0 < sil_prob < 1.0:
        raise AsrBnError(f"--sil-prob must lie strictly between 0 and 1, got {sil_prob}")
    _check(d, oov, report)
    if position_dependent:
        sil_map = {p: [p, *(p + s for s in POSITIONS)] for line in d.silence for p in line}
        phone_map = {**sil_map, **{p: [p + s for s in POSITIONS] for line in d.nonsilence for p in line}}
        lexicon = [(w, _positional(pron)) for w, pron in d.lexicon]
    else:
        phone_map = {p: [p] for line in d.silence + d.nonsilence for p in line}
        lexicon = [(w, list(pron)) for w, pron in d.lexicon]

    def mapped(line: list[str]) -> list[str]:
        return [q for p in line for q in phone_map[p]]

    silence = [q for line in d.silence for q in mapped(line)]
    nonsilence = [q for line in d.nonsilence for q in mapped(line)]
    sets = [mapped(line) for line in d.silence + d.nonsilence]
    extra = [mapped(line) for line in d.extra_questions]
    if position_dependent:
        flat_non = [p for line in d.nonsilence for p in line]
        flat_sil = [p for line in d.silence for p in line]
        extra += [[p + s for p in flat_non] for s in POSITIONS]
        extra += [[p + s for p in flat_sil] for s in ("", *POSITIONS)]
    num_disambig = add_lex_disambig(lexicon)[1] + 1  # one more for the silence after the optional silence
    disambig = [f"#{n}" for n in range(num_disambig + 1)]
    phones = {p: i for i, p in enumerate([EPS, *silence, *nonsilence, *disambig])}
    words = {w: i for i, w in enumerate([EPS, *sorted({w for w, _ in lexicon}), "#0", "<s>", "</s>"])}
    lang = Lang(lexicon=lexicon, phones=phones, words=words, silence_phone=d.optional_silence, silence_phones=silence,
                phone_sets=sets, pron_probs=list(d.probs), oov=oov)
    align_lexicon = sorted({" ".join([w, w, *pron]) for w, pron in [*lexicon, (EPS, [d.optional_silence])]})

    def ints(names: list[str]) -> str:
        return " ".join(str(phones[p]) for p in names)

    files: dict[str, str] = {
        "phones.txt": "".join(f"{p} {i}\n" for p, i in phones.items()),
        "words.txt": "".join(f"{w} {i}\n" for w, i in words.items()),
        "oov.txt": f"{oov}\n",
        "oov.int": f"{words[oov]}\n",
        "lexiconp.txt": "".join(f"{w} {p:g} {' '.join(pron)}\n" for (w, pron), p in zip(lexicon, d.probs)),
        "topo": topology_text(make_topology([phones[p] for p in nonsilence], [phones[p] for p in silence],
                                            num_nonsil_states, num_sil_states)),
        "phones/sets.txt": "".join(" ".join(s) + "\n" for s in sets),
        "phones/sets.int": "".join(ints(s) + "\n" for s in sets),
        "phones/roots.txt": "".join(f"shared split {' '.join(s)}\n" for s in sets),
        "phones/roots.int": "".join(f"shared split {ints(s)}\n" for s in sets),
        "phones/extra_questions.txt": "".join(" ".join(s) + "\n" for s in extra),
        "phones/extra_questions.int": "".join(ints(s) + "\n" for s in extra),
        "phones/align_lexicon.txt": "".join(line + "\n" for line in align_lexicon),
        "phones/align_lexicon.int": "".join(
            f"{words[f[0]]} {words[f[1]]} {ints(f[2:])}\n" for f in (line.split() for line in align_lexicon)),
        "phones/wdisambig.txt": "#0\n",
        "phones/wdisambig_phones.int": f"{phones['#0']}\n",
        "phones/wdisambig_words.int": f"{words['#0']}\n",
    }
    for name, names in (("silence", silence), ("nonsilence", nonsilence), ("optional_silence", [d.optional_silence]),
                        ("disambig", disambig), ("context_indep", silence)):
        files[f"phones/{name}.txt"] = "".join(p + "\n" for p in names)
        files[f"phones/{name}.int"] = "".join(f"{phones[p]}\n" for p in names)
        files[f"phones/{name}.csl"] = ":".join(str(phones[p]) for p in names) + "\n"
    if position_dependent:
        boundary = [(p, _BOUNDARY.get(p[-2:], "nonword")) for p in silence + nonsilence]
        files["phones/word_boundary.txt"] = "".join(f"{p} {b}\n" for p, b in boundary)
        files["phones/word_boundary.int"] = "".join(f"{phones[p]} {b}\n" for p, b in boundary)
    fsts = {"L.fst": lexicon_fst(lang, sil_prob), "L_disambig.fst": lexicon_disambig_fst(lang, sil_prob)[0]}

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, text in files.items():
            write_text(tmp / name, text)
        for name, fst in fsts.items():
            if not fst.write(str(tmp / name)):
                raise AsrBnError(f"could not write {out_dir / name} (free disk space)")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.counts.update({"words": len(words) - 4, "pronunciations": len(lexicon), "phones": len(silence + nonsilence),
                          "disambiguation symbols": len(disambig)})
    return lang
