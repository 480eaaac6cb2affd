"""Kaldi's random numbers: the C library's rand() as Kaldi's binaries draw from it, and Kaldi's RandUniform,
RandGauss and RandPrune on it (base/kaldi-math.h).

Kaldi's binaries never seed: each process draws glibc's rand() stream from srand(1). asr-bn reproduces that stream
(glibc's additive feedback generator, r[i] = r[i-3] + r[i-31] mod 2^32, output r[i] >> 1), so its random choices
are Kaldi's: cluster-phones' k-means starts, gmm-est's mixing-up perturbations, acc-lda's and gmm-acc-mllt's random
pruning. The stream is computed in blocks: each block of values is a fixed integer matrix times the last 34 values
(mod 2^32), one numpy product per block instead of one Python step per value.
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np

RAND_MAX = 2147483647  # glibc's
_BLOCK = 2048
_LAGS = 34  # the state: the last 34 values (taps 3 and 31 back)
_MASK = np.uint64(0xFFFFFFFF)


def _block_matrix(n: int) -> np.ndarray:
    """(n, 34) integers A with block = A @ state mod 2^32: row j is the recurrence unrolled back to the state."""
    rows = [np.eye(_LAGS, dtype=np.uint64)[i] for i in range(_LAGS)]  # the state itself: r[-34] … r[-1]
    for j in range(n):
        rows.append((rows[_LAGS + j - 3] + rows[_LAGS + j - 31]) & _MASK)
    return np.array(rows[_LAGS:])


_A: np.ndarray | None = None  # built on first use (2 ms)


class CRand:
    """glibc's rand() after srand(seed) (seed 0 is seed 1, as in glibc): the stream a Kaldi process draws."""

    def __init__(self, seed: int = 1) -> None:
        r = [seed or 1]
        for i in range(1, 31):  # glibc's srandom_r: 16807 r mod (2^31 - 1), by Schrage's method
            hi, lo = divmod(r[i - 1], 127773)
            word = 16807 * lo - 2836 * hi
            r.append(word + RAND_MAX if word < 0 else word)
        r += r[:3]
        for i in range(34, 344):  # srandom_r discards the first 310 outputs
            r.append((r[i - 31] + r[i - 3]) & 0xFFFFFFFF)
        self._state = np.array(r[-_LAGS:], dtype=np.uint64)
        self._buffer = np.zeros(0, np.int64)
        self._next = 0

    def _refill(self) -> None:
        global _A
        if _A is None:
            _A = _block_matrix(_BLOCK)
        values = (_A @ self._state) & _MASK  # uint64 products wrap mod 2^64: exact mod 2^32
        self._state = values[-_LAGS:]
        self._buffer, self._next = (values >> np.uint64(1)).astype(np.int64), 0

    def ints(self, n: int) -> np.ndarray:
        """The next n values of rand(), in order."""
        parts, need = [], n
        while need:
            if self._next == len(self._buffer):
                self._refill()
            take = min(need, len(self._buffer) - self._next)
            parts.append(self._buffer[self._next : self._next + take])
            self._next += take
            need -= take
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __call__(self) -> int:
        """The next value of rand()."""
        if self._next == len(self._buffer):
            self._refill()
        self._next += 1
        return int(self._buffer[self._next - 1])

    def uniform(self, n: int) -> np.ndarray:
        """n draws of RandUniform: float((rand() + 1) / (RAND_MAX + 2))."""
        return ((self.ints(n) + 1.0) / (RAND_MAX + 2.0)).astype(np.float32)

    def gauss(self, n: int) -> np.ndarray:
        """n draws of RandGauss: sqrtf(-2 log u1) · cosf(2π u2) in float, u1 drawn first (gmm-est's order);
        cosf is the C library's (ctypes), as Kaldi's."""
        cosf = _libm_cosf()
        u = (self.ints(2 * n) + 1.0) / (RAND_MAX + 2.0)
        out = np.empty(n, np.float32)
        for i in range(n):
            radius = np.float32(math.sqrt(np.float32(-2.0 * math.log(u[2 * i]))))
            out[i] = radius * np.float32(cosf(2.0 * math.pi * u[2 * i + 1]))
        return out


@functools.cache
def _libm_cosf():  # noqa: ANN202 - a ctypes function, loaded once
    libc = ctypes.CDLL(None)  # the process's C library (and libm)
    libc.cosf.argtypes, libc.cosf.restype = [ctypes.c_float], ctypes.c_float
    return libc.cosf


def rand_prune(post: np.ndarray, thresh: float, draws: np.ndarray) -> np.ndarray:
    """Kaldi's RandPrune over `post` (float32): a posterior p with 0 < |p| < thresh becomes ±thresh when its
    RandUniform draw is at most |p| / thresh, else 0; the others stay and take no draw. `draws`: one per drawn
    posterior, in Kaldi's order (row-major over `post`). train_lda_mllt.sh's accumulators (acc-lda, gmm-acc-mllt,
    --rand-prune 4) keep a random part of their frames this way."""
    post = np.asarray(post, np.float32)
    if thresh <= 0:
        return post
    t = np.float32(thresh)
    drawn = (post != 0) & (np.abs(post) < t)
    chosen = post[drawn]
    out = post.copy()
    out[drawn] = np.where(draws <= np.abs(chosen) / t, np.sign(chosen) * t, np.float32(0))
    return out


__all__ = ["CRand", "RAND_MAX", "rand_prune"]
