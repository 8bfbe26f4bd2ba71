"""Validate the sample corpora in assets/ and print their statistics as Markdown tables.

Checks, per file: UTF-8, LF line endings, file ends with a blank line, every non-blank
line has exactly 2 columns (separator: a single space for *.iob, a tab for *.bio) except
``-DOCSTART- -X- -X- O`` lines, tags are ``O`` or ``B-X``/``I-X``, and the tag sequence is
valid IOB2 (``I-X`` only after ``B-X`` or ``I-X``). Violations are reported; the exit status
is 1 if any were found.

Entities are counted at ``B-`` tags (strict IOB2). Where a file has ``I-`` tags that break
IOB2, the lenient count (an invalid ``I-X`` also starts an entity) is reported as well.

Run from the repository root:  python assets/check_samples.py
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
FILES = [
    "en_sample/train.iob",
    "en_sample/dev.iob",
    "zh_sample/train.bio",
    "zh_sample/dev.bio",
]
DOCSTART = "-DOCSTART- -X- -X- O"
TAG_RE = re.compile(r"^(O|[BI]-[A-Za-z.]+)$")


def check(path: Path) -> tuple[dict, list[str]]:
    sep = "\t" if path.suffix == ".bio" else " "
    raw = path.read_bytes()
    errors: list[str] = []
    if b"\r" in raw:
        errors.append("contains CR characters")
    text = raw.decode("utf-8")
    if not text.endswith("\n\n"):
        errors.append("does not end with a blank line")
    docs = sents = tokens = 0
    strict: Counter[str] = Counter()
    lenient: Counter[str] = Counter()
    invalid_i = 0
    prev = "O"
    in_sent = False
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            if in_sent:
                sents += 1
            in_sent, prev = False, "O"
            continue
        if line == DOCSTART:
            docs += 1
            continue
        cols = line.split(sep)
        if len(cols) != 2 or not all(cols) or any(c != c.strip() for c in cols):
            errors.append(f"line {lineno}: expected 2 columns: {line!r}")
            continue
        tok, tag = cols
        if not TAG_RE.match(tag):
            errors.append(f"line {lineno}: bad tag {tag!r}")
            continue
        in_sent = True
        tokens += 1
        if tag.startswith("B-"):
            strict[tag[2:]] += 1
            lenient[tag[2:]] += 1
        elif tag.startswith("I-") and prev[2:] != tag[2:]:
            invalid_i += 1
            lenient[tag[2:]] += 1
            errors.append(f"line {lineno}: {tag} after {prev} (invalid IOB2)")
        prev = tag
    if in_sent:
        sents += 1
    stats = dict(
        docs=docs, sents=sents, tokens=tokens, strict=strict, lenient=lenient, invalid_i=invalid_i
    )
    return stats, errors


def table(rows: list[tuple[str, dict]], types: list[str], token_word: str) -> str:
    head = ["file", "docs", "sentences", token_word, *types, "total", "ents/sent"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows:
        total = sum(s["strict"].values())
        cells = [f"`{name}`", str(s["docs"]), f"{s['sents']:,}", f"{s['tokens']:,}"]
        cells += [str(s["strict"][t]) for t in types]
        cells += [str(total), f"{total / max(s['sents'], 1):.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    results = {}
    bad = False
    for rel in FILES:
        stats, errors = check(ASSETS / rel)
        results[rel] = stats
        for e in errors:
            print(f"{rel}: {e}", file=sys.stderr)
        bad |= bool(errors) and rel.endswith(".iob")
        if errors and rel.endswith(".bio"):
            # The Weibo slice is copied unchanged; report, do not fail, on upstream quirks.
            bad |= any("invalid IOB2" not in e for e in errors)
    en = [(r, results[r]) for r in FILES if r.endswith(".iob")]
    zh = [(r, results[r]) for r in FILES if r.endswith(".bio")]
    en_types = ["PER", "ORG", "LOC", "MISC"]
    zh_types = sorted({t for _, s in zh for t in s["strict"]})
    print("English sample (tokens are words):\n")
    print(table(en, en_types, "tokens"))
    print("\nChinese sample (tokens are characters):\n")
    print(table(zh, zh_types, "chars"))
    for name, s in zh:
        if s["invalid_i"]:
            diff = {t: s["lenient"][t] - s["strict"][t] for t in zh_types}
            diff = {t: d for t, d in diff.items() if d}
            print(f"\n`{name}`: {s['invalid_i']} I- tag(s) break IOB2; lenient counts add {diff}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
