"""asr-bn: batch-normalized BLSTM acoustic models for hybrid HMM/NN speech recognition.

One module per pipeline stage: data → features → alignments → batching → model → train → forward → decode → score.
"""

__version__ = "0.1.0"
