"""The Kaldi extension packages (kaldi-hmm-gmm, kaldifst, kaldi-decoder, kaldilm), imported in an order that works.

Their native libraries share static state, and some import orders deadlock forever inside the second dlopen:
with the pinned versions (kaldi-hmm-gmm 1.1.4, kaldifst 1.7.17, kaldi-decoder 0.2.11, kaldilm 1.15.5) kaldilm
before any of the other three hangs, every other pair loads in either order (tests/test_kaldi_ext.py checks
both; kaldifst before kaldi_hmm_gmm was seen to hang with other builds). Every module and test takes them from
here, so whichever code runs first in a process, they load in this order.
"""

import kaldi_hmm_gmm  # noqa: I001 - the order below is the point of this module
import kaldifst
import kaldi_decoder
import kaldilm

__all__ = ["kaldi_hmm_gmm", "kaldifst", "kaldi_decoder", "kaldilm"]
