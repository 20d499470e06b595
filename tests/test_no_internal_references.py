"""What students and users read holds no developer text: no internal notes files, no digest references.

The course cites the paper's sections, tables and figures; the project's internal notes are not part of
the product. Checked over every file a user sees: notebooks (sources, student and release copies are
generated from them), the package, the docs, the README, the benchmarks and the questions file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"paper-notes|shared/|\bthe digest\b|\bdigest (§|in\b)", re.IGNORECASE)
FILES = sorted([*REPO.glob("notebooks/*.ipynb"), *REPO.glob("notebooks/*.md"), *REPO.glob("notebooks/*.yaml"),
                *REPO.glob("simo_lite/**/*.py"), *REPO.glob("docs/*.md"), REPO / "README.md",
                *REPO.glob("benchmarks/*.py"), *REPO.glob("benchmarks/*.json")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_references(path):
    hits = [f"line {i}: {line.strip()[:120]}" for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if FORBIDDEN.search(line.replace("hexdigest", ""))]
    assert not hits, f"{path.name} refers to internal notes:\n" + "\n".join(hits)
