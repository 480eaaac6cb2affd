"""Decoding speed: `asr-bn decode` against Kaldi's own decoders, whole processes, same graph, log-likelihoods,
beams and words out, side by side in one run.

    python bench/decode.py                  # yesno graph + Kaldi GMM log-likelihoods of its test set, x8
    python bench/decode.py --repeat 2 --rounds 1   # a smoke run
    python bench/decode.py --graph G --model final.mdl --loglikes ll.ark   # any graph and log-likelihoods

Rows: one-best `asr-bn decode` vs `decode-faster-mapped` (same --beam, --max-active); lattices `asr-bn decode
--lattices` vs `latgen-faster-mapped` (same --beam, --lattice-beam; Kaldi's default determinizes its lattices,
asr-bn writes state-level ones, so the row with --determinize-lattice=false is the like-for-like one). Each
figure is the median over --rounds of wall and CPU (user + sys of the child) seconds, the runs interleaved
(A B A B …); the ratio is asr-bn / Kaldi. The last column says whether the words equal Kaldi's. Kaldi runs with
--allow-partial=true: asr-bn keeps the best partial path of an utterance that reaches no final state, as that does.
Needs ../shared/kaldi (Kaldi's binaries) and, for the default inputs, ../shared/data/yesno.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _proc
import kaldiio

ROOT = Path(__file__).resolve().parents[1].parent / "shared"
KALDI_BIN = ROOT / "kaldi" / "bin"
YESNO = ROOT / "data" / "yesno"
ENV = {**_proc.ENV, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LC_ALL": "C"}


def kaldi(name: str, *args: str | Path, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    """Run a Kaldi binary of the bundle; raise with its log when it fails."""
    result = subprocess.run([str(KALDI_BIN / name), *map(str, args)], capture_output=True, env=ENV, **kwargs)
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{result.stderr.decode()[-2000:]}")
    return result


def yesno_loglikes(out: Path, repeat: int) -> Path:
    """Kaldi GMM log-likelihoods (gmm-compute-likes, exp/mono/final.mdl) of yesno's 29 test utterances, each
    `repeat` times under new keys: MFCCs as the yesno run made them, CMVN, deltas."""
    data = YESNO / "data/test_yesno"
    (out / "wav.scp").write_text(
        "".join(f"{u} {YESNO / p}\n" for u, p in (line.split() for line in (data / "wav.scp").open()))
    )
    kaldi("compute-mfcc-feats", "--use-energy=false", "--sample-frequency=8000", "--dither=0",
          f"scp:{out / 'wav.scp'}", f"ark:{out / 'mfcc.ark'}")  # fmt: skip
    kaldi("compute-cmvn-stats", f"ark:{out / 'mfcc.ark'}", f"ark:{out / 'cmvn.ark'}")
    feats = kaldi("apply-cmvn", f"ark:{out / 'cmvn.ark'}", f"ark:{out / 'mfcc.ark'}", "ark:-").stdout
    feats = kaldi("add-deltas", "ark:-", "ark:-", input=feats).stdout
    kaldi("gmm-compute-likes", YESNO / "exp/mono/final.mdl", "ark:-", f"ark:{out / 'll1.ark'}", input=feats)
    mats = list(kaldiio.load_ark(str(out / "ll1.ark")))
    kaldiio.save_ark(str(out / "ll.ark"), {f"r{r}_{utt}": m for r in range(repeat) for utt, m in mats})
    return out / "ll.ark"


def words_of(path: Path, words_txt: Path | None = None) -> dict[str, list[str]]:
    """utt → words of a Kaldi text file (integer ids mapped through words.txt when given)."""
    table = dict(line.split()[::-1] for line in words_txt.read_text().splitlines()) if words_txt else None
    out = {}
    for line in path.read_text().splitlines():
        utt, *ws = line.split()
        out[utt] = [table[w] for w in ws] if table else ws
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", type=Path, default=YESNO / "exp/mono/graph", help="graph dir (HCLG.fst, words.txt)")
    ap.add_argument("--model", type=Path, default=YESNO / "exp/mono/final.mdl")
    ap.add_argument("--loglikes", type=Path, help="log-likelihood ark (default: yesno test, GMM scores)")
    ap.add_argument("--repeat", type=int, default=8, help="copies of the yesno test set (default inputs only)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beam", type=float, default=13.0)
    ap.add_argument("--max-active", type=int, default=7000)
    ap.add_argument("--lattice-beam", type=float, default=8.0)
    args = ap.parse_args()
    if not KALDI_BIN.is_dir():
        raise SystemExit(f"{KALDI_BIN}: Kaldi's binaries are needed for the comparison")
    asr_bn = shutil.which("asr-bn", path=str(Path(sys.executable).parent)) or "asr-bn"
    tmp = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    try:
        ll = args.loglikes or yesno_loglikes(tmp, args.repeat)
        graph, words_txt = args.graph, args.graph / "words.txt"
        common = ["--acoustic-scale=0.1", "--allow-partial=true", f"--beam={args.beam}", str(args.model),
                  str(graph / "HCLG.fst"), f"ark:{ll}"]  # fmt: skip
        ours = [asr_bn, "decode", str(graph), str(args.model), str(ll), "--acoustic-scale", "0.1", "--beam",
                str(args.beam)]  # fmt: skip
        rows = {
            "one-best vs decode-faster-mapped": (
                [*ours, "--max-active", str(args.max_active), str(tmp / "ours1")],
                [str(KALDI_BIN / "decode-faster-mapped"), f"--max-active={args.max_active}", *common,
                 f"ark,t:{tmp / 'kaldi1.txt'}"],
                tmp / "ours1/text", tmp / "kaldi1.txt",
            ),
            "lattices vs latgen-faster-mapped": (
                [*ours, "--lattices", "--lattice-beam", str(args.lattice_beam), str(tmp / "ours2")],
                [str(KALDI_BIN / "latgen-faster-mapped"), f"--lattice-beam={args.lattice_beam}",
                 f"--max-active={args.max_active}", *common, f"ark:{tmp / 'lat.ark'}"],
                tmp / "ours2/text", None,
            ),
            "lattices vs latgen-faster-mapped --determinize-lattice=false": (
                [*ours, "--lattices", "--lattice-beam", str(args.lattice_beam), str(tmp / "ours3")],
                [str(KALDI_BIN / "latgen-faster-mapped"), f"--lattice-beam={args.lattice_beam}",
                 f"--max-active={args.max_active}", "--determinize-lattice=false", *common,
                 f"ark:{tmp / 'lat3.ark'}"],
                tmp / "ours3/text", None,
            ),
        }  # fmt: skip
        print(f"graph {graph}, log-likelihoods {ll}, {args.rounds} rounds, beam {args.beam}, "
              f"max-active {args.max_active}, lattice-beam {args.lattice_beam}")  # fmt: skip
        print("| run | asr-bn wall s | Kaldi wall s | ratio (wall) | asr-bn CPU s | Kaldi CPU s | ratio (CPU) "
              "| words |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        _proc.timed(next(iter(rows.values()))[0], ENV)  # warm-up: writes asr-bn's bytecode cache, untimed
        for name, (ours_cmd, kaldi_cmd, ours_text, kaldi_text) in rows.items():
            times: dict[str, list[tuple[float, float]]] = {"ours": [], "kaldi": []}
            for _ in range(args.rounds):
                times["ours"].append(_proc.timed(ours_cmd, ENV))
                times["kaldi"].append(_proc.timed(kaldi_cmd, ENV))
            if kaldi_text is None:  # Kaldi's words from its lattices, at the decoding acoustic scale
                lat = kaldi_cmd[-1]
                best = kaldi("lattice-best-path", "--acoustic-scale=0.1", lat, "ark,t:-").stdout
                kaldi_text = tmp / "kaldi_best.txt"
                kaldi_text.write_bytes(best)
            ours_words, kaldi_words = words_of(ours_text), words_of(kaldi_text, words_txt)
            differ = sum(ours_words[u] != kaldi_words.get(u) for u in ours_words) + len(kaldi_words.keys() - ours_words)
            same = "same words" if not differ else f"WORDS DIFFER in {differ} utterances"
            (ow, oc), (kw, kc) = (
                (statistics.median(w for w, _ in times[k]), statistics.median(c for _, c in times[k]))
                for k in ("ours", "kaldi")
            )
            ratios = f"{ow / kw:.2f}× | {oc:.2f} | {kc:.2f} | {oc / kc:.2f}×"
            print(f"| {name} | {ow:.2f} | {kw:.2f} | {ratios} | {same} |")
        print(f"{len(words_of(tmp / 'ours1/text'))} utterances")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
