"""The Kaldi extension packages deadlock at import in some orders (kaldilm before kaldi_decoder hung CI for 90
minutes): they are imported only through asr_bn.kaldi_ext, whose order loads them all in a fresh process, while
the orders it avoids really do hang with the pinned versions (so the module's order is what makes it work)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kaldi_hmm_gmm", "kaldifst", "kaldi_decoder", "kaldilm")
DIRECT = re.compile(rf"^\s*(import|from)\s+({'|'.join(PACKAGES)})\b", re.M)
HANGS = [("kaldilm", other) for other in ("kaldi_hmm_gmm", "kaldifst", "kaldi_decoder")]  # measured: each deadlocks


def _module_order() -> list[str]:
    """The packages in the order asr_bn/kaldi_ext.py imports them."""
    tree = ast.parse((ROOT / "asr_bn" / "kaldi_ext.py").read_text())
    return [a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names]


def _start(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_no_module_imports_them_directly() -> None:
    sources = [p for d in ("asr_bn", "cli", "recipes", "bench", "tests") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources if p.name != "kaldi_ext.py" and DIRECT.search(p.read_text())]
    assert offenders == []


def test_the_module_order_loads_where_the_avoided_orders_deadlock() -> None:
    """All in fresh processes at once: `import asr_bn.kaldi_ext` finishes, and each pair the module's order avoids
    (kaldilm first) is still stuck long after that (a deadlock costs no CPU, only this wait)."""
    order = _module_order()
    assert sorted(order) == sorted(PACKAGES)
    assert all(order.index(first) > order.index(second) for first, second in HANGS)  # the module avoids each
    t0 = time.monotonic()
    good = _start("import asr_bn.kaldi_ext, sys; print([m for m in sys.modules if m in %r])" % (PACKAGES,))
    bad = {pair: _start(f"import {pair[0]}\nimport {pair[1]}") for pair in HANGS}
    try:
        out, err = good.communicate(timeout=60)
        took = time.monotonic() - t0
        assert good.returncode == 0, err
        assert out.strip() == str(order)  # loaded in the module's order, nothing else first
        time.sleep(max(0.0, max(2.0, 3 * took) - (time.monotonic() - t0)))  # three times what the good order needed
        finished = {pair: p.returncode for pair, p in bad.items() if p.poll() is not None}
        assert finished == {}, f"these orders no longer deadlock (update kaldi_ext's doc and this test): {finished}"
    finally:
        for p in bad.values():
            p.kill()
            p.communicate()
