"""Kaldi's GMM ladder without Kaldi binaries, one room per step.

- `system`: a GMM system in kaldi-hmm-gmm objects (`GmmSystem`) and its Kaldi files: final.mdl, tree, topology.
- `features`: the GMM features of a prepared dir (cepstra, speaker CMVN, Δ+ΔΔ), computed when asked for.
- `align`: training graphs and forced alignment (compile-train-graphs, steps/align_si.sh), GMM or network scores.
- `estimate`: one training pass (gmm-acc-stats-ali + gmm-est, mixing up), shared by every rung.
- `mono`: the monophone system (steps/train_mono.sh).
- `tree_stats`: per-context Gaussian statistics from alignments (Kaldi's `acc-tree-stats`), Kaldi's treeacc format.
- `event_map`: Kaldi's EventMap (the decision tree) and the `tree` file (ContextDependency), binary and text.
- `build_tree`: roots, questions (`compile-questions`) and tree building (`build-tree`).
- `gauss`: the Gaussian likelihood objective that tree building and clustering maximise.
- `questions`: phone questions by clustering (Kaldi's `cluster-phones`).
- `init_model`, `convert`: the first model of a tree (`gmm-init-model`) and alignments carried to it (`convert-ali`).
- `train_deltas`, `lda_mllt`, `sat`: the rungs (steps/train_deltas.sh, train_lda_mllt.sh, train_sat.sh).
"""
