"""A synthetic AN4-like corpus spoken by espeak-ng, with exact phone alignments and Kaldi HMM-state targets.

Prompts like CMU AN4's (spelled letters, digits, a few commands) are spoken by espeak-ng (the espeakng-loader
wheel, through ctypes) in several voice variants, the speakers, with rate and pitch varied per utterance, then
mixed with noise at a random SNR and resampled to 16 kHz. espeak-ng reports the sample where each phoneme starts,
so the phone boundaries are exact; they become frames (`asr_bn.features.num_frames`), then transition-ids of a
monophone Kaldi model (`asr_bn.gmm.system`, kaldi-hmm-gmm: 3 states per phone, Kaldi's 5-state silence).

Writes under OUT_DIR (`synthesize_corpus`):
  wav/<utt>.wav                                            16 kHz 16-bit mono
  data/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt,utt2dur}   speakers disjoint across the splits
  lang/{lexicon.txt,phones.txt,words.txt,silence_phone.txt}       espeak-ng phone names without stress marks
  exp/ali_{train,dev}/{final.mdl,tree,topo,phones.txt,ali.1.gz,num_jobs}   Kaldi alignment dirs (as WSJ's
                                                           tri4b_ali_si284 / tri4b_ali_dev93: one per split)
  corpus.json, report.json                                 settings, voices, per-utterance parameters, statistics

>>> paths = synthesize_corpus("demo", seed=0, size="small")   # doctest: +SKIP
>>> paths.data["train"], paths.ali["train"] / "ali.1.gz"
"""

from __future__ import annotations

import bisect
import ctypes
import io
import json
import math
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel
from asr_bn.data import DataDir, Utterance, write_data_dir
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.features import FbankConfig, compute_fbank, num_frames
from asr_bn.gmm.align import write_alignments
from asr_bn.gmm.features import gmm_features
from asr_bn.gmm.system import GmmSystem, make_topology
from asr_bn.io import OutputLock, atomic_open, write_text
from asr_bn.lang import Lang, write_lang
from asr_bn.progress import track
from asr_bn.report import Report

__all__ = [
    "LETTERS",
    "DIGITS",
    "COMMANDS",
    "VOICES",
    "SIZES",
    "CorpusPaths",
    "Espeak",
    "make_prompt",
    "fit_min_durations",
    "synthesize_corpus",
]

LETTERS = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))
# No "OH" for zero: it sounds exactly like the letter O, an error no acoustic model could avoid.
DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
COMMANDS = ("ENTER", "ERASE", "RUBOUT", "REPEAT", "STOP", "GO", "YES", "NO", "HELP")
# espeak-ng reads a lone "A" before another word as the article (schwa); "eh" gives the letter's name.
_SPOKEN = {"A": "eh"}

# espeak-ng voice variants used as speakers (all with the en-us language, so every voice has the same phones).
# Left out: variants with "breath" (their noise differs from run to run) and robots, whispers, croaks.
VOICES = (
    "m1", "m2", "m3", "m4", "m6", "m7", "m8", "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Denis",
    "john", "michel", "paul", "travis", "david", "f1", "f4", "Andrea", "Annie", "belinda", "linda", "steph",
    "grandma",
)  # fmt: skip
LANGUAGE = "en-us"
SILENCE = "SIL"
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class _Size:
    speakers: tuple[int, int, int]  # train, dev, test
    utts_per_speaker: tuple[int, int, int]


# "full": what a ≤ 10-minute demo on 2 CPU cores affords end to end; "small": for the tests.
SIZES = {
    "full": _Size(speakers=(12, 3, 3), utts_per_speaker=(60, 30, 30)),
    "small": _Size(speakers=(4, 2, 2), utts_per_speaker=(10, 6, 6)),
}
SPLITS = ("train", "dev", "test")

# Per-utterance variation (espeak-ng units: words per minute, pitch and pitch range 0-100, word gap in 10 ms).
_SPEAKER_RATE = (135.0, 185.0)
_SPEAKER_PITCH = (30.0, 70.0)
_RATE_JITTER = 15.0
_PITCH_JITTER = 8.0
_PITCH_RANGE = (30, 80)
_PAUSE_PROB = 0.12  # a comma (a real pause) between two words
_WORD_GAP_PROB = 0.2  # a few tens of ms of extra gap between the words of the utterance
_PAD_S = (0.15, 0.45)  # silence before and after the speech
_PEAK = (0.25, 0.9)  # output peak level, as a fraction of int16 full scale

# HMM states (Kaldi's utils/gen_topo.pl defaults): a phone needs at least this many frames.
_NONSIL_STATES = 3
_SIL_STATES = 5


# ----------------------------------------------------------------------------------------------------------------
# espeak-ng through ctypes


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT` of espeak-ng's speak_lib.h (API revision 12)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM = {"rate": 1, "pitch": 3, "range": 4, "word_gap": 7}


class Espeak:
    """espeak-ng through ctypes: text → 22.05 kHz int16 audio and the phonemes with their start samples.

    espeak-ng keeps synthesis state (noise generators, filters) in static variables, so the same text sounds
    slightly different depending on what was spoken before. A private copy of the library is loaded and unloaded
    around each utterance, so every utterance is reproducible on its own, whatever the order.

    >>> with Espeak() as tts:   # doctest: +SKIP
    ...     audio, phones = tts.synthesize("B C", "en-us+m1")   # phones: [("b", 1, 286), ("'i:", 1, 990), …]
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise AsrBnError("espeakng-loader is not installed (pip install espeakng-loader)") from e
        self._tmp = tempfile.TemporaryDirectory(prefix="asr-bn-espeak-")
        self._lib_path = str(Path(self._tmp.name) / "libespeak-ng-private.so")
        shutil.copyfile(espeakng_loader.get_library_path(), self._lib_path)
        self._data_path = espeakng_loader.get_data_path().encode()
        self._variants = {p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir()}
        self.sample_rate = 0

    def __enter__(self) -> "Espeak":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the private copy of the library."""
        self._tmp.cleanup()

    def synthesize(
        self, text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50, word_gap: int = 0
    ) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
        """Speak `text` with `voice` (e.g. "en-us+m1"): int16 audio and (phoneme, text position, start sample)s.

        Phoneme names are espeak-ng's mnemonics with stress marks ("'i:"); text positions count characters from 1.
        """
        import _ctypes

        variant = voice.partition("+")[2]
        if variant and variant not in self._variants:  # espeak-ng would silently use the plain voice
            raise UsageError(f"espeak-ng has no voice variant {variant!r} (choose one of espeak-ng-data/voices/!v, "
                             "e.g. en-us+m1)")
        lib = ctypes.CDLL(self._lib_path)
        chunks: list[np.ndarray] = []
        events: list[tuple[str, int, int]] = []

        def on_audio(wav, num_samples, event_list):  # noqa: ANN001, ANN202 - a C callback
            if wav and num_samples > 0:
                chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
            i = 0
            while event_list[i].type != _EVENT_LIST_TERMINATED:
                ev = event_list[i]
                if ev.type == _EVENT_PHONEME:
                    events.append((ev.id.string.decode("utf-8", "replace"), ev.text_position, ev.sample))
                i += 1
            return 0

        callback = _CALLBACK(on_audio)
        try:
            self.sample_rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INITIALIZE_PHONEME_EVENTS)
            if self.sample_rate <= 0:
                raise AsrBnError(f"espeak-ng failed to start with data {self._data_path.decode()} "
                                 "(reinstall espeakng-loader)")
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise UsageError(f"espeak-ng has no voice {voice!r} (use LANGUAGE+VARIANT, e.g. en-us+m1)")
            for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range), ("word_gap", word_gap)):
                lib.espeak_SetParameter(_PARAM[name], int(value), 0)
            data = text.encode()
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise AsrBnError(f"espeak-ng could not speak {text!r} with {voice} (error {status})")
            lib.espeak_Terminate()
        finally:
            _unload(_ctypes, lib)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        if any(sample > len(audio) for _, _, sample in events):
            raise AsrBnError(f"espeak-ng reported phonemes past the end of its audio for {text!r} ({voice})")
        return audio, events


def _unload(_ctypes: Any, lib: ctypes.CDLL) -> None:
    """Unload the library so the next load starts from fresh static state."""
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary")
    close(lib._handle)


# ----------------------------------------------------------------------------------------------------------------
# Prompts


def make_prompt(rng: np.random.Generator) -> list[str]:
    """An AN4-like prompt of 1-6 words: spelled letters, digits, a command with letters or digits, or a command."""
    kind = rng.choice(4, p=[0.35, 0.3, 0.2, 0.15])
    if kind == 3:
        return [str(rng.choice(COMMANDS))]
    n = int(rng.integers(1, 7))
    if kind == 2:
        head = str(rng.choice(("ENTER", "ERASE", "RUBOUT", "REPEAT")))
        pool = LETTERS if rng.random() < 0.5 else DIGITS
        return [head] + [str(w) for w in rng.choice(pool, size=max(1, n - 1))]
    pool = LETTERS if kind == 0 else DIGITS
    return [str(w) for w in rng.choice(pool, size=n)]


# ----------------------------------------------------------------------------------------------------------------
# Phones, frames, min durations


def _phone_name(mnemonic: str) -> str | None:
    """espeak-ng mnemonic → our phone: stress marks dropped, pauses → SIL; None for the ";" hiatus mark."""
    if mnemonic.startswith("_"):
        return SILENCE
    if mnemonic == ";":
        return None
    return mnemonic.lstrip("',")


def _segments(
    events: list[tuple[str, int, int]], word_starts: list[int], num_samples: int
) -> tuple[list[tuple[str, int, int]], list[list[str]]]:
    """Phone segments (phone, start, end) covering [0, num_samples) and each word's phones, from espeak events.

    Audio before the first phoneme is silence; the ";" hiatus mark (a vowel-to-vowel glide across a word boundary)
    extends the phone before it; neighbouring silences merge. A phone espeak-ng gives no samples (an "l" melted
    into its neighbours) stays, empty: the frame fitting gives it its minimum length.
    """
    segs: list[list[Any]] = [[SILENCE, 0, None]]
    word_phones: list[list[str]] = [[] for _ in word_starts]
    for k, (mnemonic, text_pos, start) in enumerate(events):
        end = events[k + 1][2] if k + 1 < len(events) else num_samples
        phone = _phone_name(mnemonic)
        if phone is None or (phone == SILENCE and (end <= start or segs[-1][0] == SILENCE)):
            continue
        segs[-1][2] = start
        segs.append([phone, start, None])
        if phone != SILENCE:
            word_phones[max(0, bisect.bisect_right(word_starts, text_pos) - 1)].append(phone)
    segs[-1][2] = num_samples
    return [(p, s, e) for p, s, e in segs if e > s or p != SILENCE], word_phones


def fit_min_durations(bounds: Sequence[int], min_frames: Sequence[int]) -> np.ndarray:
    """Segment boundaries nearest to `bounds` (least total shift) such that segment k lasts ≥ min_frames[k].

    bounds: K+1 frame indices from 0 to the frame count; a phone needs one frame per HMM state. Solved exactly
    as an L1 isotonic regression (dynamic programming over boundary values). Raises ValueError when the frames
    cannot hold all segments.
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    mins = np.asarray(min_frames, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(mins)])
    room = int(bounds[-1] - offsets[-1])
    if room < 0:
        raise ValueError(f"{bounds[-1]} frames cannot hold segments needing {offsets[-1]}")
    if len(mins) == 1:
        return bounds.copy()
    # c_k = bounds_k - offsets_k must be non-decreasing within [0, room]; minimise Σ |c_k - target_k|.
    targets = bounds[1:-1] - offsets[1:-1]
    values = np.arange(room + 1)
    costs = []
    prev_min = np.zeros(room + 1)
    for target in targets:
        cost = np.abs(values - target) + prev_min
        costs.append(cost)
        prev_min = np.minimum.accumulate(cost)
    c = np.empty(len(targets), dtype=np.int64)
    upper = room
    for k in range(len(targets) - 1, -1, -1):
        c[k] = int(np.argmin(costs[k][: upper + 1]))
        upper = int(c[k])
    return np.concatenate([[0], c + offsets[1:-1], [bounds[-1]]])


def _frame_bounds(sample_bounds: Sequence[int], total_frames: int, cfg: FbankConfig) -> np.ndarray:
    """Sample boundaries → frame boundaries: a frame belongs to the segment holding its window's centre."""
    centre = cfg.window_size / 2 if cfg.snip_edges else cfg.window_shift / 2
    b = np.ceil((np.asarray(sample_bounds, dtype=np.float64) - centre) / cfg.window_shift)
    b = np.clip(b, 0, total_frames).astype(np.int64)
    b[0], b[-1] = 0, total_frames
    return b


# ----------------------------------------------------------------------------------------------------------------
# Kaldi HMM-state targets


class _Targets:
    """Phone segments → transition-ids of a monophone Kaldi TransitionModel, as a forced alignment would give.

    Each phone's frames are split evenly over its HMM states; in every state all frames but the last take the
    self-loop and the last takes the transition to the next state.
    """

    def __init__(self, trans_model: TransitionModel, phones: dict[str, int]) -> None:
        self.phones = phones
        self.num_states = {p: len(trans_model.topology.entry(p)) - 1 for p in trans_model.phones}
        self.pdf: dict[tuple[int, int], int] = {}
        self.self_loop: dict[tuple[int, int], int] = {}
        self.forward: dict[tuple[int, int], int] = {}
        for tstate, (phone, hmm_state, forward_pdf, _) in enumerate(trans_model.tuples, start=1):
            first = int(np.searchsorted(trans_model.tid_tstate, tstate))
            self.pdf[(phone, hmm_state)] = forward_pdf
            for arc, (dest, _) in enumerate(trans_model.topology.entry(phone)[hmm_state].transitions):
                if dest == hmm_state:
                    self.self_loop[(phone, hmm_state)] = first + arc
                elif dest == hmm_state + 1:
                    self.forward[(phone, hmm_state)] = first + arc

    def transition_ids(self, segments: Sequence[tuple[str, int]]) -> np.ndarray:
        """(phone, frames) segments → int32 transition-ids, one per frame."""
        tids: list[int] = []
        for name, frames in segments:
            phone = self.phones[name]
            n = self.num_states[phone]
            if frames < n:
                raise ValueError(f"phone {name} has {frames} frames, fewer than its {n} HMM states")
            edges = (np.arange(n + 1) * frames) // n
            for h in range(n):
                tids += [self.self_loop[(phone, h)]] * int(edges[h + 1] - edges[h] - 1) + [self.forward[(phone, h)]]
        return np.asarray(tids, dtype=np.int32)


# ----------------------------------------------------------------------------------------------------------------
# The corpus


@dataclass
class _UttSpec:
    id: str
    split: str
    speaker: str
    voice: str
    words: list[str]
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    pauses: list[bool]  # a comma after word i
    snr_db: float
    seed: tuple[int, ...]


@dataclass
class _Utt:
    spec: _UttSpec
    audio: np.ndarray  # int16, 16 kHz
    segments: list[tuple[str, int]]  # (phone, frames)
    prons: list[tuple[str, ...]]
    frames_moved: int


@dataclass
class CorpusPaths:
    """Where `synthesize_corpus` wrote the corpus, and what it holds."""

    root: Path
    data: dict[str, Path]  # train / dev / test Kaldi data dirs
    lang: Path
    ali: dict[str, Path]  # train / dev Kaldi alignment dirs (final.mdl, tree, ali.1.gz, …)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall-clock time of the whole run


def _plan(seed: int, size: _Size, num_speakers: int | None, snr_db: tuple[float, float]) -> list[_UttSpec]:
    """Every utterance's speaker, prompt and synthesis parameters, drawn from `seed` alone."""
    speakers = size.speakers
    if num_speakers is not None:
        if not 3 <= num_speakers <= len(VOICES):
            raise UsageError(f"num_speakers={num_speakers}: choose 3 to {len(VOICES)} (one voice variant each)")
        held_out = max(1, round(num_speakers / 6))
        speakers = (num_speakers - 2 * held_out, held_out, held_out)
    rng = np.random.default_rng([seed, 0])
    voices = [VOICES[i] for i in rng.permutation(len(VOICES))[: sum(speakers)]]
    specs: list[_UttSpec] = []
    n = 0
    for split, count, per_spk in zip(SPLITS, speakers, size.utts_per_speaker):
        for _ in range(count):
            voice = voices[n]
            spk = f"s{n + 1:02d}-{voice.lower()}"
            spk_rng = np.random.default_rng([seed, 1, n])
            base_rate = spk_rng.uniform(*_SPEAKER_RATE)
            base_pitch = spk_rng.uniform(*_SPEAKER_PITCH)
            for j in range(per_spk):
                r = np.random.default_rng([seed, 2, n, j])
                words = make_prompt(r)
                gap = int(r.integers(1, 6)) if r.random() < _WORD_GAP_PROB else 0
                specs.append(_UttSpec(
                    id=f"{spk}-{j:04d}", split=split, speaker=spk, voice=voice, words=words,
                    rate=int(round(base_rate + r.uniform(-_RATE_JITTER, _RATE_JITTER))),
                    pitch=int(round(np.clip(base_pitch + r.uniform(-_PITCH_JITTER, _PITCH_JITTER), 0, 100))),
                    pitch_range=int(r.integers(_PITCH_RANGE[0], _PITCH_RANGE[1] + 1)), word_gap=gap,
                    pauses=[bool(r.random() < _PAUSE_PROB) for _ in words[:-1]] + [False],
                    snr_db=float(r.uniform(*snr_db)), seed=(seed, 3, n, j)))
            n += 1
    return specs


def _spoken_text(words: list[str], pauses: list[bool]) -> tuple[str, list[int]]:
    """The text given to espeak-ng and the 1-based character position where each word starts."""
    parts: list[str] = []
    starts: list[int] = []
    pos = 1
    for word, pause in zip(words, pauses):
        spoken = _SPOKEN.get(word, word) + ("," if pause else "")
        starts.append(pos)
        parts.append(spoken)
        pos += len(spoken) + 1
    return " ".join(parts), starts


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-power Gaussian noise with a random spectral tilt (white to brownish)."""
    from scipy.signal import lfilter

    tilt = rng.uniform(-0.3, 0.95)
    noise = lfilter([1.0], [1.0, -tilt], rng.standard_normal(n))
    return noise / np.sqrt(np.mean(noise**2))


@lru_cache(maxsize=None)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass filter scipy's resample_poly designs by default (Kaiser, beta 5), designed once."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _render(tts: Espeak, spec: _UttSpec, cfg: FbankConfig) -> _Utt:
    """Synthesize one utterance: 16 kHz noisy audio, frame-level phone segments, each word's phones."""
    from scipy.signal import resample_poly

    text, starts = _spoken_text(spec.words, spec.pauses)
    raw, events = tts.synthesize(text, f"{LANGUAGE}+{spec.voice}", rate=spec.rate, pitch=spec.pitch,
                                 pitch_range=spec.pitch_range, word_gap=spec.word_gap)
    rng = np.random.default_rng(list(spec.seed))
    segs, word_phones = _segments(events, starts, len(raw))
    if any(not p for p in word_phones):
        raise AsrBnError(f"{spec.id}: espeak-ng gave no phones to a word of {' '.join(spec.words)!r}")
    # silence padding around the speech, then 22.05 kHz → 16 kHz (by 320/441)
    g = math.gcd(SAMPLE_RATE, tts.sample_rate)
    up, down = SAMPLE_RATE // g, tts.sample_rate // g
    pad = [int(rng.uniform(*_PAD_S) * tts.sample_rate) for _ in range(2)]
    padded = np.concatenate([np.zeros(pad[0]), raw.astype(np.float64), np.zeros(pad[1])])
    clean = resample_poly(padded, up, down, window=_resampling_filter(up, down))
    phones = [p for p, _, _ in segs]
    starts = [s + pad[0] for _, s, _ in segs]
    if phones[0] == SILENCE:
        starts[0] = 0
    else:
        phones, starts = [SILENCE] + phones, [0] + starts
    if phones[-1] != SILENCE:
        phones.append(SILENCE)
        starts.append(pad[0] + len(raw))
    bounds = [int(round(s * up / down)) for s in starts] + [len(clean)]
    # noise at the SNR: speech power measured between the first and the last phone
    speech = clean[bounds[1] : bounds[-2]]
    noise_power = np.mean(speech**2) / 10 ** (spec.snr_db / 10)
    noisy = clean + np.sqrt(noise_power) * _noise(rng, len(clean))
    peak = rng.uniform(*_PEAK) * 32767 / np.max(np.abs(noisy))
    audio = np.clip(np.round(noisy * peak), -32768, 32767).astype(np.int16)
    # phone boundaries → frames; each phone gets at least one frame per HMM state
    total = num_frames(len(audio), cfg)
    frame_bounds = _frame_bounds(bounds, total, cfg)
    mins = [_SIL_STATES if p == SILENCE else _NONSIL_STATES for p in phones]
    try:
        fitted = fit_min_durations(frame_bounds, mins)
    except ValueError as e:
        raise AsrBnError(f"{spec.id}: {e} (the utterance is too short for its phones)") from e
    lengths = np.diff(fitted)
    return _Utt(spec=spec, audio=audio, segments=[(p, int(n)) for p, n in zip(phones, lengths)],
                prons=[tuple(p) for p in word_phones], frames_moved=int(np.abs(fitted - frame_bounds).sum()))


def _canonical_prons(tts: Espeak) -> dict[str, tuple[str, ...]]:
    """Each vocabulary word spoken alone (default voice): its pronunciation even if no prompt contains it."""
    prons = {}
    for word in LETTERS + DIGITS + COMMANDS:
        text, starts = _spoken_text([word], [False])
        raw, events = tts.synthesize(text, LANGUAGE)
        prons[word] = tuple(_segments(events, starts, len(raw))[1][0])
        if not prons[word]:
            raise AsrBnError(f"espeak-ng gave no phones for the word {word} (reinstall espeakng-loader)")
    return prons


def _lexicon(canonical: dict[str, tuple[str, ...]], utts: list[_Utt]) -> list[tuple[str, list[str]]]:
    """Each word's pronunciations as spoken in `utts` (plus alone), the most frequent first.

    espeak-ng links words (a linking "r" before a vowel, say), so a word may sound differently in context; every
    variant the given audio contains is in the lexicon, so decoding can match what was said. The caller passes
    the training and dev utterances only: a variant heard only in the test audio must not reach the graph.
    """
    counts: dict[str, Counter] = {w: Counter({p: 0}) for w, p in canonical.items()}
    for utt in utts:
        for word, pron in zip(utt.spec.words, utt.prons):
            counts[word][pron] += 1
    lexicon = []
    for word in sorted(counts):
        for pron, _ in sorted(counts[word].items(), key=lambda kv: (-kv[1], kv[0])):
            lexicon.append((word, list(pron)))
    return lexicon


def _write_wav(path: Path, audio: np.ndarray) -> None:
    """A 16-bit wav file, written atomically (encoded in memory: libsndfile would fsync it a second time)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def synthesize_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: Literal["full", "small"] = "full",
    num_speakers: int | None = None,
    snr_db: tuple[float, float] = (10.0, 30.0),
    fbank: FbankConfig | None = None,
) -> CorpusPaths:
    """Synthesize the corpus into `out_dir`: Kaldi data dirs, a lang folder, Kaldi alignment dirs (train, dev).

    Deterministic for a seed (same bytes). `size` picks speakers and utterances ("full" for the demo, "small" for
    tests); `num_speakers` overrides the speaker count (split train/dev/test about 4:1:1); `snr_db` is the range
    of the random per-utterance SNR; `fbank` gives the frame layout the alignments must match (Kaldi defaults).
    """
    started = time.perf_counter()
    if size not in SIZES:
        raise UsageError(f"size={size!r}: choose one of {', '.join(SIZES)}")
    if not snr_db[0] <= snr_db[1]:
        raise UsageError(f"snr_db={snr_db}: give (low, high) with low ≤ high")
    cfg = fbank or FbankConfig()
    if cfg.sample_frequency != SAMPLE_RATE:
        raise UsageError(f"fbank sample_frequency={cfg.sample_frequency}: the corpus is {SAMPLE_RATE} Hz")
    out = Path(out_dir).resolve()
    specs = _plan(seed, SIZES[size], num_speakers, snr_db)
    report = Report(stage="synth")
    with OutputLock(out), Espeak() as tts:
        for stale in set((out / "wav").glob("*.wav")) - {out / "wav" / f"{spec.id}.wav" for spec in specs}:
            stale.unlink()  # from an earlier run with other options
        utts: list[_Utt] = []
        for spec in track(specs, "synthesizing"):
            utt = _render(tts, spec, cfg)
            _write_wav(out / "wav" / f"{spec.id}.wav", utt.audio)
            utts.append(utt)
        canonical = _canonical_prons(tts)
        seen = [u for u in utts if u.spec.split != "test"]
        lang = write_lang(_lexicon(canonical, seen), out / "lang", silence_phone=SILENCE)
        for split in SPLITS:
            chosen = [u for u in utts if u.spec.split == split]
            data = DataDir(
                path=out / "data" / split,
                recordings={u.spec.id: str(out / "wav" / f"{u.spec.id}.wav") for u in chosen},
                utterances={u.spec.id: Utterance(id=u.spec.id, speaker=u.spec.speaker, recording=u.spec.id,
                                                 text=" ".join(u.spec.words)) for u in chosen},
                root=out, has_text=True)
            write_data_dir(data, data.path, [u.spec.id for u in chosen],
                           durations={u.spec.id: len(u.audio) / SAMPLE_RATE for u in chosen})
        system = _gmm_system(lang, [u for u in utts if u.spec.split == "train"], cfg)
        targets = _Targets(system.transition_model(), lang.phones)
        for split in ("train", "dev"):
            system.save(out / "exp" / f"ali_{split}", lang.phones)
            alis = {u.spec.id: targets.transition_ids(u.segments) for u in utts if u.spec.split == split}
            write_alignments(out / "exp" / f"ali_{split}", alis, [sorted(alis)])
        stats = _stats(utts, lang, system.am.num_pdfs)
        report.counts = {"utterances": len(utts), "speakers": len({u.spec.speaker for u in utts}),
                         "phones": len(lang.real_phone_ids), "pdfs": system.am.num_pdfs}
        moved = sum(u.frames_moved for u in utts)
        report.note(f"{moved} phone-boundary frame shifts to give every HMM state a frame "
                    f"({moved / max(1, stats['total']['frames']):.2%} of frames)")
        report.save(out / "report.json")
        write_text(out / "corpus.json", json.dumps(_description(seed, size, snr_db, cfg, utts, stats), indent=1,
                                                    sort_keys=True) + "\n")
    return CorpusPaths(root=out, data={s: out / "data" / s for s in SPLITS}, lang=out / "lang",
                       ali={s: out / "exp" / f"ali_{s}" for s in ("train", "dev")},
                       stats=stats, seconds=time.perf_counter() - started)


def _gmm_system(lang: Lang, train: list[_Utt], cfg: FbankConfig) -> GmmSystem:
    """The monophone HMM-GMM of the alignment dir: Kaldi's gmm-init-mono on the training audio's GMM features.

    The alignments themselves come from espeak-ng, exact; the GMM makes final.mdl a model Kaldi tools can use.
    """
    fbank = {}
    batch = 64
    for i in range(0, len(train), batch):
        chunk = train[i : i + batch]
        for utt, f in zip(chunk, compute_fbank([u.audio.astype(np.float32) for u in chunk], cfg)):
            frames = sum(n for _, n in utt.segments)
            if f.shape[0] != frames:
                raise AsrBnError(f"{utt.spec.id}: {frames} alignment frames but {f.shape[0]} feature frames "
                                 "(asr_bn.features.num_frames and compute_fbank disagree)")
            fbank[utt.spec.id] = f
    feats = gmm_features(fbank, {u.spec.id: u.spec.speaker for u in train})
    sil = lang.phones[lang.silence_phone]
    topology = make_topology([p for p in lang.real_phone_ids if p != sil], [sil], _NONSIL_STATES, _SIL_STATES)
    return GmmSystem.init_mono(topology, list(feats.values()))


def _stats(utts: list[_Utt], lang: Lang, num_pdfs: int) -> dict[str, Any]:
    """Per split and in total: utterances, speakers, hours, frames, phone tokens (silence apart)."""
    out: dict[str, Any] = {}
    for split in (*SPLITS, "total"):
        chosen = [u for u in utts if split in ("total", u.spec.split)]
        out[split] = {
            "utterances": len(chosen),
            "speakers": len({u.spec.speaker for u in chosen}),
            "hours": round(sum(len(u.audio) for u in chosen) / SAMPLE_RATE / 3600, 4),
            "frames": sum(n for u in chosen for _, n in u.segments),
            "phone_tokens": sum(p != SILENCE for u in chosen for p, _ in u.segments),
            "words": sum(len(u.spec.words) for u in chosen),
        }
    out["phones"] = len(lang.real_phone_ids)
    out["pdfs"] = num_pdfs
    out["lexicon_entries"] = len(lang.lexicon)
    return out


def _description(
    seed: int, size: str, snr_db: tuple[float, float], cfg: FbankConfig, utts: list[_Utt], stats: dict[str, Any]
) -> dict[str, Any]:
    """corpus.json: how the corpus was made (settings, voices, per-utterance parameters) and its statistics."""
    return {
        "seed": seed,
        "size": size,
        "snr_db": list(snr_db),
        "sample_rate": SAMPLE_RATE,
        "fbank": cfg.to_dict(),
        "language": LANGUAGE,
        "speakers": {s: {"voice": f"{LANGUAGE}+{v}", "split": sp}
                     for s, v, sp in sorted({(u.spec.speaker, u.spec.voice, u.spec.split) for u in utts})},
        "utterances": {u.spec.id: {"rate": u.spec.rate, "pitch": u.spec.pitch, "range": u.spec.pitch_range,
                                   "word_gap": u.spec.word_gap, "snr_db": round(u.spec.snr_db, 2)} for u in utts},
        "stats": stats,
    }
