"""Kaldi's GMM ladder without Kaldi binaries, one room per step.

- `tree_stats`: per-context Gaussian statistics from alignments (Kaldi's `acc-tree-stats`), Kaldi's treeacc format.
- `event_map`: Kaldi's EventMap (the decision tree) and the `tree` file (ContextDependency), binary and text.
- `build_tree`: roots, questions (`compile-questions`) and tree building (`build-tree`).
- `gauss`: the Gaussian likelihood objective that tree building and clustering maximise.
- `questions`: phone questions by clustering (Kaldi's `cluster-phones`).
- `init_model`, `convert`: the first model of a tree (`gmm-init-model`) and alignments carried to it (`convert-ali`).
- `train_deltas`, `lda_mllt`, `sat`: the rungs (steps/train_deltas.sh, train_lda_mllt.sh, train_sat.sh).
"""
