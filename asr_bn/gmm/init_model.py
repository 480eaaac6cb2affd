"""A context-dependent GMM system from its tree and tree statistics, as Kaldi's `gmm-init-model`.

Every leaf of the tree (a pdf) gets one Gaussian: the mean and floored variance of the frames whose contexts reach
it. A leaf without statistics (typically a phone that never occurs in the alignments and shares no root with one
that does) gets those of all frames, as Kaldi's; leaves without statistics and leaves of fewer than 100 frames,
which Kaldi warns about, are counted and named in the rung's report. The transition model is Kaldi's for the tree
and topology.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_bn.alignments import Topology
from asr_bn.errors import AsrBnError
from asr_bn.gmm.estimate import named_pdfs, pdf_phones
from asr_bn.gmm.event_map import leaves, map_events, read_tree_map
from asr_bn.gmm.tree_stats import TreeStats
from asr_bn.gmm.system import GmmSystem
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn.report import Report

SMALL_COUNT = 100.0  # gmm-init-model warns of a leaf with fewer frames ("Very small count for state")


def _gaussian(count: float, sums: np.ndarray, var_floor: float) -> "khg.DiagGmm":
    """Kaldi's DiagGmm(GaussClusterable, var_floor), in its float arithmetic: one component."""
    scale = np.float32(1.0 / np.float32(count))  # Kaldi: 1.0 / (float) count, then to float
    mean = sums[0].astype(np.float32) * scale
    var = sums[1].astype(np.float32) * scale - mean * mean
    inv_var = np.float32(1.0) / np.maximum(var, np.float32(var_floor))
    gmm = khg.DiagGmm(1, len(mean))
    gmm.set_weights(np.ones(1, np.float32))
    gmm.set_invvars_and_means(inv_var[None], mean[None])
    gmm.compute_gconsts()
    return gmm


def init_model(tree_path: str | Path, stats: TreeStats, topology: Topology, var_floor: float = 0.01,
               report: Report | None = None) -> GmmSystem:
    """Kaldi's `gmm-init-model TREE TREEACC TOPO`: the transition model of the tree and one Gaussian per pdf.

    A leaf without statistics gets the statistics of all leaves summed in leaf order (Kaldi's SumClusterable of
    the leaves' sums). `report` counts "leaves without statistics" and "leaves under 100 frames", with a note
    naming their pdf-ids and phones (what gmm-init-model warns about)."""
    from asr_bn.mkgraph import read_tree

    tree, _, _ = read_tree_map(tree_path)
    system = GmmSystem._build(topology, read_tree(tree_path))
    pdf = map_events(tree, stats.columns())
    if (pdf < 0).any():
        raise AsrBnError(f"{tree_path}: the tree cannot place every context of the statistics (were they gathered "
                         f"with another context width or other --ci-phones?)")
    num_pdfs = max(leaves(tree)) + 1
    sums: list[tuple[float, np.ndarray] | None] = []
    for leaf in range(num_pdfs):
        mine = pdf == leaf
        sums.append((stats.counts[mine].sum(), stats.stats[mine].sum(0)) if mine.any() else None)
    seen = [s for s in sums if s is not None]
    if not seen:
        raise AsrBnError(f"{tree_path}: no statistics reach any leaf of the tree; nothing to initialize a model from")
    total_count, total = seen[0][0], seen[0][1].copy()
    for count, stat in seen[1:]:
        total_count += count
        total += stat
    empty, small = [], {}
    for leaf, s in enumerate(sums):
        count, stat = s if s is not None else (total_count, total)
        system.am.add_pdf(_gaussian(float(count), stat, var_floor))
        if s is None:
            empty.append(leaf)
        elif np.float32(count) < SMALL_COUNT:
            small[leaf] = f"{float(np.float32(count)):g} frames"
    if report is not None:
        phones = pdf_phones(system.transition_model())
        report.counts["leaves without statistics"] = len(empty)
        report.counts[f"leaves under {SMALL_COUNT:g} frames"] = len(small)
        if empty:
            report.note(f"tree leaves without statistics, given the statistics of all frames as gmm-init-model does: "
                        f"{named_pdfs(empty, phones)}; no aligned frame reaches them (typically a phone that never "
                        f"occurs and shares no root with one that does: give data with it, or put it on a line of "
                        f"roots with a similar phone that occurs)")
        if small:
            report.note(f"tree leaves under {SMALL_COUNT:g} frames (gmm-init-model's 'very small count'): "
                        f"{named_pdfs(list(small), phones, small)}")
    return system
