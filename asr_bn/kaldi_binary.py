"""Kaldi's basic types (src/base/io-funcs.cc) in binary or text form: the reader keeps the byte offset for its
one-line errors, the writer builds the bytes of a Kaldi object (transition models, trees, tree statistics)."""

from __future__ import annotations

import contextlib
import re
import struct
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from asr_bn.errors import AsrBnError

WS = b" \t\n\r\v\f"
WORD = re.compile(rb"[ \t\n\r\v\f]*([^ \t\n\r\v\f]{1,4096})")
INT = re.compile(rb"[+-]?[0-9]+")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_CHUNK = 1 << 20


class KaldiReader:
    """Reads Kaldi tokens and basic types from a byte stream in binary or text form, tracking the byte offset."""

    def __init__(self, f: BinaryIO, name: str, what: str, hint: str) -> None:
        self._f = f
        self._name = name
        self._what = what  # e.g. "the Kaldi transition model"
        self._hint = hint  # the fix to suggest
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of self._buf[0]
        self.binary = False

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def fail(self, problem: str, at: int | None = None) -> AsrBnError:
        """The error for a parse failure at byte `at` (default: the current offset)."""
        at = self.offset if at is None else at
        return AsrBnError(f"{self._name}: cannot read {self._what} at byte {at}: {problem} ({self._hint})")

    def _more(self, at_least: int = 1) -> bool:
        chunk = self._f.read(max(_CHUNK, at_least))
        if not chunk:
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._base += self._pos
        self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._more(n):
            pass
        return self._buf[self._pos : self._pos + n]

    def take(self, n: int) -> bytes:
        data = self.peek(n)
        if len(data) < n:
            raise self.fail(f"the file ends where {n} more bytes were expected")
        self._pos += n
        return data

    def word(self) -> bytes:
        """The next whitespace-delimited word; like Kaldi's ReadToken it consumes one delimiter after it."""
        while True:
            m = WORD.match(self._buf, self._pos)
            if m is not None and m.end() < len(self._buf):
                if self._buf[m.end()] not in WS:
                    raise self.fail("a word longer than 4096 bytes")
                self._pos = m.end() + 1
                return m.group(1)
            if not self._more():
                if m is None:
                    self._pos = len(self._buf)
                    raise self.fail("the file ends where a token was expected")
                self._pos = m.end()
                return m.group(1)

    def expect(self, token: str) -> None:
        start = self.offset
        word = self.word()
        if word != token.encode():
            raise self.fail(f"expected {token}, found {show_word(word)}", at=start)

    def int32(self) -> int:
        if self.binary:
            size = self.take(1)[0]
            if size != 4:
                raise self.fail(f"expected a 4-byte integer, found size byte {size}", at=self.offset - 1)
            return int.from_bytes(self.take(4), "little", signed=True)
        return self._text_int(self.word())

    def _text_int(self, word: bytes) -> int:
        if not INT.fullmatch(word) or not INT32_MIN <= int(word) <= INT32_MAX:
            raise self.fail(f"expected a 32-bit integer, found {show_word(word)}")
        return int(word)

    def float32(self) -> float:
        if self.binary:
            size = self.take(1)[0]
            if size == 4:
                return float(np.frombuffer(self.take(4), "<f4")[0])
            if size == 8:
                return float(np.float32(np.frombuffer(self.take(8), "<f8")[0]))
            raise self.fail(f"expected a 4- or 8-byte float, found size byte {size}", at=self.offset - 1)
        return self._text_float(self.word())

    def _text_float(self, word: bytes) -> float:
        try:
            return float(np.float32(float(word)))
        except ValueError:
            raise self.fail(f"expected a number, found {show_word(word)}") from None

    def count(self, what: str) -> int:
        n = self.int32()
        if n < 0:
            raise self.fail(f"negative {what} {n}")
        return n

    def int_vector(self) -> list[int]:
        """Kaldi's ReadIntegerVector: binary `\\4 n v1 v2 …` (raw int32s), text `[ v1 v2 … ]`."""
        if self.binary:
            if self.take(1)[0] != 4:
                raise self.fail("expected a vector of 4-byte integers")
            n = int.from_bytes(self.take(4), "little", signed=True)
            if n < 0:
                raise self.fail(f"negative vector size {n}")
            return np.frombuffer(self.take(4 * n), "<i4").tolist()
        return [self._text_int(w) for w in self._bracketed()]

    def float_vector(self) -> np.ndarray:
        """Kaldi's Vector<float>::Read: binary `FV n <raw floats>` (or `DV` doubles), text `[ x1 x2 … ]`."""
        if self.binary:
            kind = self.word()
            if kind not in (b"FV", b"DV"):
                raise self.fail(f"expected a Kaldi vector (FV or DV), found {show_word(kind)}")
            n = self.int32()
            if n < 0:
                raise self.fail(f"negative vector size {n}")
            size = 4 if kind == b"FV" else 8
            return np.frombuffer(self.take(size * n), "<f4" if size == 4 else "<f8").astype(np.float32)
        return np.array([self._text_float(w) for w in self._bracketed()], dtype=np.float32)

    def _bracketed(self) -> list[bytes]:
        first = self.word()
        if not first.startswith(b"["):
            raise self.fail(f"expected '[', found {show_word(first)}")
        words, word = [], first[1:]
        while not word.endswith(b"]"):
            if word:
                words.append(word)
            word = self.word()
        if word[:-1]:
            words.append(word[:-1])
        return words


@contextlib.contextmanager
def kaldi_object(
    path: Path, what: str, open_fix: str, hint: str, reader: type[KaldiReader] = KaldiReader
) -> Iterator[KaldiReader]:
    """A reader (of class `reader`) over one Kaldi object file, binary if it starts with `\\0B`, else text; a file
    that cannot be opened is one line naming it and `open_fix`."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise AsrBnError(f"cannot open {what} {path}: {e.strerror or e} ({open_fix})") from e
    with f:
        r = reader(f, str(path), what, hint)
        r.binary = r.peek(2) == b"\0B"
        if r.binary:
            r.take(2)
        yield r


def show_word(word: bytes) -> str:
    return repr(word[:24].decode("utf-8", "backslashreplace")) + ("…" if len(word) > 24 else "")


class KaldiWriter:
    """Writes Kaldi tokens and basic types in binary or text form (the inverse of `KaldiReader`)."""

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        self.parts: list[bytes] = []

    def token(self, token: str) -> None:
        self.parts.append(token.encode() + b" ")

    def newline(self) -> None:
        if not self.binary:
            self.parts.append(b"\n")

    def int32(self, v: int) -> None:
        self.parts.append(b"\x04" + struct.pack("<i", v) if self.binary else f"{v} ".encode())

    def float32(self, v: float) -> None:
        self.parts.append(b"\x04" + struct.pack("<f", v) if self.binary else f"{str(np.float32(v))} ".encode())

    def int_vector(self, values: Sequence[int]) -> None:
        if self.binary:
            self.parts.append(b"\x04" + struct.pack("<i", len(values)) + np.asarray(values, "<i4").tobytes())
        else:
            self.parts.append(("[ " + "".join(f"{v} " for v in values) + "]\n").encode())

    def float_vector(self, values: np.ndarray) -> None:
        if self.binary:
            self.token("FV")
            self.int32(len(values))
            self.parts.append(np.asarray(values, "<f4").tobytes())
        else:
            self.parts.append((" [ " + "".join(f"{str(np.float32(v))} " for v in values) + "]\n").encode())

