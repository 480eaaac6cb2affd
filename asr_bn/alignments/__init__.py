"""Kaldi forced alignments without Kaldi binaries: the TransitionModel at the head of a model file, alignment
archives, per-frame pdf-id targets joined to a prepared data dir, and pdf priors.

Matches Kaldi's tools: `ali-to-pdf` (`TransitionModel.to_pdfs`), `ali-to-phones` (`to_phones`, `phone_segments`),
`hmm-info` (`info_lines`), `analyze-counts` (`count_pdfs`). The layouts and numbering follow Kaldi's
src/hmm/transition-model.cc and hmm-topology.cc: transition-ids are 1-based, pdf-ids and HMM states 0-based.

>>> model = read_transition_model("exp/tri4b_ali_si284/final.mdl")
>>> for utt, tids, path in read_alignments("exp/tri4b_ali_si284"):
...     pdfs = model.to_pdfs(tids)

One module per idea: `transition_model` (Kaldi's topology and transition model), `archives` (alignment
archives), `targets` (pdf-id targets joined to a prepared dir), `posteriors` (Kaldi posterior archives: soft
targets), `priors` (pdf counts, priors and decoder scores).
"""

from asr_bn.alignments.archives import (Labels, alignment_files, alignment_model, describe_alignments,
                                        read_alignments)
from asr_bn.alignments.posteriors import join_posteriors, read_posteriors, write_posteriors
from asr_bn.alignments.priors import count_pdfs, log_priors, read_counts, transition_id_scores, write_counts
from asr_bn.alignments.targets import TARGETS_REPORT, check_num_pdfs, join_targets
from asr_bn.alignments.transition_model import (HmmState, Topology, TransitionModel, read_topology,
                                                read_transition_model, topology_text)

__all__ = [
    "HmmState", "Topology", "TransitionModel", "read_transition_model", "read_topology", "topology_text",
    "Labels", "alignment_files", "alignment_model", "read_alignments", "describe_alignments",
    "TARGETS_REPORT", "join_targets", "check_num_pdfs", "join_posteriors", "read_posteriors", "write_posteriors",
    "count_pdfs", "write_counts", "read_counts", "log_priors", "transition_id_scores",
]
