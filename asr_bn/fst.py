"""OpenFst binary files of the standard (tropical) arc type as numpy arrays, vector or const, as OpenFst writes them.

Kaldi's utils/mkgraph.sh writes HCLG.fst as a const FST, which kaldifst cannot read (its OpenFst registers no
const type) although kaldi-decoder decodes any FST. `read_std_fst` parses either layout with numpy into
`FstArrays` (what a graph check needs, vectorised), and `decoder_fst` hands the same graph to kaldi-decoder as a
kaldifst const FST, made from a vector FST in memory: a vector file is read by kaldifst directly, a const one is
rewritten in vector layout first (no per-arc loop).

OpenFst's binary layout (little-endian): a header — magic, fst type and arc type (length-prefixed strings),
version, flags, properties, start state, state and arc counts — then optional symbol tables, then the body.
Vector: per state its final weight, arc count (int64) and arcs. Const: one array of state records (final weight,
first arc, arc and epsilon counts, uint32), one array of arcs, each 16-byte aligned when the header says so.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr_bn.errors import AsrBnError

if TYPE_CHECKING:
    from asr_bn.kaldi_ext import kaldifst

__all__ = ["FstArrays", "read_std_fst", "parse_lattice", "vector_bytes", "decoder_fst", "relabel_input"]

_MAGIC = 2125659606
_HAS_ISYMBOLS, _HAS_OSYMBOLS, _IS_ALIGNED = 1, 2, 4
_SYMBOL_TABLE_MAGIC = 2125658996
_MUTABLE = 0x2  # OpenFst's kMutable property bit (a vector FST has it, a const one does not)
# kAcceptor, kNotAcceptor, kIDeterministic, kNonIDeterministic, kILabelSorted, kNotILabelSorted: what new input
# labels can make untrue
_INPUT_LABEL_PROPERTIES = 0x10000 | 0x20000 | 0x40000 | 0x80000 | 0x10000000 | 0x20000000
_ALIGN = 16
_ARC = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("weight", "<f4"), ("nextstate", "<i4")])
_CONST_STATE = np.dtype(
    [("final", "<f4"), ("pos", "<u4"), ("narcs", "<u4"), ("niepsilons", "<u4"), ("noepsilons", "<u4")]
)
_VECTOR_STATE = np.dtype([("final", "<f4"), ("narcs", "<i8")])  # packed: 12 bytes, as VectorFst writes it
# Kaldi's state-level Lattice (arc type "lattice4"): the weight is two floats, graph and acoustic cost.
_LATTICE_ARC = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("graph", "<f4"), ("acoustic", "<f4"),
                         ("nextstate", "<i4")])
_LATTICE_STATE = np.dtype([("final", "<f4", (2,)), ("narcs", "<i8")])
_LAYOUTS = {"standard": (_ARC, _VECTOR_STATE), "lattice4": (_LATTICE_ARC, _LATTICE_STATE)}
_I32, _I64 = struct.Struct("<i"), struct.Struct("<q")
_HEAD = struct.Struct("<iiQqqq")  # version, flags, properties, start, states, arcs


class _Corrupt(Exception):
    """The bytes are not the layout the header promises (reported by read_std_fst as one AsrBnError)."""


@dataclass
class FstArrays:
    """An FST over standard arcs as arrays: arcs of state s are arcs[first[s]:first[s + 1]]."""

    fst_type: str  # "vector" or "const"
    start: int  # -1 for an empty FST
    final: np.ndarray  # (num_states,) float32 final weights (inf: not final); a lattice's: (num_states, 2)
    first: np.ndarray  # (num_states + 1,) int64 offsets into arcs
    arcs: np.ndarray  # (num_arcs,) structured: ilabel, olabel, weight (a lattice's: graph, acoustic), nextstate
    properties: int  # the header's OpenFst property bits
    raw: bytes  # the file's bytes (a vector file is handed to kaldifst as is)

    @property
    def num_states(self) -> int:
        return len(self.final)


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = _I32.unpack_from(buf, pos)
    if not 0 <= n <= 256 or pos + 4 + n > len(buf):
        raise _Corrupt("a header string is cut off or implausible")
    return bytes(buf[pos + 4 : pos + 4 + n]).decode("ascii", "replace"), pos + 4 + n


def _skip_symbol_table(buf: bytes, pos: int) -> int:
    """The offset after an OpenFst symbol table (kept by fstcompile --keep_isymbols; decoding ignores it)."""
    (magic,) = _I32.unpack_from(buf, pos)
    if magic != _SYMBOL_TABLE_MAGIC:
        raise _Corrupt("the header announces a symbol table that is not there")
    _, pos = _string(buf, pos + 4)
    (size,) = _I64.unpack_from(buf, pos + 8)
    pos += 16
    if not 0 <= size <= len(buf):
        raise _Corrupt(f"a symbol table claims {size} symbols")
    for _ in range(size):
        (n,) = _I32.unpack_from(buf, pos)
        if n < 0:
            raise _Corrupt("a symbol table holds a symbol of negative length")
        pos += 4 + n + 8
    return pos


def _parse(buf: bytes | memoryview, want: str = "standard", exact: bool = True) -> FstArrays:
    """The FST at the start of `buf`; with `exact`, `buf` must end where it ends (a file), else what follows it is
    left (an archive: the next key and its object)."""
    try:
        if len(buf) < 4 or _I32.unpack_from(buf, 0)[0] != _MAGIC:
            raise _Corrupt("no OpenFst magic number at its start")
        fst_type, pos = _string(buf, 4)
        arc_type, pos = _string(buf, pos)
        version, flags, props, start, num_states, num_arcs = _HEAD.unpack_from(buf, pos)
        pos += _HEAD.size
        for flag in (_HAS_ISYMBOLS, _HAS_OSYMBOLS):
            if flags & flag:
                pos = _skip_symbol_table(buf, pos)
    except (struct.error, OverflowError):
        raise _Corrupt("its header is cut off") from None
    if arc_type != want:
        raise _Corrupt(f"arc type {arc_type!r}, not the {want!r} arcs of a "
                       f"{'decoding graph' if want == 'standard' else 'Kaldi lattice'}")
    if num_states < 0:
        raise _Corrupt(f"its header gives {num_states} states")
    if fst_type == "const":
        return _parse_const(buf, pos, flags & _IS_ALIGNED, start, num_states, num_arcs, props)
    if fst_type == "vector":
        return _parse_vector(buf, pos, start, num_states, props, *_LAYOUTS[arc_type], exact=exact)
    raise _Corrupt(f"FST type {fst_type!r}, not vector or const (convert it with `fstconvert --fst_type=const`)")


def _aligned(pos: int, aligned: int) -> int:
    return -(-pos // _ALIGN) * _ALIGN if aligned else pos


def _parse_const(
    buf: bytes, pos: int, aligned: int, start: int, num_states: int, num_arcs: int, props: int
) -> FstArrays:
    pos = _aligned(pos, aligned)
    end = pos + num_states * _CONST_STATE.itemsize
    arcs_at = _aligned(end, aligned)
    if num_arcs < 0 or arcs_at + num_arcs * _ARC.itemsize != len(buf):
        raise _Corrupt(f"{len(buf)} bytes do not hold the {num_states} states and {num_arcs} arcs its header gives")
    states = np.frombuffer(buf, _CONST_STATE, num_states, pos)
    first = np.zeros(num_states + 1, np.int64)
    np.cumsum(states["narcs"], out=first[1:])
    if first[-1] != num_arcs or not np.array_equal(states["pos"], first[:-1]):
        raise _Corrupt("its states' arc ranges do not tile its arcs")
    arcs = np.frombuffer(buf, _ARC, num_arcs, arcs_at)
    return FstArrays("const", start, states["final"], first, arcs, props, buf)


def _record_words(first: np.ndarray, record: int = 3, arc: int = 4) -> np.ndarray:
    """A mask over the int32 words of a vector FST's body: True on the `record` words of each state's record (final
    weight, int64 arc count), which precede that state's arcs (`arc` words each)."""
    num_states = len(first) - 1
    at = record * np.arange(num_states) + arc * first[:-1]
    mask = np.zeros(record * num_states + arc * int(first[-1]), bool)
    for k in range(record):
        mask[at + k] = True
    return mask


def _parse_vector(buf: bytes | memoryview, pos: int, start: int, num_states: int, props: int,
                  arc_dtype: np.dtype = _ARC, state_dtype: np.dtype = _VECTOR_STATE, exact: bool = True) -> FstArrays:
    # Each state's record (final weight, arc count) precedes its arcs, so finding the records takes one pass over
    # the states (not the arcs); the arcs are then gathered in one go.
    counts: list[int] = []
    unpack, at, size = _I64.unpack_from, pos, len(buf)
    record, weight = state_dtype.itemsize, state_dtype.itemsize - 8
    try:
        for _ in range(num_states):
            n = unpack(buf, at + weight)[0]
            counts.append(n)
            at += record + arc_dtype.itemsize * n
            if n < 0 or at > size:
                raise _Corrupt(f"state {len(counts) - 1} of {num_states} claims {n} arcs, more than its bytes hold")
    except (struct.error, OverflowError):
        raise _Corrupt(f"its body is cut off at state {len(counts) - 1} of {num_states}") from None
    if at != size and exact:
        raise _Corrupt(f"its states' records do not end at its last byte ({at} of {size})")
    if at != size or not isinstance(buf, bytes):  # a slice of an archive's map: the FST's own bytes, copied
        buf, size = bytes(buf[:at]), at
    first = np.zeros(num_states + 1, np.int64)
    np.cumsum(counts, out=first[1:])
    body = np.frombuffer(buf, np.int32, (size - pos) // 4, pos)
    records = _record_words(first, record // 4, arc_dtype.itemsize // 4)
    final = body[records].reshape(-1, record // 4)[:, : weight // 4].copy().view("<f4")
    arcs = body[~records].view(arc_dtype)
    return FstArrays("vector", start, final[:, 0] if weight == 4 else final, first, arcs, props, buf)


def read_std_fst(path: str | Path) -> FstArrays:
    """Parse an OpenFst vector or const FST file of standard arcs; anything else is one AsrBnError naming it."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise AsrBnError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return _parse(buf)
    except _Corrupt as e:
        raise AsrBnError(
            f"{path}: not an OpenFst vector or const FST of standard arcs ({e}); rebuild it, or convert it with "
            "OpenFst's `fstconvert --fst_type=vector`"
        ) from None


def parse_lattice(buf: bytes | memoryview, utt: str, exact: bool = True) -> FstArrays:
    """A Kaldi state-level lattice in OpenFst's vector layout (what `asr_bn.decode` writes) as arrays; `utt` names
    it in the one AsrBnError a malformed one gives. Without `exact`, `buf` may go on past it (an archive from the
    lattice's offset on)."""
    try:
        return _parse(buf, "lattice4", exact)
    except (_Corrupt, struct.error) as e:
        raise AsrBnError(f"utterance {utt}: not a Kaldi state-level lattice ({e}); decode it again") from None


def _header_bytes(fst_type: str, version: int, props: int, start: int, num_states: int, num_arcs: int,
                  arc_type: str = "standard") -> bytes:
    def string(s: str) -> bytes:
        return _I32.pack(len(s)) + s.encode()

    head = _HEAD.pack(version, 0, props, start, num_states, num_arcs)
    return _I32.pack(_MAGIC) + string(fst_type) + string(arc_type) + head


def vector_bytes(fst: FstArrays, changed: bool = False) -> bytes:
    """The FST (standard arcs or a lattice's) in OpenFst's vector layout (what VectorFst writes), without symbol
    tables; `changed`: the arrays were edited, so a vector file's own bytes are not reused."""
    if fst.fst_type == "vector" and not changed:
        return fst.raw
    arc_type = "lattice4" if fst.arcs.dtype == _LATTICE_ARC else "standard"
    arc_dtype, state_dtype = _LAYOUTS[arc_type]
    records = np.empty(fst.num_states, state_dtype)
    records["final"] = fst.final
    records["narcs"] = np.diff(fst.first)
    mask = _record_words(fst.first, state_dtype.itemsize // 4, arc_dtype.itemsize // 4)
    body = np.empty(len(mask), np.int32)
    body[mask] = records.view(np.int32)
    body[~mask] = np.ascontiguousarray(fst.arcs).view(np.int32)
    header = _header_bytes("vector", 2, fst.properties | _MUTABLE, fst.start, fst.num_states, len(fst.arcs), arc_type)
    return header + body.tobytes()


def relabel_input(fst: FstArrays, table: np.ndarray) -> FstArrays:
    """The FST with each arc's input label i replaced by table[i] (table[0] = 0 keeps epsilons); the properties
    that depend on input labels are cleared. Hand it on with `decoder_fst(…, changed=True)`."""
    arcs = fst.arcs.copy()
    arcs["ilabel"] = table[arcs["ilabel"]]
    return FstArrays(fst.fst_type, fst.start, fst.final, fst.first, arcs, fst.properties & ~_INPUT_LABEL_PROPERTIES,
                     fst.raw)


def decoder_fst(fst: FstArrays, path: Path, changed: bool = False) -> "kaldifst.StdConstFst":
    """The FST as the kaldifst StdConstFst kaldi-decoder searches (read through its vector layout, which kaldifst
    can read, then made const in memory: the const arc layout makes the search 5-7 % faster on AN4's triphone
    graph); `path` names the file in errors; `changed`: the arrays were edited (`relabel_input`), so the file
    itself is not read."""
    from asr_bn.kaldi_ext import kaldifst

    if fst.fst_type == "vector" and not changed:
        out = kaldifst.StdVectorFst.read(str(path))
    else:
        fd, tmp = tempfile.mkstemp(suffix=".fst")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(vector_bytes(fst, changed))
            out = kaldifst.StdVectorFst.read(tmp)
        except OSError as e:
            raise AsrBnError(
                f"could not stage {path} for the decoder in {tempfile.gettempdir()}: {e.strerror or e} "
                "(free space there, or point TMPDIR elsewhere)"
            ) from e
        finally:
            os.unlink(tmp)
    if out is None:
        raise AsrBnError(f"{path}: kaldifst could not read the graph (rebuild it)")
    return kaldifst.StdConstFst(out)
