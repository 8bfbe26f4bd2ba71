"""Evaluation and visualisation of an entity-recognising pipeline.

``evaluate`` scores a pipeline on a gold ``.spacy`` DocBin twice, with spaCy's own scorer
(what ``spacy train`` optimises) and with seqeval (entity level, conlleval-compatible, what
papers report), so that the two can be compared side by side; it adds an entity-level
confusion matrix, a ``scores.json`` and two PNG plots. ``render`` writes a displaCy page of
the predicted entities, with the CRF's entity probability in the label where there is one.

``predict_entities`` gives the rows the ``predict`` command prints.

These are library functions; the ``evaluate``, ``render`` and ``predict`` commands in
``spacy_crf_ner.cli`` are thin wrappers around them, so tests and benchmarks call the same
code. seqeval and matplotlib are imported lazily: ``--help`` stays fast and matplotlib stays
optional (``pip install spacy-crf-ner[plots]``).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from timeit import default_timer
from typing import Any

from spacy.language import Language
from spacy.scorer import Scorer, get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab
from tqdm import tqdm
from wasabi import msg, table

from spacy_crf_ner.loaders import (
    check_limit,
    check_output_file,
    crf_components,
    load_docbin,
    load_pipeline,
    read_texts,
    setup_gpu,
    write_atomic,
)

MISSED = "(missed)"
"""Confusion-matrix column of gold entities that no predicted entity matches exactly."""
SPURIOUS = "(none)"
"""Confusion-matrix row of predicted entities that no gold entity matches exactly."""

SCORES_FILE = "scores.json"
F1_PLOT_FILE = "f1_per_type.png"
CONFUSION_PLOT_FILE = "confusion.png"

_Span = tuple[int, int, str]
"""An entity as (start token, end token exclusive, label), in gold-token offsets."""


class NoEntityRecognizerError(ValueError):
    """The pipeline has no component that sets ``doc.ents``, so there is nothing to score."""


# --------------------------------------------------------------------------- loading


def ner_components(nlp: Language) -> list[str]:
    """Names of the active pipes that set ``doc.ents`` (declared in their factory meta)."""
    names = []
    for name in nlp.pipe_names:
        meta = nlp.get_pipe_meta(name)
        # span_ruler declares only doc.spans, but writes doc.ents when annotate_ents is on.
        writes_ents = meta.factory == "span_ruler" and nlp.get_pipe_config(name).get(
            "annotate_ents", False
        )
        if "doc.ents" in meta.assigns or writes_ents:
            names.append(name)
    return names


def require_ner_component(nlp: Language) -> list[str]:
    """Fail early and clearly instead of reporting all-zero scores for a pipeline without NER."""
    names = ner_components(nlp)
    if not names:
        pipes = ", ".join(nlp.pipe_names) or "no components"
        raise NoEntityRecognizerError(
            f"The pipeline has no component that assigns doc.ents (pipes: {pipes}); "
            "add an entity recognizer such as crf_ner, ner or entity_ruler."
        )
    return names


def token_copy(doc: Doc, vocab: Vocab) -> Doc:
    """An unannotated doc with the same tokens: what the pipeline predicts on for gold docs."""
    tokens = [(token.text, bool(token.whitespace_)) for token in doc]
    return Doc(vocab, words=[w for w, _ in tokens], spaces=[s for _, s in tokens])


def examples_from_docs(gold_docs: Iterable[Doc], vocab: Vocab) -> list[Example]:
    """Pair each gold doc with an unannotated copy of its tokens, so both share tokenization."""
    return [Example(token_copy(gold, vocab), gold) for gold in gold_docs]


# --------------------------------------------------------------------------- scoring


class _CollectingScorer(Scorer):
    """Keeps the examples that ``nlp.evaluate`` annotated, which it otherwise discards."""

    def __init__(self, nlp: Language) -> None:
        super().__init__(nlp=nlp)
        self.examples: list[Example] = []

    def score(self, examples: Iterable[Example], *, per_component: bool = False) -> dict:
        self.examples.extend(examples)
        return {}


def aligned_entities(eg: Example) -> tuple[list[_Span], list[_Span], int]:
    """Gold and predicted entities of one example, both in gold-token offsets.

    Mirrors ``spacy.scorer.get_ner_prf``, so that seqeval and the confusion matrix see what
    spaCy scores: a predicted entity is mapped to gold tokens through the alignment, and one
    that touches a gold token with missing annotation is ignored (neither right nor wrong).
    Returns (gold, predicted, number of ignored predictions). With identical tokenization
    (as ``evaluate_pipeline`` builds it) predicted entities never overlap; with differing
    tokenization, a prediction overlapping an earlier one is ignored too.
    """
    gold = [(ent.start, ent.end, ent.label_) for ent in eg.reference.ents]
    predicted: list[_Span] = []
    ignored = 0
    taken: set[int] = set()
    x2y = eg.alignment.x2y
    for ent in eg.predicted.ents:
        indices = x2y[ent.start : ent.end]
        if not len(indices):
            ignored += 1
            continue
        start, end = int(indices[0]), int(indices[-1]) + 1
        tokens = range(start, end)
        if any(eg.reference[i].ent_iob == 0 for i in tokens) or taken.intersection(tokens):
            ignored += 1
            continue
        taken.update(tokens)
        predicted.append((start, end, ent.label_))
    return gold, predicted, ignored


def iob2_tags(length: int, spans: Iterable[_Span]) -> list[str]:
    """IOB2 tags for non-overlapping spans: the input seqeval's default mode expects."""
    tags = ["O"] * length
    for start, end, label in spans:
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def _to_builtin(value: Any) -> Any:
    """numpy scalars to Python numbers and NaN to None, recursively, so JSON stays valid."""
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_builtin(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _annotated(examples: Iterable[Example]) -> list[Example]:
    """Examples whose gold doc has entity annotation at all; spaCy skips the others."""
    return [eg for eg in examples if eg.reference.has_annotation("ENT_IOB")]


_DocEntities = tuple[int, list[_Span], list[_Span], int]
"""(gold doc length, gold entities, predicted entities, ignored predictions) of one doc."""


def _doc_entities(examples: Iterable[Example]) -> list[_DocEntities]:
    """Aligned entities of the annotated examples, computed once for all the reports."""
    return [(len(eg.reference), *aligned_entities(eg)) for eg in _annotated(examples)]


def seqeval_scores(examples: Iterable[Example]) -> dict[str, Any]:
    """seqeval's entity-level report (default, conlleval-compatible mode) as plain floats.

    Examples must carry predictions. Keys are the entity types plus "micro avg", "macro avg"
    and "weighted avg", each with precision, recall, f1-score and support; a score that is
    undefined (0/0) is 0, as in spaCy's scorer.
    """
    return _seqeval_report(_doc_entities(examples))


def _seqeval_report(docs: list[_DocEntities]) -> dict[str, Any]:
    from seqeval.metrics import classification_report

    y_true = [iob2_tags(length, gold) for length, gold, _, _ in docs]
    y_pred = [iob2_tags(length, predicted) for length, _, predicted, _ in docs]
    if not y_true:
        y_true, y_pred = [["O"]], [["O"]]  # seqeval cannot score an empty corpus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # macro mean of no types
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    return _to_builtin(report)


def entity_confusion(examples: Iterable[Example]) -> dict[str, Any]:
    """Entity-level confusion matrix of exact-boundary matches; rows gold, columns predicted.

    A gold entity counts under the label of the predicted entity with exactly its
    boundaries, or under MISSED; a predicted entity with no exact-boundary gold entity
    counts in the SPURIOUS row. Labels are shared by rows and columns (sorted), so the
    diagonal holds the correct entities.
    """
    return _confusion(_doc_entities(examples))


def _confusion(docs: list[_DocEntities]) -> dict[str, Any]:
    counts: Counter[tuple[str, str]] = Counter()
    for _, gold, predicted, _ in docs:
        pred_by_bounds = {(s, e): label for s, e, label in predicted}
        gold_bounds = {(s, e) for s, e, _ in gold}
        for start, end, label in gold:
            counts[label, pred_by_bounds.get((start, end), MISSED)] += 1
        for start, end, label in predicted:
            if (start, end) not in gold_bounds:
                counts[SPURIOUS, label] += 1
    labels = sorted(({g for g, _ in counts} | {p for _, p in counts}) - {MISSED, SPURIOUS})
    rows = [*labels, SPURIOUS]
    columns = [*labels, MISSED]
    matrix = [[counts[r, c] for c in columns] for r in rows]
    return {"rows": rows, "columns": columns, "matrix": matrix}


def _prf(p: float | None, r: float | None, f: float | None, support: int | None) -> dict:
    return {"precision": p, "recall": r, "f1": f, "support": support}


def _macro(per_type: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over types (seqeval's "macro avg"; spaCy has no macro average)."""
    if not per_type:
        return _prf(None, None, None, 0)
    n = len(per_type)
    mean = {k: sum(v[k] for v in per_type.values()) / n for k in ("precision", "recall", "f1")}
    support = sum(v["support"] or 0 for v in per_type.values())
    return _prf(mean["precision"], mean["recall"], mean["f1"], support)


def _summaries(
    spacy_scores: dict[str, Any], report: dict[str, Any], gold_counts: Counter[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-type, micro and macro P/R/F/support of both scorers in one shape."""
    per_type_spacy = {
        label: _prf(s["p"], s["r"], s["f"], gold_counts.get(label, 0))
        for label, s in sorted((spacy_scores.get("ents_per_type") or {}).items())
    }
    total = sum(gold_counts.values())
    spacy_part = {
        "per_type": per_type_spacy,
        "micro": _prf(
            spacy_scores.get("ents_p"),
            spacy_scores.get("ents_r"),
            spacy_scores.get("ents_f"),
            total,
        ),
        "macro": _macro(per_type_spacy),
    }

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return _prf(row["precision"], row["recall"], row["f1-score"], row["support"])

    averages = {"micro avg", "macro avg", "weighted avg"}
    seqeval_part = {
        "per_type": {k: convert(v) for k, v in sorted(report.items()) if k not in averages},
        "micro": convert(report["micro avg"]),
        "macro": convert(report["macro avg"]),
    }
    return spacy_part, seqeval_part


def evaluate_pipeline(
    nlp: Language,
    examples_or_docbin_path: Iterable[Example] | str | Path,
    *,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a pipeline's entities with spaCy's scorer and seqeval, plus a confusion matrix.

    examples_or_docbin_path: a ``.spacy`` DocBin of gold docs (the pipeline then predicts on
        unannotated copies of their tokens) or ready-made ``Example`` objects.
    batch_size: ``nlp.pipe`` batch size; the pipeline's own default when None.
    chunk_size: docs per ``nlp.evaluate`` call, i.e. per progress-bar step; all at once when
        None. Chunking changes no score: the annotated examples are scored together.
    progress: show a progress bar on stderr.

    Returns JSON-ready results: "spacy" (the full ``nlp.evaluate`` scores plus per-type,
    micro and macro P/R/F/support), "seqeval" (its report and the same summaries),
    "confusion", "words_per_second" and corpus counts.
    """
    require_ner_component(nlp)
    data_path: str | None = None
    if isinstance(examples_or_docbin_path, str | Path):
        data_path = str(examples_or_docbin_path)
        gold_docs = load_docbin(examples_or_docbin_path, nlp.vocab)
        examples = examples_from_docs(gold_docs, nlp.vocab)
    else:
        examples = list(examples_or_docbin_path)
    batch_size = batch_size or nlp.batch_size
    step = chunk_size or max(len(examples), 1)

    # nlp.evaluate predicts and times; the collecting scorer hands back its annotated copies,
    # which are then scored once, together, by the scorer nlp.evaluate would have used.
    collector = _CollectingScorer(nlp)
    n_words = 0
    seconds = 0.0
    with tqdm(
        total=len(examples),
        unit="doc",
        desc="Evaluating",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    ) as bar:
        for i in range(0, len(examples), step):
            chunk = examples[i : i + step]
            start = default_timer()
            result = nlp.evaluate(chunk, batch_size=batch_size, scorer=collector)
            chunk_words = sum(len(eg.predicted) for eg in chunk)
            speed = result.get("speed") or 0.0
            # nlp.evaluate times tokenization + pipeline only; fall back to the wall clock.
            seconds += chunk_words / speed if speed else default_timer() - start
            n_words += chunk_words
            bar.update(len(chunk))
    predicted = collector.examples
    spacy_scores = Scorer(nlp=nlp).score(predicted)
    if "ents_p" not in spacy_scores:  # an ents-writing pipe without an ents scorer
        spacy_scores.update(get_ner_prf(predicted))
    words_per_second = n_words / seconds if seconds > 0 else None
    spacy_scores["speed"] = words_per_second

    docs = _doc_entities(predicted)
    report = _seqeval_report(docs)
    confusion = _confusion(docs)
    gold_counts = Counter(label for _, gold, _, _ in docs for _, _, label in gold)
    n_predicted = sum(len(pred) for _, _, pred, _ in docs)
    n_ignored = sum(ignored for _, _, _, ignored in docs)
    spacy_part, seqeval_part = _summaries(spacy_scores, report, gold_counts)
    spacy_part = {"scores": spacy_scores, **spacy_part}
    return _to_builtin(
        {
            "data": data_path,
            "n_docs": len(predicted),
            "n_docs_without_ner_annotation": len(predicted) - len(docs),
            "n_tokens": sum(len(eg.reference) for eg in predicted),
            "n_entities": {
                "gold": sum(gold_counts.values()),
                "predicted": n_predicted,
                "predicted_ignored": n_ignored,
            },
            "words_per_second": words_per_second,
            "spacy": spacy_part,
            "seqeval": {"report": report, **seqeval_part},
            "confusion": confusion,
        }
    )


# --------------------------------------------------------------------------- outputs


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the side-by-side table: one per type, then micro and macro averages."""
    sp, sq = results["spacy"], results["seqeval"]
    labels = sorted(set(sp["per_type"]) | set(sq["per_type"]))
    empty = _prf(None, None, None, None)
    rows = []
    named = [
        (label, sp["per_type"].get(label, empty), sq["per_type"].get(label, empty))
        for label in labels
    ]
    named += [("micro avg", sp["micro"], sq["micro"]), ("macro avg", sp["macro"], sq["macro"])]
    for name, a, b in named:
        support = b["support"] if b["support"] is not None else a["support"]
        rows.append(
            [name]
            + [_pct(a[k]) for k in ("precision", "recall", "f1")]
            + [_pct(b[k]) for k in ("precision", "recall", "f1")]
            + ["-" if support is None else str(support)]
        )
    return rows


TABLE_HEADER = (
    "",
    "spaCy P",
    "spaCy R",
    "spaCy F",
    "seqeval P",
    "seqeval R",
    "seqeval F",
    "Support",
)


def format_table(results: dict[str, Any]) -> str:
    """The per-type P/R/F (in %) of both scorers side by side, as printed by the CLI."""
    aligns = ("l",) + ("r",) * (len(TABLE_HEADER) - 1)
    return table(table_rows(results), header=TABLE_HEADER, divider=True, aligns=aligns)


def write_scores(results: dict[str, Any], path: str | Path) -> Path:
    """Write the results as indented JSON (creating the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    return path


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas: no pyplot, so no global backend is touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'spacy-crf-ner[plots]'") from err
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_f1_per_type(results: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of F1 per entity type, spaCy and seqeval side by side, with micro F1 lines."""
    sp, sq = results["spacy"], results["seqeval"]
    labels = sorted(set(sp["per_type"]) | set(sq["per_type"]))
    fig = _figure(max(5.0, 0.9 * len(labels) + 2), 4.0)
    ax = fig.add_subplot()
    xs = list(range(len(labels)))
    width = 0.4
    for offset, name, part in ((-width / 2, "spaCy", sp), (width / 2, "seqeval", sq)):
        values = [(part["per_type"].get(label) or {}).get("f1") or 0.0 for label in labels]
        bars = ax.bar([x + offset for x in xs], values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    micro = sp["micro"]["f1"]
    if micro is not None:
        ax.axhline(micro, color="grey", linestyle="--", linewidth=1, label=f"micro F1 {micro:.3f}")
    if not labels:
        ax.text(0.5, 0.5, "no entities", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(xs)
    ax.set_xticklabels(
        [f"{label}\n(n={(sq['per_type'].get(label) or {}).get('support', 0)})" for label in labels]
    )
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("F1")
    ax.set_title("Entity F1 per type")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_confusion(results: dict[str, Any], path: str | Path) -> Path:
    """Heat map of the entity-level confusion matrix with the counts written in each cell."""
    confusion = results["confusion"]
    rows, columns, matrix = confusion["rows"], confusion["columns"], confusion["matrix"]
    size = max(4.0, 0.7 * len(columns) + 2.5)
    fig = _figure(size, size * 0.85)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    peak = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if peak and count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Entity confusion (exact boundaries)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def run_evaluation(
    model: str | Path,
    data: str | Path,
    output: str | Path | None = None,
    *,
    gpu_id: int = -1,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """What the ``evaluate`` command does: load, score, and write scores.json and plots.

    The data and output paths are checked before the pipeline is loaded, so a typo fails
    fast. ``output`` is a directory; its scores.json and plots are replaced. Returns the
    results with the pipeline path added; the plots are skipped with a warning when
    matplotlib is not installed.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"Data file not found: {data}")
    if output is not None and Path(output).exists() and not Path(output).is_dir():
        raise NotADirectoryError(f"--output {output} is a file; evaluate writes a directory")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    setup_gpu(gpu_id)
    nlp = load_pipeline(model)
    require_ner_component(nlp)
    batch_size = batch_size or nlp.batch_size
    results = evaluate_pipeline(
        nlp, data, batch_size=batch_size, chunk_size=batch_size, progress=progress
    )
    results = {"pipeline": str(model), **results}
    if output is not None:
        output = Path(output)
        write_scores(results, output / SCORES_FILE)
        try:
            plot_f1_per_type(results, output / F1_PLOT_FILE)
            plot_confusion(results, output / CONFUSION_PLOT_FILE)
        except ImportError as err:
            msg.warn(f"Skipped the plots: {err}")
    return results


# --------------------------------------------------------------------------- render


def entity_label(ent: Span) -> str:
    """The label shown by displaCy: with the CRF's probability, e.g. "PER 0.97", if set."""
    if Span.has_extension("crf_prob"):
        prob = ent._.crf_prob
        if prob is not None:
            return f"{ent.label_} {float(prob):.2f}"
    return ent.label_


def render_entities(
    nlp: Language, inputs: Sequence[str | Doc], *, batch_size: int | None = None
) -> str:
    """A displaCy HTML page of the predicted entities of texts or (gold) docs.

    Gold docs are re-predicted on unannotated copies of their tokens. displaCy's manual mode
    is used so that a label can carry the entity's probability; such labels keep the colour
    of their plain label.
    """
    from spacy import displacy
    from spacy.displacy.render import EntityRenderer

    require_ner_component(nlp)
    fresh = [x if isinstance(x, str) else token_copy(x, nlp.vocab) for x in inputs]
    colors = EntityRenderer({}).colors
    options_colors: dict[str, str] = {}
    pages = []
    for doc in nlp.pipe(fresh, batch_size=batch_size or nlp.batch_size):
        ents = []
        for ent in doc.ents:
            label = entity_label(ent)
            if label != ent.label_ and ent.label_.upper() in colors:
                options_colors[label] = colors[ent.label_.upper()]
            ents.append({"start": ent.start_char, "end": ent.end_char, "label": label})
        pages.append({"text": doc.text, "ents": ents, "title": None})
    return displacy.render(
        pages, style="ent", page=True, manual=True, options={"colors": options_colors}
    )


def show_probabilities(nlp: Language) -> None:
    """Switch on every crf_ner's entity probabilities, which render and predict display."""
    for name in crf_components(nlp):
        nlp.get_pipe(name).entity_probs = True


def run_render(
    model: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    limit: int | None = None,
    gpu_id: int = -1,
    overwrite: bool = False,
) -> int:
    """What the ``render`` command does; returns the number of docs rendered.

    Every path and number is checked before the pipeline is loaded. crf_ner components show
    each entity's probability in its label; the page is written atomically.
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"Input file not found: {input_path}")
    check_limit(limit)
    output = check_output_file(output, overwrite=overwrite, option="--output")
    setup_gpu(gpu_id)
    nlp = load_pipeline(model)
    require_ner_component(nlp)
    show_probabilities(nlp)
    inputs = read_texts(input_path, nlp.vocab, limit)
    html = render_entities(nlp, inputs)
    write_atomic(output, html)
    return len(inputs)


def predict_entities(nlp: Language, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
    """Per text, its entities (text, label, start_char, end_char, prob or None), with the
    CRF's probabilities switched on."""
    require_ner_component(nlp)
    show_probabilities(nlp)
    return [
        [
            {
                "text": ent.text,
                "label": ent.label_,
                "start_char": ent.start_char,
                "end_char": ent.end_char,
                "prob": ent._.crf_prob if Span.has_extension("crf_prob") else None,
            }
            for ent in doc.ents
        ]
        for doc in nlp.pipe(texts)
    ]
