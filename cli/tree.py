"""`asr-bn tree`: context-dependency trees without Kaldi (acc-tree-stats, build-tree, tree-info), Kaldi's files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Decision trees for context-dependent states: tree statistics, tree building, tree info (Kaldi's files).",
    no_args_is_help=True,
)


def _phone_list(text: str) -> list[int]:
    """Kaldi's colon-separated phone list (`1:2:3`, as phones/context_indep.csl)."""
    try:
        return [int(p) for p in text.split(":") if p]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a colon-separated list of phone ids (e.g. 1:2:3)") from None


# Options shared by the commands (Kaldi's: the statistics, questions and tree must agree on the context).
_Width = Annotated[int, typer.Option(min=1, help="Phones in the context window (the statistics' and the tree's).")]
_Central = Annotated[int, typer.Option(min=0, help="Position of the central phone in the window (the statistics' "
                                       "and the tree's).")]
_Binary = Annotated[bool, typer.Option("--binary/--text", help="Write Kaldi binary or text.")]


@app.command("stats")
def stats(
    model: Annotated[Path, typer.Argument(help="The final.mdl the alignments were made with.")],
    feats: Annotated[Path, typer.Argument(help="An `asr-bn prep` dir (GMM features: cepstra, CMVN, Δ+ΔΔ) or a .scp of ready features.")],
    ali: Annotated[Path, typer.Argument(help="Alignment dir (ali.N.gz) or one archive of transition-ids.")],
    out: Annotated[Path, typer.Argument(help="Output treeacc file (Kaldi's format; build-tree reads it).")],
    ci_phones: Annotated[Optional[str], typer.Option(help="Context-independent phones, colon-separated (phones/context_indep.csl); none by default.")] = None,
    context_width: _Width = 3,
    central_position: _Central = 1,
    var_floor: Annotated[float, typer.Option(min=0.0, help="Variance floor of the Gaussian objective.")] = 0.01,
    binary: _Binary = True,
) -> None:
    """Kaldi's acc-tree-stats: Gaussian statistics of every phone-in-context and pdf-class of the alignments."""
    from asr_bn.gmm.tree_stats import accumulate_tree_stats, read_features, write_tree_stats
    from asr_bn.gmm.convert import read_model_alignments
    from asr_bn.report import Report

    report = Report("tree stats")
    tm, labels = read_model_alignments(ali, model)
    alis = {x.utt: x.values for x in labels}
    acc = accumulate_tree_stats(tm, read_features(feats), alis, _phone_list(ci_phones or ""), context_width,
                                central_position, var_floor, report)
    write_tree_stats(out, acc, binary)
    report.counts["events"] = len(acc.events)
    report.counts["frames"] = int(acc.counts.sum())
    for line in report.lines():
        print(line)


@app.command("questions")
def questions(
    stats: Annotated[Path, typer.Argument(help="treeacc file (asr-bn tree stats or Kaldi's acc-tree-stats).")],
    sets: Annotated[Path, typer.Argument(help="Kaldi's phones/sets.int: the phone sets to cluster, one per line.")],
    out: Annotated[Path, typer.Argument(help="Output questions.int: one phone set per line.")],
    pdf_class_list: Annotated[str, typer.Option(help="HMM positions whose statistics are clustered, colon-separated (1: the middle of 3 states).")] = "1",
    central_position: _Central = 1,
) -> None:
    """Kaldi's cluster-phones: phone questions by top-down k-means of the phone sets' statistics."""
    from asr_bn.gmm.build_tree import read_phone_sets
    from asr_bn.gmm.questions import cluster_phones
    from asr_bn.gmm.tree_stats import read_tree_stats
    from asr_bn.io import write_text

    phone_sets = read_phone_sets(sets, "give the lang's phones/sets.int")
    qs = cluster_phones(read_tree_stats(stats), phone_sets, _phone_list(pdf_class_list), central_position)
    write_text(out, "".join(" ".join(map(str, q)) + "\n" for q in qs))
    print(f"questions: {len(qs)} phone sets written to {out}")


@app.command("build")
def build(
    stats: Annotated[Path, typer.Argument(help="treeacc file (asr-bn tree stats or Kaldi's acc-tree-stats).")],
    roots: Annotated[Path, typer.Argument(help="Kaldi's phones/roots.int (shared|not-shared split|not-split phones).")],
    questions: Annotated[Path, typer.Argument(help="Phone sets to ask about, one per line (questions.int + extra_questions.int).")],
    topo: Annotated[Path, typer.Argument(help="The HMM topology (lang/topo) or a model whose TransitionModel has it.")],
    out: Annotated[Path, typer.Argument(help="Output tree file (Kaldi's ContextDependency).")],
    max_leaves: Annotated[int, typer.Option(min=0, help="Most leaves to split to (0: no limit; Kaldi's --max-leaves).")] = 0,
    thresh: Annotated[float, typer.Option(min=0.0, help="Smallest likelihood gain worth a split.")] = 300.0,
    cluster_thresh: Annotated[float, typer.Option(min=-1.0, help="Merge leaves costing less than this; -1: the smallest split made; 0: no clustering.")] = -1.0,
    round_num_leaves: Annotated[bool, typer.Option(help="Round the number of leaves down to a multiple of 8 by clustering.")] = True,
    context_width: _Width = 3,
    central_position: _Central = 1,
    binary: _Binary = True,
) -> None:
    """Kaldi's compile-questions + build-tree: greedy likelihood splits, clustering, a Kaldi tree file."""
    from asr_bn.alignments import read_topology
    from asr_bn.gmm.build_tree import Questions, build_tree, read_phone_sets, read_roots
    from asr_bn.gmm.event_map import write_tree
    from asr_bn.gmm.tree_stats import read_tree_stats

    topology = read_topology(topo)
    fix = "give the questions of `asr-bn tree questions` and the lang's extra ones"
    qs = Questions.compile(read_phone_sets(questions, fix), topology, context_width)
    tree, info = build_tree(read_tree_stats(stats), read_roots(roots), qs, topology, max_leaves, thresh,
                            cluster_thresh, central_position, round_num_leaves)
    write_tree(out, tree, context_width, central_position, binary)
    print(f"tree: {info.num_leaves} leaves ({info.split_leaves} after splitting, {info.clustered_away} merged by "
          f"clustering, {info.rounded_away} by rounding to 8); split gain {info.split_gain / info.frames:.4f} and "
          f"objective {info.objf / info.frames:.4f} per frame over {info.frames:.0f} frames")


@app.command("info")
def info(tree: Annotated[Path, typer.Argument(help="A Kaldi tree file.")]) -> None:
    """Print what Kaldi's tree-info prints: num-pdfs, context-width, central-position."""
    from asr_bn.gmm.event_map import leaves, read_tree_map

    m, width, central = read_tree_map(tree)
    print(f"num-pdfs {max(leaves(m)) + 1}\ncontext-width {width}\ncentral-position {central}")
