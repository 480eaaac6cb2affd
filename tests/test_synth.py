"""The synthetic espeak-ng corpus: reproducible, speakers disjoint, alignments that match the audio and transcripts,
read back through Kaldi's own TransitionModel (kaldi-hmm-gmm) and asr_bn.alignments."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_bn.alignments import read_alignments, read_transition_model
from asr_bn.errors import UsageError
from asr_bn.features import FbankConfig, num_frames
from asr_bn.gmm.system import GmmSystem
from asr_bn.lang import read_lang
from asr_bn.synth import (
    COMMANDS,
    DIGITS,
    LETTERS,
    SIZES,
    VOICES,
    Espeak,
    _PITCH_JITTER,
    _RATE_JITTER,
    _SPEAKER_PITCH,
    _SPEAKER_RATE,
    _plan,
    _spoken_text,
    fit_min_durations,
    make_prompt,
    synthesize_corpus,
)

SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """The small corpus, synthesized once for the module."""
    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "corpus", seed=3, size="small")


def _table(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path: Path) -> None:
    a = synthesize_corpus(tmp_path / "a", seed=7, size="small", num_speakers=3)
    b = synthesize_corpus(tmp_path / "b", seed=7, size="small", num_speakers=3)
    c = synthesize_corpus(tmp_path / "c", seed=8, size="small", num_speakers=3)
    fa, fb = _files(a.root), _files(b.root)
    assert fa.keys() == fb.keys()
    # wav.scp holds absolute paths, which differ by the output folder; everything else is byte-identical
    differing = [k for k in fa if fa[k] != fb[k] and not k.endswith("wav.scp")]
    assert differing == []
    for split in SPLITS:
        assert fa[f"data/{split}/wav.scp"].replace(str(a.root).encode(), b"") == fb[f"data/{split}/wav.scp"].replace(
            str(b.root).encode(), b"")
    fc = _files(c.root)
    assert fa["data/train/text"] != fc["data/train/text"]


def test_sizes_and_disjoint_speakers(corpus) -> None:
    size = SIZES["small"]
    speakers = {}
    for split, n_spk, per_spk in zip(SPLITS, size.speakers, size.utts_per_speaker):
        utt2spk = _table(corpus.data[split] / "utt2spk")
        speakers[split] = set(utt2spk.values())
        assert len(speakers[split]) == n_spk
        assert len(utt2spk) == n_spk * per_spk
        assert list(utt2spk) == sorted(utt2spk)  # Kaldi's C-locale order
        spk2utt = _table(corpus.data[split] / "spk2utt")
        assert sorted(spk2utt) == sorted(speakers[split])
        assert set(_table(corpus.data[split] / "text")) == set(utt2spk)
    for x, y in itertools.combinations(SPLITS, 2):
        assert not speakers[x] & speakers[y], (x, y)
    info = json.loads((corpus.root / "corpus.json").read_text())
    voices = [s["voice"] for s in info["speakers"].values()]
    assert len(set(voices)) == len(voices) == sum(size.speakers)
    assert corpus.stats["total"]["utterances"] == sum(n * k for n, k in zip(size.speakers, size.utts_per_speaker))


def test_audio_is_16k_int16_mono_and_durations_match(corpus) -> None:
    for split in SPLITS:
        utt2dur = _table(corpus.data[split] / "utt2dur")
        for utt, path in _table(corpus.data[split] / "wav.scp").items():
            assert Path(path).is_absolute()
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert abs(info.frames / 16000 - float(utt2dur[utt])) < 1e-3


def test_text_uses_the_an4_vocabulary(corpus) -> None:
    vocab = set(LETTERS + DIGITS + COMMANDS)
    for split in SPLITS:
        for words in _table(corpus.data[split] / "text").values():
            assert 1 <= len(words.split()) <= 6 and set(words.split()) <= vocab


def _phone_runs(system: GmmSystem, tids: np.ndarray) -> list[tuple[int, int]]:
    """(phone, frames) runs through kaldi-hmm-gmm's TransitionModel: a phone ends at a transition to its final
    state."""
    tm = system.trans_model
    runs, start = [], 0
    for i, tid in enumerate(tids.tolist()):
        if tm.is_final(tid):
            phones = {tm.transition_id_to_phone(t) for t in tids[start : i + 1].tolist()}
            assert len(phones) == 1
            runs.append((phones.pop(), i + 1 - start))
            start = i + 1
    assert start == len(tids), "alignment ends inside a phone"
    return runs


def _matches(phones: list[str], words: list[str], prons: dict[str, list[list[str]]], sil: str) -> bool:
    """Whether `phones` is SIL, the words' pronunciations (one variant each) with optional SIL between, SIL."""
    if len(phones) < 2 or phones[0] != sil or phones[-1] != sil:
        return False

    def rest(i: int, w: int) -> bool:
        while i < len(phones) - 1 and phones[i] == sil:
            i += 1
        if w == len(words):
            return i == len(phones) - 1
        return any(phones[i : i + len(p)] == p and rest(i + len(p), w + 1) for p in prons[words[w]])

    return rest(1, 0)


def test_alignments_match_audio_frames_and_transcripts(corpus) -> None:
    cfg = FbankConfig()
    lang = read_lang(corpus.lang)
    id2phone = {i: p for p, i in lang.phones.items()}
    prons = lang.pronunciations()
    assert (corpus.ali["train"] / "final.mdl").read_bytes() == (corpus.ali["dev"] / "final.mdl").read_bytes()
    system = GmmSystem.load(corpus.ali["train"] / "final.mdl")  # Kaldi's own objects, read back from our file
    model = read_transition_model(corpus.ali["train"] / "final.mdl")
    assert model.num_pdfs == system.am.num_pdfs == corpus.stats["pdfs"]
    assert set(model.phones) == set(lang.real_phone_ids)
    for split in ("train", "dev"):
        alis = {utt: labels for utt, labels, _ in read_alignments(corpus.ali[split])}
        text = _table(corpus.data[split] / "text")
        assert alis.keys() == text.keys()
        for utt, path in _table(corpus.data[split] / "wav.scp").items():
            tids = alis[utt]
            assert len(tids) == num_frames(sf.info(path).frames, cfg), utt
            runs = _phone_runs(system, tids)
            assert runs == [(p, e - s) for p, s, e in model.phone_segments(tids)]  # both readers agree
            names = [id2phone[p] for p, _ in runs]
            assert _matches(names, text[utt].split(), prons, lang.silence_phone), (utt, text[utt], names)
            # every HMM state visited left to right: all frames but a state's last are self-loops
            states, loops = model.to_hmm_states(tids), model.is_self_loop(tids)
            for p, s, e in model.phone_segments(tids):
                n = len(model.topology.entry(p)) - 1
                assert list(dict.fromkeys(states[s:e].tolist())) == list(range(n)), utt
                assert [not x for x in loops[s:e]] == [states[i] != states[i + 1] if i + 1 < e else True
                                                       for i in range(s, e)], utt


def test_lexicon_covers_vocabulary_with_espeak_phones(corpus) -> None:
    lang = read_lang(corpus.lang)
    prons = lang.pronunciations()
    assert set(prons) == set(LETTERS + DIGITS + COMMANDS)
    assert prons["B"][0] == ["b", "i:"] and prons["A"][0] == ["eI"]  # A is the letter, not the article
    assert all(not any(p.startswith(("'", ",", "_")) for pron in ps for p in pron) for ps in prons.values())
    assert lang.silence_phone == "SIL" and "SIL" not in {p for ps in prons.values() for pr in ps for p in pr}
    owners: dict[tuple[str, ...], set[str]] = {}
    for word, pron in lang.lexicon:
        owners.setdefault(tuple(pron), set()).add(word)
    assert [ws for ws in owners.values() if len(ws) > 1] == []  # no homophones: every word can be recognized


def test_snr_roughly_as_requested(tmp_path: Path) -> None:
    """Noise power from the leading silence, speech power between the first and last phone, both from the file."""
    paths = synthesize_corpus(tmp_path / "c", seed=1, size="small", num_speakers=3, snr_db=(15.0, 15.0))
    lang = read_lang(paths.lang)
    model = read_transition_model(paths.ali["train"] / "final.mdl")
    wavs = _table(paths.data["train"] / "wav.scp")
    errors = []
    for utt, tids, _ in read_alignments(paths.ali["train"]):
        audio, _ = sf.read(wavs[utt])
        speech = np.flatnonzero(model.to_phones(tids) != lang.phones[lang.silence_phone])
        noise = np.mean(audio[: 160 * speech[0] - 400] ** 2)  # frames end 400 samples after their start
        total = np.mean(audio[160 * speech[0] + 400 : 160 * speech[-1]] ** 2)
        errors.append(10 * np.log10((total - noise) / noise) - 15.0)
    assert len(errors) >= 10 and np.all(np.abs(errors) < 1.5) and abs(np.median(errors)) < 0.5, errors


def _median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median pitch (Hz, 60-400) of the loud 40 ms frames, from each frame's autocorrelation peak."""
    n = int(0.04 * sample_rate)
    frames = [audio[i : i + n].astype(np.float64) for i in range(0, len(audio) - n, n // 2)]
    energy = np.array([np.sum(f**2) for f in frames])
    lo, hi = sample_rate // 400, sample_rate // 60
    f0 = []
    for f in (f for f, e in zip(frames, energy) if e > 0.3 * energy.max()):
        ac = np.correlate(f - f.mean(), f - f.mean(), "full")[n - 1 :]
        f0.append(sample_rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0))


def test_rate_and_pitch_vary_per_utterance_and_speaker(corpus) -> None:
    """corpus.json: every speaker has its own rate and pitch, jittered per utterance; espeak-ng speaks those
    values (the corpus's slowest rate gives longer audio than its fastest, its highest pitch a higher F0)."""
    info = json.loads((corpus.root / "corpus.json").read_text())
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for utt, params in info["utterances"].items():
        by_speaker[utt.rsplit("-", 1)[0]].append(params)
    assert sorted(by_speaker) == sorted(info["speakers"])
    for spk, params in by_speaker.items():
        rates, pitches = [p["rate"] for p in params], [p["pitch"] for p in params]
        assert len(set(rates)) > 1 and len(set(pitches)) > 1, spk  # varied per utterance, around the speaker's:
        assert np.ptp(rates) <= 2 * _RATE_JITTER + 1 and np.ptp(pitches) <= 2 * _PITCH_JITTER + 1, spk
        rate_lo, rate_hi = _SPEAKER_RATE[0] - _RATE_JITTER - 1, _SPEAKER_RATE[1] + _RATE_JITTER + 1  # ±1: rounding
        pitch_lo, pitch_hi = _SPEAKER_PITCH[0] - _PITCH_JITTER - 1, _SPEAKER_PITCH[1] + _PITCH_JITTER + 1
        assert rate_lo <= min(rates) and max(rates) <= rate_hi and pitch_lo <= min(pitches) <= max(pitches) <= pitch_hi
    mean_rate = {s: np.mean([p["rate"] for p in ps]) for s, ps in by_speaker.items()}
    mean_pitch = {s: np.mean([p["pitch"] for p in ps]) for s, ps in by_speaker.items()}
    assert np.ptp(list(mean_rate.values())) > 20 and np.ptp(list(mean_pitch.values())) > 15  # speakers differ
    params = list(info["utterances"].values())
    rates, pitches = sorted({p["rate"] for p in params}), sorted({p["pitch"] for p in params})
    with Espeak() as tts:
        voice = "en-us+m1"
        slow, _ = tts.synthesize("NO ONE ZERO", voice, rate=rates[0])
        fast, _ = tts.synthesize("NO ONE ZERO", voice, rate=rates[-1])
        low, _ = tts.synthesize("NO ONE ZERO", voice, pitch=pitches[0])
        high, _ = tts.synthesize("NO ONE ZERO", voice, pitch=pitches[-1])
        sr = tts.sample_rate
    assert len(slow) > 1.2 * len(fast)
    assert _median_f0(high, sr) > 1.2 * _median_f0(low, sr)


def test_snr_is_drawn_per_utterance_within_the_range(corpus) -> None:
    """Each utterance's SNR in corpus.json is its own draw inside snr_db (default 10-30 dB), and the audio has it:
    noise power from the leading silence, speech power between the first and the last phone, from the file."""
    info = json.loads((corpus.root / "corpus.json").read_text())
    low, high = info["snr_db"]
    assert (low, high) == (10.0, 30.0)
    recorded = [p["snr_db"] for p in info["utterances"].values()]
    assert all(low <= x <= high for x in recorded)
    assert len(set(recorded)) >= 0.9 * len(recorded) and min(recorded) < low + 3 and max(recorded) > high - 3
    lang = read_lang(corpus.lang)
    model = read_transition_model(corpus.ali["train"] / "final.mdl")
    errors = []
    for split in ("train", "dev"):
        wavs = _table(corpus.data[split] / "wav.scp")
        for utt, tids, _ in read_alignments(corpus.ali[split]):
            audio, _ = sf.read(wavs[utt])
            speech = np.flatnonzero(model.to_phones(tids) != lang.phones[lang.silence_phone])
            noise = np.mean(audio[: 160 * speech[0] - 400] ** 2)  # frames end 400 samples after their start
            total = np.mean(audio[160 * speech[0] + 400 : 160 * speech[-1]] ** 2)
            errors.append(10 * np.log10((total - noise) / noise) - info["utterances"][utt]["snr_db"])
    size = SIZES["small"]
    assert len(errors) == sum(n * k for n, k in zip(size.speakers[:2], size.utts_per_speaker[:2]))
    assert np.all(np.abs(errors) < 1.0), errors


def test_phone_boundaries_are_espeak_phoneme_events(corpus) -> None:
    """Each alignment's phones are espeak-ng's phoneme events (stress marks dropped, pauses and the `;` hiatus
    mark apart) and start where the event's sample lands: × 16000/22050, then the frame whose window centre it
    holds, within one frame once shifted by the leading silence (0.15-0.45 s). Only a boundary next to a phone
    the fitting stretched to its minimum (one frame per HMM state) may be further off."""
    info = json.loads((corpus.root / "corpus.json").read_text())
    cfg = FbankConfig()
    lang = read_lang(corpus.lang)
    id2phone = {i: p for p, i in lang.phones.items()}
    model = read_transition_model(corpus.ali["train"] / "final.mdl")
    # the prompts' pauses (commas in the spoken text) are not in corpus.json: re-drawn from the seed
    specs = {spec.id: spec for spec in _plan(info["seed"], SIZES[info["size"]], None, tuple(info["snr_db"]))}
    checked = 0
    with Espeak() as tts:
        for utt, tids, _ in itertools.islice(read_alignments(corpus.ali["train"]), 12):
            spec, params = specs[utt], info["utterances"][utt]
            text, _ = _spoken_text(spec.words, spec.pauses)
            _, events = tts.synthesize(text, info["speakers"][spec.speaker]["voice"], rate=params["rate"],
                                       pitch=params["pitch"], pitch_range=params["range"], word_gap=params["word_gap"])
            want = [(m.lstrip("',"), sample) for m, _, sample in events if not m.startswith("_") and m != ";"]
            segments = [(id2phone[p], s, e) for p, s, e in model.phone_segments(tids)]
            minimum = {s: len(model.topology.entry(p)) - 1 for p, s, _ in model.phone_segments(tids)}  # HMM states
            length = {s: e - s for _, s, e in segments}
            before = {e: s for _, s, e in segments}  # segment end → its start
            got = [(p, s) for p, s, _ in segments if p != lang.silence_phone]
            assert [p for p, _ in got] == [p for p, _ in want], utt
            scale, centre = cfg.sample_frequency / tts.sample_rate, cfg.window_size / 2  # snip_edges frames
            expected = np.array([math.ceil((x * scale - centre) / cfg.window_shift) for _, x in want])
            starts = np.array([s for _, s in got])
            offset = int(np.median(starts - expected))
            assert 15 - 1 <= offset <= 45 + 1, utt  # 0.15-0.45 s of leading silence, in 10 ms frames
            for start, error in zip(starts.tolist(), (starts - expected - offset).tolist()):
                tight = length[start] == minimum[start] or length[before[start]] == minimum[before[start]]
                assert abs(error) <= 1 or tight, (utt, start, error)
                checked += 1
    assert checked > 100, checked


def test_espeak_is_reproducible_per_utterance() -> None:
    with Espeak() as tts:
        a, ev_a = tts.synthesize("HELP ME ENTER SIX", "en-us+klatt")
        tts.synthesize("ONE TWO", "en-us+m3")
        b, ev_b = tts.synthesize("HELP ME ENTER SIX", "en-us+klatt")
        assert tts.sample_rate == 22050
    assert np.array_equal(a, b) and ev_a == ev_b
    assert [p for p, _, _ in ev_a][:4] == ["h", "'E", "l", "p"]
    assert all(0 <= s <= len(a) for _, _, s in ev_a)


def test_espeak_unknown_voice_is_a_usage_error() -> None:
    with Espeak() as tts:
        with pytest.raises(UsageError, match="no voice variant 'nosuch'"):
            tts.synthesize("A", "en-us+nosuch")
        with pytest.raises(UsageError, match="no voice 'xx'"):
            tts.synthesize("A", "xx")


def test_voices_exist() -> None:
    assert len(VOICES) >= 8
    with Espeak() as tts:
        for voice in VOICES:
            audio, events = tts.synthesize("B", f"en-us+{voice}")
            assert len(audio) > 1000 and [p for p, _, _ in events][:2] == ["b", "'i:"], voice


def _brute_force(bounds: list[int], mins: list[int]) -> int:
    total = bounds[-1]
    best = None
    for inner in itertools.product(range(total + 1), repeat=len(bounds) - 2):
        b = [0, *inner, total]
        if all(b[k + 1] - b[k] >= mins[k] for k in range(len(mins))):
            cost = sum(abs(x - y) for x, y in zip(b, bounds))
            best = cost if best is None else min(best, cost)
    assert best is not None
    return best


def test_fit_min_durations_is_optimal(rng: np.random.Generator) -> None:
    for _ in range(150):
        k = int(rng.integers(1, 5))
        mins = rng.integers(1, 4, size=k).tolist()
        total = int(rng.integers(sum(mins), sum(mins) + 6))
        bounds = [0, *sorted(rng.integers(0, total + 1, size=k - 1).tolist()), total]
        fitted = fit_min_durations(bounds, mins)
        assert fitted[0] == 0 and fitted[-1] == total
        assert np.all(np.diff(fitted) >= mins)
        assert int(np.abs(fitted - bounds).sum()) == _brute_force(bounds, mins)
    assert list(fit_min_durations([0, 5, 9], [3, 3])) == [0, 5, 9]  # already long enough: unchanged
    with pytest.raises(ValueError):
        fit_min_durations([0, 2, 4], [3, 3])


def test_prompts_are_an4_like(rng: np.random.Generator) -> None:
    vocab = set(LETTERS + DIGITS + COMMANDS)
    lengths = set()
    for _ in range(300):
        words = make_prompt(rng)
        assert 1 <= len(words) <= 6 and set(words) <= vocab
        lengths.add(len(words))
    assert lengths == set(range(1, 7))


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="size"):
        synthesize_corpus(tmp_path, size="huge")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="num_speakers"):
        synthesize_corpus(tmp_path, num_speakers=2)
    with pytest.raises(UsageError, match="sample_frequency"):
        synthesize_corpus(tmp_path, fbank=FbankConfig(sample_frequency=8000))
