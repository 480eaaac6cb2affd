"""The plain option dataclasses of the commands (fbank, training, forward, decoding), with each option's valid range.

Torch-free on purpose: the CLI builds its options (defaults, ranges, choices) from these classes at start-up, and
`asr-bn --help` or a usage error never imports torch or the Kaldi extensions. Each rule lives once: a field's
`Range` is what the CLI checks where it parses the option (Typer's min/max) and what `check_options` checks when
the library is called directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asr_bn.errors import UsageError
from asr_bn.ranges import Range

__all__ = [
    "option",
    "check_options",
    "FbankConfig",
    "ModelConfig",
    "TrainConfig",
    "PRESETS",
    "RESUMABLE",
    "ForwardConfig",
    "DecodeConfig",
    "DecodeFmllrConfig",
]


def option(default: Any, valid: Range | None = None, **metadata: Any) -> Any:
    """A dataclass field with its valid range (and any other metadata: help, kaldi name, choices)."""
    return dataclasses.field(default=default, metadata={"range": valid, **metadata})


def _flag(field: dataclasses.Field) -> str:
    return "--" + field.metadata.get("kaldi", field.name.replace("_", "-"))


def check_options(obj: Any) -> None:
    """UsageError naming the first field of the dataclass `obj` outside its range or choices (None = unset)."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        valid, choices = field.metadata.get("range"), field.metadata.get("choices")
        if value is None or isinstance(value, bool):
            continue
        if valid is not None and value not in valid:
            raise UsageError(f"{_flag(field)} must be {valid}, got {value:g}")
        if choices is not None and value not in choices:
            raise UsageError(f"{_flag(field)} {value!r} is not one of {', '.join(choices)}")


# -- fbank (Kaldi's compute-fbank-feats) ---------------------------------------------------------------------------

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular", "blackman", "sine")


def _option(default: Any, kaldi_name: str, help_text: str, valid: Range | None = None) -> Any:
    """A FbankConfig field that knows its Kaldi option name, help text and valid range (read by conf parsing,
    `check_ranges` and the CLI)."""
    return option(default, valid, kaldi=kaldi_name, help=help_text)


@dataclass
class FbankConfig:
    """Kaldi's fbank options (`compute-fbank-feats`), Kaldi's defaults except num_mel_bins = 40 (the paper's)."""

    sample_frequency: float = _option(16000.0, "sample-frequency", "Sample rate of the audio in Hz (never resampled).",
        Range(0, low_open=True))
    frame_length_ms: float = _option(25.0, "frame-length", "Frame length in milliseconds.", Range(0, low_open=True))
    frame_shift_ms: float = _option(10.0, "frame-shift", "Frame shift in milliseconds.", Range(0, low_open=True))
    dither: float = _option(
        1.0, "dither", "Dithering constant (0 = none); seeded per utterance, so runs are reproducible.", Range(0)
    )
    preemphasis_coefficient: float = _option(0.97, "preemphasis-coefficient", "Pre-emphasis coefficient.", Range(0, 1))
    remove_dc_offset: bool = _option(True, "remove-dc-offset", "Subtract the mean of each frame before processing.")
    window_type: str = option("povey", kaldi="window-type", help="Window function.", choices=WINDOW_TYPES)
    blackman_coeff: float = _option(0.42, "blackman-coeff", "Constant of the blackman window.")
    round_to_power_of_two: bool = _option(True, "round-to-power-of-two", "Round the FFT size up to a power of two.")
    snip_edges: bool = _option(True, "snip-edges", "Only frames that fit in the audio (else reflect at the edges).")
    num_mel_bins: int = _option(40, "num-mel-bins", "Number of mel bins (the paper uses 40).", Range(3))
    low_freq: float = _option(20.0, "low-freq", "Low cut-off of the mel bins in Hz.", Range(0))
    high_freq: float = _option(0.0, "high-freq", "High cut-off in Hz (<= 0: offset from Nyquist).")
    use_energy: bool = _option(False, "use-energy", "Add the log-energy as an extra first feature.")
    raw_energy: bool = _option(True, "raw-energy", "Compute the energy before pre-emphasis and windowing.")
    energy_floor: float = _option(0.0, "energy-floor", "Floor on the energy (absolute, not relative).")
    use_log_fbank: bool = _option(True, "use-log-fbank", "Log of the mel energies (else linear).")
    use_power: bool = _option(True, "use-power", "Power spectrum (else magnitude).")
    htk_compat: bool = _option(False, "htk-compat", "HTK order: the energy goes last.")
    vtln_low: float = _option(100.0, "vtln-low", "Low inflection point of the VTLN warp in Hz.")
    vtln_high: float = _option(
        -500.0, "vtln-high", "High inflection point of the VTLN warp in Hz (< 0: offset from Nyquist)."
    )
    vtln_warp: float = _option(1.0, "vtln-warp", "VTLN warp factor (1 = none).", Range(0, low_open=True))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UsageError for options Kaldi would reject: each option's range and choices, an empty frame, an
        odd FFT size, a mel range outside Nyquist, a mel bin without FFT bins (--num-mel-bins too large)."""
        check_options(self)
        if self.window_size < 2 or self.window_shift < 1:
            raise UsageError(
                f"--frame-length {self.frame_length_ms} / --frame-shift {self.frame_shift_ms} give "
                f"{self.window_size} / {self.window_shift} samples at {self.sample_frequency:g} Hz; use longer frames"
            )
        if self.padded_window_size % 2:  # Kaldi's MelBanks asserts an even FFT size
            raise UsageError(
                f"--frame-length {self.frame_length_ms} gives an odd FFT size of {self.padded_window_size} samples; "
                "use --round-to-power-of-two or a frame length of an even number of samples"
            )
        nyquist = 0.5 * self.sample_frequency
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not (self.low_freq < nyquist and 0.0 < high <= nyquist and high > self.low_freq):
            raise UsageError(
                f"bad mel range --low-freq {self.low_freq:g} --high-freq {self.high_freq:g} for --sample-frequency "
                f"{self.sample_frequency:g} (need 0 <= low < high <= Nyquist {nyquist:g}; "
                "high <= 0 is an offset from Nyquist)"
            )
        from asr_bn.mel import mel_banks  # numpy; imported here so that the CLI starts without it

        mel_banks(self, self.vtln_warp)  # raises for empty mel bins and VTLN cut-offs out of range

    @property
    def window_size(self) -> int:
        """Frame length in samples (Kaldi's WindowSize)."""
        return int(self.sample_frequency * 0.001 * self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        """Frame shift in samples (Kaldi's WindowShift)."""
        return int(self.sample_frequency * 0.001 * self.frame_shift_ms)

    @property
    def padded_window_size(self) -> int:
        """FFT length: the frame length, rounded up to a power of two when round_to_power_of_two."""
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    @property
    def dim(self) -> int:
        """Feature dimension: num_mel_bins, plus one for the log-energy when use_energy."""
        return self.num_mel_bins + int(self.use_energy)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FbankConfig":
        """Inverse of to_dict; an unknown key is a UsageError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(f"unknown fbank option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**d)

    @classmethod
    def from_kaldi_conf(cls, path: str | Path, **overrides: Any) -> "FbankConfig":
        """Read a Kaldi conf file (`--num-mel-bins=40` per line, `#` comments), as `compute-fbank-feats --config`:
        an option the file does not set has Kaldi's default, so 23 mel bins unless it says otherwise.

        Options of compute-fbank-feats that do not change the features (e.g. --verbose) are ignored; ones asr-bn
        does not implement (resampling, --subtract-mean, MFCC options) are a UsageError naming file and line.
        `overrides` (snake_case field names) are applied on top, as later command-line options are in Kaldi.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read fbank config {path}: {e}") from e
        values: dict[str, Any] = {"num_mel_bins": _KALDI_NUM_MEL_BINS}  # the one default asr-bn changes
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            if not line.startswith("--"):
                raise UsageError(f"{where}: {line!r} is not an option (Kaldi conf lines look like --num-mel-bins=40)")
            name, has_value, value = line[2:].partition("=")
            name, value = name.strip(), value.strip()
            key = name.replace("_", "-")
            if key in _KALDI_NAMES:
                field = _KALDI_NAMES[key]
                values[field] = _parse_kaldi_value(where, name, value if has_value else None, _FIELD_TYPES[field])
            elif key in _KALDI_IGNORED:
                continue
            elif key in _KALDI_DEFAULT_ONLY:
                default = _KALDI_DEFAULT_ONLY[key]
                given = _parse_kaldi_value(where, name, value if has_value else None, type(default))
                if given != default:
                    raise UsageError(
                        f"{where}: --{name}={value} is not supported by asr-bn (only {default!r}); "
                        f"{_KALDI_DEFAULT_ONLY_WHY[key]}"
                    )
            elif key in _MFCC_PLP_OPTIONS:
                raise UsageError(f"{where}: --{name} is an MFCC/PLP option; asr-bn computes fbank, remove the line")
            else:
                raise UsageError(
                    f"{where}: unknown option --{name} (not a compute-fbank-feats option; check the spelling)"
                )
        values.update(overrides)
        return cls.from_dict(values)

    def to_kaldi_conf(self) -> str:
        """The options as a Kaldi conf file's text (every option, one per line), readable by compute-fbank-feats."""
        lines = []
        for kaldi_name, field in _KALDI_NAMES.items():
            v = getattr(self, field)
            lines.append(f"--{kaldi_name}={str(v).lower() if isinstance(v, bool) else v}")
        return "\n".join(lines) + "\n"


_KALDI_NUM_MEL_BINS = 23  # compute-fbank-feats' default (FbankConfig's 40 is the paper's)
# Kaldi option name → FbankConfig field (the only spellings Kaldi accepts besides '_' for '-').
_KALDI_NAMES = {f.metadata["kaldi"]: f.name for f in dataclasses.fields(FbankConfig)}
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(FbankConfig)}
# compute-fbank-feats options that never change the features of a whole utterance.
_KALDI_IGNORED = {"verbose", "print-args", "debug-mel", "output-format", "write-utt2dur", "utt2spk"}
# Options accepted only at their default value, and why.
_KALDI_DEFAULT_ONLY: dict[str, Any] = {
    "allow-downsample": False,
    "allow-upsample": False,
    "subtract-mean": False,
    "htk-mode": False,
    "max-feature-vectors": -1,
    "channel": -1,
    "min-duration": 0.0,
    "vtln-map": "",
}
_KALDI_DEFAULT_ONLY_WHY = {
    "allow-downsample": "asr-bn never resamples; resample the audio (e.g. sox in wav.scp) to --sample-frequency",
    "allow-upsample": "asr-bn never resamples; resample the audio (e.g. sox in wav.scp) to --sample-frequency",
    "subtract-mean": "use CMVN instead (the pipeline's cmvn mode)",
    "htk-mode": "HTK-mode mel banks are not implemented",
    "max-feature-vectors": "it only matters for online decoding",
    "channel": "pass --channel to the asr-bn command instead",
    "min-duration": "short utterances are skipped and named in the report already",
    "vtln-map": "pass per-utterance warps to compute_fbank(vtln_warp=...) instead",
}
_MFCC_PLP_OPTIONS = {"num-ceps", "cepstral-lifter", "lpc-order", "compress-factor", "cepstral-scale"}


def _parse_kaldi_value(where: str, name: str, value: str | None, typ: Any) -> Any:
    """Parse one option value the way Kaldi's ParseOptions does (bools: true/false/t/f/1/0, bare flag = true)."""
    typ = {"float": float, "int": int, "bool": bool, "str": str}.get(typ, typ) if isinstance(typ, str) else typ
    if typ is bool:
        v = "true" if value is None else value.lower()
        if v in ("true", "t", "1"):
            return True
        if v in ("false", "f", "0"):
            return False
        raise UsageError(f"{where}: --{name}={value} is not a boolean (use true or false)")
    if value is None or value == "":
        if typ is str:
            return ""
        raise UsageError(f"{where}: --{name} needs a value, e.g. --{name}=...")
    try:
        return typ(value)
    except ValueError as e:
        raise UsageError(f"{where}: --{name}={value} is not a valid {typ.__name__}") from e


# -- training -----------------------------------------------------------------------------------------------------

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "newbob", "exponential")
CRITERIA = ("ce", "mmi")
AMP_MODES = ("none", "bf16", "fp16")
BN_MODES = ("none", "frame", "sequence")
BnMode = Literal["none", "frame", "sequence"]
_POSITIVE = Range(0, low_open=True)
_AT_LEAST_1 = Range(1)
_AT_LEAST_0 = Range(0)
_FRACTION = Range(0, 1, high_open=True)  # [0, 1)


@dataclass
class ModelConfig:
    """Shape and batch-norm options of a BN-BLSTM; saved beside each model as ``config.json``."""

    input_dim: int
    num_pdfs: int
    layers: int = 5
    units: int = 250  # per direction
    bn: BnMode = "sequence"
    bn_hidden: bool = False
    dropout: float = 0.0
    forget_bias: float = 0.0
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("input_dim", "num_pdfs", "layers", "units"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.bn not in BN_MODES:
            raise ValueError(f"ModelConfig.bn must be one of {BN_MODES}, got {self.bn!r}")
        if self.bn_hidden and self.bn == "none":
            raise ValueError("ModelConfig.bn_hidden needs bn='frame' or bn='sequence' (it adds BN on W_h·h to them)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f"ModelConfig.bn_momentum must be in (0, 1], got {self.bn_momentum!r}")
        if not self.bn_eps > 0.0:
            raise ValueError(f"ModelConfig.bn_eps must be > 0, got {self.bn_eps!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


@dataclass
class TrainConfig:
    """Every option of a training run; saved as EXP_DIR/config.json and in each checkpoint."""

    data: str
    dev: str
    exp_dir: str
    # model (with the data's feature dim and pdf count this fixes the shapes; on --resume it comes from the checkpoint)
    layers: int = option(5, _AT_LEAST_1)
    units: int = option(250, _AT_LEAST_1)
    bn: str = option("sequence", choices=BN_MODES)
    bn_hidden: bool = False
    dropout: float = option(0.0, _FRACTION)
    forget_bias: float = 0.0  # any value: the initial forget-gate bias
    num_pdfs: int | None = option(None, _AT_LEAST_1)  # None: the largest pdf-id of train/dev targets + 1
    # optimisation
    optimizer: str = option("adam", choices=OPTIMIZERS)
    lr: float = option(1e-3, _POSITIVE)
    momentum: float = option(0.9, _FRACTION)  # SGD only
    weight_decay: float = option(0.0, _AT_LEAST_0)
    clip_norm: float = option(5.0, _AT_LEAST_0)  # gradient-norm clipping; 0 = off
    schedule: str = option("newbob", choices=SCHEDULES)
    lr_decay: float = option(0.5, Range(0, 1, low_open=True))  # newbob: factor per halving; exponential: per epoch
    min_improvement: float = option(0.0, _FRACTION)  # relative dev-CE gain below which an evaluation does not improve
    epochs: int = option(20, _AT_LEAST_1)
    patience: int = option(3, _AT_LEAST_0)  # stop after this many evaluations in a row without improvement; 0 = never
    # batches
    batch_size: int | None = option(24, _AT_LEAST_1)
    max_frames: int | None = option(None, _AT_LEAST_0)  # padded frames per global batch (exclusive with batch_size)
    max_train_frames: int | None = option(1300, _AT_LEAST_0)  # drop longer training utterances (named in report.json)
    # start from a trained model (its shape, weights and priors; the model options above are then unused)
    init: str | None = None
    # the objective: frame cross-entropy, or sequence training with MMI (Kaldi nnet1's nnet-train-mmi-sequential)
    # over denominator lattices of the training data (lat.scp of `asr-bn decode --lattices`, transition-ids of
    # lattice_model's); each evaluation's model becomes final.pt (as Kaldi's fixed sequence-training epochs)
    criterion: str = option("ce", choices=CRITERIA)
    denlats: str | None = None
    lattice_model: str | None = None
    acwt: float = option(0.1, _POSITIVE)  # acoustic scale of the lattice posteriors and the objective
    drop_frames: bool = True  # MMI: no gradient on frames whose reference pdf is not in the lattice (Kaldi's default)
    # distillation: the loss is (1 - w) x CE toward pdf.scp + w x CE toward the soft targets of the data's post.scp
    soft_weight: float = option(0.0, Range(0, 1))
    drop_last: bool = False  # drop each epoch's last training batch when it is short (with batch_size)
    # SpecAugment masks of training batches (asr_bn.augment; 0 = none): per utterance, N runs of up to W frames / dims
    num_frame_masks: int = option(0, _AT_LEAST_0)
    frames_mask_size: int = option(0, _AT_LEAST_0)
    num_feature_masks: int = option(0, _AT_LEAST_0)
    features_mask_size: int = option(0, _AT_LEAST_0)
    # evaluation, logging, checkpoints
    eval_every: int = option(0, _AT_LEAST_0)  # also evaluate on dev every N updates; 0 = once per epoch
    # BN statistics of dev scores and final.pt: 0 = the running averages; N = population statistics re-estimated
    # before each evaluation over the same N training batches (the paper's alternative)
    population_batches: int = option(0, _AT_LEAST_0)
    log_every: int = option(20, _AT_LEAST_1)
    checkpoint_every: int = option(200, _AT_LEAST_1)
    keep_models: bool = False  # also keep each evaluation's model as EXP_DIR/models/update-N.pt (asr-bn average)
    # system (may change on --resume)
    device: str = "auto"
    amp: str = option("none", choices=AMP_MODES)
    num_workers: int = option(2, _AT_LEAST_0)
    cache: bool = False
    seed: int = option(0, Range(0, 2**32 - 1))  # numpy's seeds are 32-bit
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_train_frames"):  # 0 is the command line's "unused"
            if getattr(self, name) == 0:
                setattr(self, name, None)
        check_options(self)
        if (self.batch_size is None) == (self.max_frames is None):
            raise UsageError("give exactly one of --batch-size and --max-frames")
        if self.criterion == "mmi" and not (self.init and self.denlats and self.lattice_model):
            raise UsageError("--criterion mmi needs --init (a model trained with frame CE), --denlats (the lat.scp of "
                             "`asr-bn decode --lattices` on DATA with that model) and --lattice-model (its final.mdl)")
        if self.criterion == "mmi" and self.soft_weight:
            raise UsageError("--criterion mmi trains toward the alignments: drop --soft-weight")
        self.model_config(input_dim=1, num_pdfs=1)  # the model options are checked before anything is read
        if self.tensorboard:
            from importlib.util import find_spec

            if find_spec("tensorboard") is None:  # what torch.utils.tensorboard imports
                raise UsageError("--tensorboard needs the tensorboard package (pip install tensorboard)")

    def model_config(self, input_dim: int, num_pdfs: int) -> ModelConfig:
        """The model (ModelConfig) these options describe, for `input_dim` features and `num_pdfs`."""
        try:
            return ModelConfig(
                input_dim=input_dim, num_pdfs=num_pdfs, layers=self.layers, units=self.units, bn=self.bn,
                bn_hidden=self.bn_hidden, dropout=self.dropout, forget_bias=self.forget_bias,
            )  # fmt: skip
        except ValueError as e:
            raise UsageError(f"bad model option: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of to_dict; unknown keys are a UsageError."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UsageError(f"unknown training option(s) {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_options(cls, preset: str = "default", **options: Any) -> "TrainConfig":
        """Defaults, then the preset, then the options given on the command line (pass only those)."""
        if preset not in PRESETS:
            raise UsageError(f"--preset {preset} is not one of {', '.join(PRESETS)}")
        given = dict(options)
        if given.get("max_frames"):
            if "batch_size" in given:
                raise UsageError("give exactly one of --batch-size and --max-frames")
            given["batch_size"] = None
        return cls(**{**PRESETS[preset], **given})

    def resumed(self, saved: dict[str, Any], given: set[str] | None = None) -> tuple["TrainConfig", list[str]]:
        """The config of a resumed run and a note per change: the checkpoint's `saved` config, with the options
        in `given` (None: every field of this config) taken from this one where they differ and RESUMABLE; a
        differing option that is not is a UsageError."""
        old = TrainConfig.from_dict(saved)
        changes: dict[str, Any] = {}
        notes: list[str] = []
        refused = []
        for name in sorted(given if given is not None else self.__dataclass_fields__):
            new, before = getattr(self, name), getattr(old, name)
            if new == before:
                continue
            if name in _PATHS:  # the same data at a new place: no note
                changes[name] = new
            elif name in RESUMABLE:
                changes[name] = new
                notes.append(f"--{name.replace('_', '-')} {before} → {new}")
            else:
                refused.append(f"--{name.replace('_', '-')} {new} (the run has {before})")
        if refused:
            raise UsageError(
                f"--resume cannot change {', '.join(refused)}: model shape, optimisation, batches and seed are fixed "
                f"by the checkpoint (so that config.json describes the whole run); drop them, or train in a new EXP_DIR"
            )
        return dataclasses.replace(old, **changes), notes


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Laurent et al. 2016: 5 x 250 BLSTM (Glorot init, zero biases: the model's defaults), SGD lr 1e-4 with
    # momentum 0.9, 24 utterances per batch, training utterances of at most 1300 frames.
    "paper": dict(
        layers=5, units=250, optimizer="sgd", lr=1e-4, momentum=0.9, clip_norm=0.0, schedule="constant",
        batch_size=24, max_train_frames=1300,
    ),
}

_PATHS = ("data", "dev", "exp_dir", "init", "denlats", "lattice_model")
# What --resume may change: when training stops, how it reports, and where and how it runs. The model shape, the
# optimisation (lr too: the schedule and the optimiser's state were built on it), the batches and the seed are fixed
# by the checkpoint.
RESUMABLE = (
    "epochs", "patience", "min_improvement", "eval_every", "log_every", "checkpoint_every", "keep_models", "device",
    "amp", "num_workers", "cache", "tensorboard",
)  # fmt: skip


# -- forward, decode and score ---------------------------------------------------------------------------------


@dataclass
class ForwardConfig:
    """How `forward` and `score_frames` run the network."""

    posteriors: bool = False  # write log-posteriors log p(s|x) instead of scaled log-likelihoods
    prior_scale: float = option(1.0, _AT_LEAST_0)  # scale on log p(s) (Kaldi nnet-forward --prior-scale)
    prior_floor: float = option(1e-10, Range(0, 1, low_open=True, high_open=True))  # rarer pdfs never win
    max_frames: int = option(20000, _AT_LEAST_1)  # padded frames (B × T_max) per batch; a longer utterance goes alone
    window: int = option(256, _AT_LEAST_1)  # consecutive utterances sorted by length together (output in input order)
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:N
    num_workers: int = option(0, _AT_LEAST_0)  # DataLoader processes reading features

    def check(self) -> None:
        """Reject impossible values with a one-line fix."""
        check_options(self)


SIL_PROB = Range(0, 1, low_open=True, high_open=True)  # mkgraph --sil-prob: both -log p and -log(1 - p) are costs
SCORE_MODES = ("all", "present", "strict")  # score wer --mode: missing hypotheses count as empty / are left out / fail


FASTER_DECODER_MIN_ACTIVE = 20  # kaldi-decoder's FasterDecoderOptions.min_active (Kaldi's --min-active default)


@dataclass
class DecodeConfig:
    """Decoder options, with the defaults of Kaldi's steps/nnet/decode.sh."""

    acoustic_scale: float = option(0.1, _POSITIVE)  # scale on the log-likelihoods (Kaldi --acoustic-scale / acwt)
    beam: float = option(13.0, _POSITIVE)  # decoding beam (cost units)
    max_active: int = option(7000, Range(FASTER_DECODER_MIN_ACTIVE, low_open=True))  # most active states per frame
    # (one-best decoder only); Kaldi's FasterDecoder asserts min_active < max_active and aborts the process
    lattice_beam: float = option(8.0, _POSITIVE)  # lattice pruning beam (lattice decoding only)
    lattices: bool = False  # decode with lattices (Kaldi-readable lat.ark, and hyp_LMWT files with `lmwt`)
    lmwt: tuple[int, ...] = ()  # LM weights to rescore the lattices with (needs lattices), e.g. 7..17
    ctm: bool = False  # also write word times of the one-best path (Kaldi `ctm`)
    frame_shift: float = option(0.01, _POSITIVE)  # seconds per frame of the log-likelihoods (features'), for the ctm

    def check(self) -> None:
        """Reject impossible values with a one-line fix."""
        check_options(self)
        if self.lmwt and not self.lattices:
            raise UsageError("--lmwt rescoring needs lattices: add --lattices")
        if any(w <= 0 for w in self.lmwt):
            raise UsageError(f"--lmwt weights must be positive, got {list(self.lmwt)}")


@dataclass
class DecodeFmllrConfig:
    """steps/decode_fmllr.sh's options (names and defaults), with gmm-est-fmllr's --fmllr-min-count."""

    acwt: float = option(0.083333, _POSITIVE)  # acoustic scale of decoding and of the lattice posteriors
    first_beam: float = option(10.0, _POSITIVE)  # beam of the speaker-independent pass
    beam: float = option(13.0, _POSITIVE)  # beam of the adapted pass
    lattice_beam: float = option(6.0, _POSITIVE)
    silence_weight: float = option(0.01, Range(0.0))  # weight of silence frames in the fMLLR statistics
    fmllr_min_count: float = option(500.0, Range(0.0))  # a speaker with fewer weighted frames keeps the identity
    determinize_beam: float = option(4.0, _POSITIVE)  # pass 2's lattice-determinize-pruned --beam
    lmwt: tuple[int, ...] = ()  # LM weights of the hyp_LMWT sweep (score.sh's), e.g. 7..17
    num_jobs: int = option(1, Range(1))  # Kaldi's nj: parts of the data (whole speakers) decoded side by side

    def decoding(self, beam: float) -> DecodeConfig:
        """The lattice decoder's options for a pass with `beam`."""
        return DecodeConfig(acoustic_scale=self.acwt, beam=beam, lattice_beam=self.lattice_beam, lattices=True,
                            lmwt=self.lmwt)
