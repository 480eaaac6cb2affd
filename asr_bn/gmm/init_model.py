"""A context-dependent GMM system from its tree and tree statistics, as Kaldi's `gmm-init-model`.

Every leaf of the tree (a pdf) gets one Gaussian: the mean and floored variance of the frames whose contexts reach
it; a leaf without statistics gets those of all frames. The transition model is Kaldi's for the tree and topology.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_bn.alignments import Topology
from asr_bn.errors import AsrBnError
from asr_bn.gmm.event_map import leaves, map_events, read_tree_map
from asr_bn.gmm.tree_stats import TreeStats
from asr_bn.gmm.system import GmmSystem
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg


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


def init_model(tree_path: str | Path, stats: TreeStats, topology: Topology, var_floor: float = 0.01) -> GmmSystem:
    """Kaldi's `gmm-init-model TREE TREEACC TOPO`: the transition model of the tree and one Gaussian per pdf."""
    from asr_bn.mkgraph import read_tree

    tree, _, _ = read_tree_map(tree_path)
    system = GmmSystem._build(topology, read_tree(tree_path))
    pdf = map_events(tree, stats.columns())
    if (pdf < 0).any():
        raise AsrBnError(f"{tree_path}: the tree cannot place every context of the statistics (were they gathered "
                         f"with another context width or other --ci-phones?)")
    num_pdfs = max(leaves(tree)) + 1
    total = stats.stats.sum(0)
    for leaf in range(num_pdfs):
        mine = pdf == leaf
        count, sums = (stats.counts[mine].sum(), stats.stats[mine].sum(0)) if mine.any() else (stats.counts.sum(), total)
        system.am.add_pdf(_gaussian(float(count), sums, var_floor))
    return system
