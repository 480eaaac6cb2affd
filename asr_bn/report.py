"""A stage's report: what came in, what was written, and every utterance skipped, named with its reason."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from asr_bn.io import write_text


@dataclass
class Report:
    """Counts and named skips of one stage; plain data, saved as JSON beside the stage's outputs."""

    stage: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    def skip(self, utt: str, reason: str) -> None:
        """Record that `utt` was dropped because of `reason` (a short phrase; utterances group by it)."""
        self.skipped[reason].append(utt)

    def note(self, text: str) -> None:
        """Record something odd but legal (e.g. a file that had to be sorted)."""
        self.notes.append(text)

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def lines(self, max_names: int = 5) -> list[str]:
        """Human-readable summary lines: counts, then each skip reason with its count and first names."""
        out = [f"{self.stage}: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())]
        for reason, utts in self.skipped.items():
            shown = " ".join(utts[:max_names]) + (" …" if len(utts) > max_names else "")
            out.append(f"  skipped {len(utts)} ({reason}): {shown}")
        out.extend(f"  note: {n}" for n in self.notes)
        return out

    def to_dict(self) -> dict:
        return {"stage": self.stage, "counts": self.counts, "skipped": dict(self.skipped), "notes": self.notes}

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
