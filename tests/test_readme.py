"""The README's metric reference against what serve exports.

The golden exposition (tests/golden/exposition.txt, written by test_golden_exposition.py from one real
serve watching every kind of target) is the independent list of families: every one of them must be
named in full in the README's reference, and every name the reference gives must be exported, either in
that golden file or, for opt-in families the golden config leaves off, by name in regwatch's source.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"`(regwatch_[a-z0-9_]*[a-z0-9])`")


def reference() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Metric reference")
    return text[start:text.index("\n## ", start + 1)]


def golden_families() -> set[str]:
    lines = (ROOT / "tests" / "golden" / "exposition.txt").read_text().splitlines()
    return {line.split()[2] for line in lines if line.startswith("# TYPE ")}


def source_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "regwatch").rglob("*.py"))


def test_every_exported_family_is_in_the_readme_reference():
    named = set(NAME.findall(reference()))
    assert sorted(golden_families() - named) == []


def test_every_family_the_readme_names_is_exported():
    golden, source = golden_families(), source_text()

    # Names built in f-strings (f"regwatch_auth_{label}_failures") match with any word in the braces.
    templates = [re.compile("".join("[a-z]+" if part.startswith("{") else re.escape(part)
                                    for part in re.split(r"(\{[^}]*\})", template)))
                 for template in re.findall(r"f[\"'](regwatch_[a-z_]*\{[^}]+\}[a-z_]*)[\"']", source)]

    def exported(name: str) -> bool:
        # prometheus_client names a counter without its _total.
        bare = name.removesuffix("_total")
        return (name in golden or re.search(rf"[\"']{re.escape(bare)}[\"']", source) is not None
                or any(t.fullmatch(bare) for t in templates))

    assert sorted(name for name in set(NAME.findall(reference())) if not exported(name)) == []
