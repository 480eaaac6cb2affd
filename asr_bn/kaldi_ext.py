"""The Kaldi extension packages (kaldi-hmm-gmm, kaldifst, kaldi-decoder, kaldilm), imported in an order that works.

Their native libraries share static state, and some import orders deadlock forever inside the second dlopen
(kaldilm before kaldi_decoder or kaldi_hmm_gmm; kaldifst before kaldi_hmm_gmm with some builds). Every module and
test takes them from here, so whichever code runs first in a process, they load in this order.
"""

import kaldi_hmm_gmm  # noqa: I001 - the order below is the point of this module
import kaldifst
import kaldi_decoder
import kaldilm

__all__ = ["kaldi_hmm_gmm", "kaldifst", "kaldi_decoder", "kaldilm"]
