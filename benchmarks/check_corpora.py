"""Convert the three benchmark corpora and compare every count with their READMEs.

Converts CoNLL-2003 (eng.train/testa/testb), Resume NER (*.char.bmes, --lang zh) and Weibo NER
(weiboNER_2nd_conll.*, --lang zh --strip-digit) with ``spacy_crf_ner.convert.convert_files``
into a temporary directory, reads the written ``.spacy`` files back, recounts documents,
sentences, tokens and entities per type from the Docs, and compares them (and the converter's
own statistics) with the figures hard-coded below from the corpus READMEs. Also checks the
scheme that was detected, the number of repaired tag positions (the quirks each README
describes) and that the Chinese docs have no spaces. Prints a table and PASS or FAIL (exit 1).

    python benchmarks/check_corpora.py [--data-dir ../shared/data]

The corpora are read in place and never copied into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spacy.tokens import DocBin
from wasabi import msg

from spacy_crf_ner.convert import blank_vocab, convert_files


@dataclass(frozen=True)
class Expected:
    """One split's figures from its README (docs None: the README gives none)."""

    file: str
    docs: int | None
    sentences: int
    tokens: int
    entities: dict[str, int]
    repaired: int
    """Invalid tag positions the README describes (repaired as conlleval does)."""


@dataclass(frozen=True)
class Corpus:
    folder: str
    lang: str
    strip_digit: bool
    scheme: str
    splits: dict[str, Expected]


CORPORA = [
    # /work/shared/data/conll2003/README.md, "Statistics (measured on these files)": docs,
    # sentences (without -DOCSTART- lines), tokens, LOC/MISC/ORG/PER. "Format as shipped":
    # IOB1, and the two B-MISC after O in eng.train (lines 152428 and 175436) are the only
    # IOB1 exceptions.
    Corpus(
        "conll2003",
        lang="en",
        strip_digit=False,
        scheme="IOB1",
        splits={
            "train": Expected(
                "eng.train",
                946,
                14041,
                203621,
                {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600},
                repaired=2,
            ),
            "dev": Expected(
                "eng.testa",
                216,
                3250,
                51362,
                {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842},
                repaired=0,
            ),
            "test": Expected(
                "eng.testb",
                231,
                3453,
                46435,
                {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617},
                repaired=0,
            ),
        },
    ),
    # /work/shared/data/resume_ner/README.md, "Statistics": train row (b) (the two ORG entities
    # broken by a sentence break counted as the converter repairs them), dev and test rows.
    # "Quirk": 4 BMES violations in train.char.bmes, none elsewhere.
    Corpus(
        "resume_ner",
        lang="zh",
        strip_digit=False,
        scheme="BMES",
        splits={
            "train": Expected(
                "train.char.bmes",
                None,
                3821,
                124099,
                {
                    "CONT": 260,
                    "EDU": 858,
                    "LOC": 47,
                    "NAME": 952,
                    "ORG": 4613,
                    "PRO": 287,
                    "RACE": 115,
                    "TITLE": 6308,
                },
                repaired=4,
            ),
            "dev": Expected(
                "dev.char.bmes",
                None,
                463,
                13890,
                {
                    "CONT": 33,
                    "EDU": 106,
                    "LOC": 2,
                    "NAME": 110,
                    "ORG": 523,
                    "PRO": 18,
                    "RACE": 15,
                    "TITLE": 690,
                },
                repaired=0,
            ),
            "test": Expected(
                "test.char.bmes",
                None,
                477,
                15100,
                {
                    "CONT": 28,
                    "EDU": 112,
                    "LOC": 6,
                    "NAME": 112,
                    "ORG": 553,
                    "PRO": 33,
                    "RACE": 14,
                    "TITLE": 772,
                },
                repaired=0,
            ),
        },
    ),
    # /work/shared/data/weibo_ner/README.md, "Statistics": the lenient rows (b) for train and
    # test (an I-X after O or another type starts an entity, as the repair does), and dev.
    # "Quirk": 14 invalid I- tags, 10 in train and 4 in test.
    Corpus(
        "weibo_ner",
        lang="zh",
        strip_digit=True,
        scheme="BIO",
        splits={
            "train": Expected(
                "weiboNER_2nd_conll.train",
                None,
                1350,
                73778,
                {
                    "GPE.NAM": 205,
                    "GPE.NOM": 8,
                    "LOC.NAM": 56,
                    "LOC.NOM": 51,
                    "ORG.NAM": 183,
                    "ORG.NOM": 42,
                    "PER.NAM": 578,
                    "PER.NOM": 772,
                },
                repaired=10,
            ),
            "dev": Expected(
                "weiboNER_2nd_conll.dev",
                None,
                270,
                14509,
                {
                    "GPE.NAM": 26,
                    "GPE.NOM": 1,
                    "LOC.NAM": 6,
                    "LOC.NOM": 6,
                    "ORG.NAM": 47,
                    "ORG.NOM": 5,
                    "PER.NAM": 90,
                    "PER.NOM": 208,
                },
                repaired=0,
            ),
            "test": Expected(
                "weiboNER_2nd_conll.test",
                None,
                270,
                14842,
                {
                    "GPE.NAM": 47,
                    "GPE.NOM": 2,
                    "LOC.NAM": 19,
                    "LOC.NOM": 9,
                    "ORG.NAM": 39,
                    "ORG.NOM": 17,
                    "PER.NAM": 113,
                    "PER.NOM": 172,
                },
                repaired=4,
            ),
        },
    ),
]


def _cell(got: object, want: object, problems: list[str], what: str) -> str:
    """``got ✓`` or ``got ✗``, recording the mismatch."""
    if want is None:
        return f"{got}"
    if got == want:
        return f"{got} ✓"
    problems.append(f"{what}: got {got}, README {want}")
    return f"{got} ✗"


def check(data_dir: Path) -> bool:
    """Convert, re-read and compare every split; print the table; True when all match."""
    rows: list[list[str]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="check_corpora_") as tmp:
        for corpus in CORPORA:
            folder = data_dir / corpus.folder
            inputs = [folder / split.file for split in corpus.splits.values()]
            missing = [str(p) for p in inputs if not p.is_file()]
            if missing:
                problems.append(f"{corpus.folder}: missing {', '.join(missing)}")
                continue
            results = convert_files(
                inputs,
                Path(tmp) / corpus.folder,
                lang=corpus.lang,
                strip_digit=corpus.strip_digit,
                progress=False,
            )
            vocab = blank_vocab(corpus.lang)
            for (name, want), result in zip(corpus.splits.items(), results, strict=True):
                what = f"{corpus.folder}/{name}"
                assert result.output is not None
                docs = list(DocBin().from_disk(result.output).get_docs(vocab))
                ents = Counter(ent.label_ for doc in docs for ent in doc.ents)
                got = {
                    "docs": len(docs),
                    "sentences": sum(len(list(doc.sents)) for doc in docs),
                    "tokens": sum(len(doc) for doc in docs),
                }
                stats = result.stats
                own = {"docs": stats.docs, "sentences": stats.sentences, "tokens": stats.tokens}
                if own != got or stats.entities != ents:
                    problems.append(f"{what}: the converter's counts differ from its output")
                if corpus.lang == "zh" and any(t.whitespace_ for d in docs for t in d):
                    problems.append(f"{what}: a Chinese doc has spaces")
                per_type = sum(ents[label] == n for label, n in want.entities.items())
                if set(ents) != set(want.entities):
                    problems.append(f"{what}: labels {sorted(ents)}")
                for label, n in want.entities.items():
                    if ents[label] != n:
                        problems.append(f"{what} {label}: got {ents[label]}, README {n}")
                types_ok = per_type == len(want.entities) and set(ents) == set(want.entities)
                rows.append(
                    [
                        what,
                        _cell(result.scheme, corpus.scheme, problems, f"{what} scheme"),
                        _cell(got["docs"], want.docs, problems, f"{what} docs"),
                        _cell(got["sentences"], want.sentences, problems, f"{what} sentences"),
                        _cell(got["tokens"], want.tokens, problems, f"{what} tokens"),
                        f"{per_type}/{len(want.entities)} {'✓' if types_ok else '✗'}",
                        _cell(
                            sum(ents.values()),
                            sum(want.entities.values()),
                            problems,
                            f"{what} entities",
                        ),
                        _cell(
                            stats.repaired_positions, want.repaired, problems, f"{what} repaired"
                        ),
                    ]
                )
    header = ["split", "scheme", "docs", "sentences", "tokens", "types", "entities", "repaired"]
    msg.table(rows, header=header, divider=True, aligns=("l", "l", *("r",) * 6))
    print("docs: Resume and Weibo READMEs give none (10 sentences per Doc: not compared).")
    print("types: entity types whose count matches the README; repaired: invalid tag")
    print("positions repaired as conlleval does (the quirks each README describes).")
    for problem in problems:
        msg.fail(problem)
    return not problems


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default, help=f"default: {default}")
    args = parser.parse_args()
    ok = check(args.data_dir)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
