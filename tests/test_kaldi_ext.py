"""The Kaldi extension packages deadlock at import in some orders (kaldilm before kaldi_decoder hung CI for 90
minutes): they are imported only through asr_bn.kaldi_ext, and any first use in a fresh process finishes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kaldi_hmm_gmm", "kaldifst", "kaldi_decoder", "kaldilm")
DIRECT = re.compile(rf"^\s*(import|from)\s+({'|'.join(PACKAGES)})\b", re.M)


def test_no_module_imports_them_directly() -> None:
    sources = [p for d in ("asr_bn", "cli", "recipes", "bench", "tests") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources if p.name != "kaldi_ext.py" and DIRECT.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("first", PACKAGES)
def test_any_package_first_then_all(first: str) -> None:
    code = f"from asr_bn.kaldi_ext import {first}\nfrom asr_bn.kaldi_ext import {', '.join(PACKAGES)}\nprint('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
