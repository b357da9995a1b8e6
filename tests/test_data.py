"""tutorlib.data: every released format, the record shape, cleaning, drops, encodings and errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from tutorlib import data

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
BUNDLED = Path(__file__).resolve().parents[1] / "data"
realdata = pytest.mark.skipif(not REALDATA.exists(), reason=f"{REALDATA} not present")


# ---------------------------------------------------------------- writers of tiny released files


def write_jsonl(path: Path, records: list, encoding: str = "utf-8") -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding=encoding
    )
    return path


def write_json(path: Path, records: list, encoding: str = "utf-8") -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding=encoding)
    return path


def dialogsum_folder(folder: Path) -> Path:
    write_jsonl(
        folder / "dialogsum.train.jsonl",
        [
            {
                "fname": "train_0",
                "dialogue": "#Person1#: Hi.\n#Person2#: Hello.",
                "summary": "They greet.",
            },
            {
                "fname": "train_1",
                "dialogue": "#Person1#: Tea?\n#Person2#: Yes.",
                "summary": "Tea is offered.",
            },
        ],
    )
    write_jsonl(
        folder / "dialogsum.dev.jsonl",
        [
            {
                "fname": "dev_0",
                "dialogue": "#Person1#: Late?\n#Person2#: No.",
                "summary": "Not late.",
            }
        ],
    )
    test = {"fname": "test_0", "dialogue": "#Person1#: Rain?\n#Person2#: Yes, take an umbrella."}
    test |= {
        "summary1": "It rains.",
        "summary2": "#Person2# advises an umbrella.",
        "summary3": "Rain.",
    }
    write_jsonl(
        folder / "dialogsum.test.jsonl", [test, test | {"fname": "test_1"}]
    )  # a repeated dialogue
    return folder


def samsum_folder(folder: Path) -> Path:
    write_json(
        folder / "train.json",
        [
            {
                "id": "1",
                "summary": "Amy asks Bob about lunch. ",
                "dialogue": "Amy: Lunch?\r\nBob: Sure!\r\n",
            },
            {"id": "2", "summary": "Nothing.", "dialogue": ""},
        ],
    )
    write_json(
        folder / "val.json",
        [{"id": "3", "summary": "Cy is late.", "dialogue": "Cy: Late\r\nDee: ok"}],
    )
    write_json(
        folder / "test.json",
        [{"id": "4", "summary": "Ed says hi.", "dialogue": "Ed: hi\r\nFay: hey"}],
    )
    return folder


def processed_tweetsumm(dialog_id: str, summaries: list) -> dict:
    turns = [
        {
            "is_agent": False,
            "sentences": ["@AppleSupport my phone", "won't charge https://t.co/abc"],
        },
        {"is_agent": True, "sentences": ["@115820 Sorry to hear that.", "See www.apple.com/help"]},
        {"is_agent": True, "sentences": ["https://t.co/only-a-link"]},
    ]
    return {
        "dialog": {"dialog_id": dialog_id, "turns": turns},
        "summaries": {"extractive_summaries": [], "abstractive_summaries": summaries},
    }


def tweetsumm_folder(folder: Path) -> Path:
    refs = [
        ["Customer cannot charge.", "Agent sends a link."],
        ["", ""],
        ["Phone fails.", "Agent helps."],
    ]
    write_jsonl(folder / "train.jsonl", [processed_tweetsumm("t1", refs)])
    write_jsonl(folder / "valid.jsonl", [processed_tweetsumm("v1", refs[:1])])
    write_jsonl(folder / "test.jsonl", [processed_tweetsumm("s1", [refs[2], refs[0]])])
    return folder


TWCS_HEADER = [
    "tweet_id",
    "author_id",
    "inbound",
    "created_at",
    "text",
    "response_tweet_id",
    "in_response_to_tweet_id",
]


def write_twcs(path: Path, tweets: list[tuple], encoding: str = "utf-8") -> Path:
    """tweets: (tweet_id, inbound, created_at, text)."""
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TWCS_HEADER)
        writer.writerow(
            [1, "someone", "True", "Mon Oct 30 10:00:00 +0000 2017", "unrelated tweet", "", ""]
        )
        for tweet_id, inbound, created_at, text in tweets:
            writer.writerow([tweet_id, "x", str(inbound), created_at, text, "", ""])
    return path


def annotation(conversation_id: str, tweet_ids: list[int], abstractive: list) -> dict:
    return {
        "conversation_id": conversation_id,
        "tweet_ids_sentence_offset": [
            {"tweet_id": t, "sentence_offsets": ["[0, 10]"]} for t in tweet_ids
        ],
        "annotations": [{"extractive": [], "abstractive": a} for a in abstractive],
    }


PARCEL_TWEETS = [  # ids deliberately out of time order: the order must come from created_at
    (
        30,
        True,
        "Tue Oct 31 10:00:00 +0000 2017",
        "@AmazonHelp where is my\nparcel? https://t.co/x1",
    ),
    (10, False, "Tue Oct 31 10:05:00 +0000 2017", "@115712 Hi! Please DM us &amp; we'll check."),
    (20, True, "Tue Oct 31 10:09:00 +0000 2017", "Thanks @AmazonHelp"),
]


def annotated_tweetsumm(
    folder: Path, name: str = "final_valid_tweetsum.jsonl", encoding: str = "utf-8"
) -> Path:
    write_twcs(folder / "twcs.csv", PARCEL_TWEETS, encoding=encoding)
    return write_jsonl(
        folder / name,
        [
            annotation(
                "conv-a", [20, 10, 30], [["Customer lost a parcel.", "Agent asks for a DM."], None]
            ),
            annotation("conv-missing", [30, 999], [["Unused.", "Unused."]]),
        ],
        encoding,
    )


def assert_shape(dsd: datasets.DatasetDict) -> None:
    assert list(dsd) == list(data.SPLITS)
    for ds in dsd.values():
        assert ds.features == data.FEATURES


def messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


# ---------------------------------------------------------------- each released format


def test_dialogsum_folder_rows_and_references(tmp_path):
    dsd = data.load("DialogSum", dialogsum_folder(tmp_path))
    assert_shape(dsd)
    assert data.sizes(dsd) == {
        "train": 2,
        "validation": 1,
        "test": 2,
    }  # released rows are never merged
    train = dsd["train"][0]
    assert train["id"] == "train_0#1"
    assert train["dialogue"] == "#Person1#: Hi.\n#Person2#: Hello."
    assert train["summary"] == "They greet." and train["references"] == ["They greet."]
    test = dsd["test"][0]
    assert test["id"] == "test_0" and test["summary"] == "It rains."
    assert test["references"] == ["It rains.", "#Person2# advises an umbrella.", "Rain."]


def test_samsum_folder_line_ends_and_a_dropped_row_is_warned(tmp_path):
    with pytest.warns(UserWarning) as record:
        dsd = data.load("samsum", samsum_folder(tmp_path))
    assert data.sizes(dsd) == {"train": 1, "validation": 1, "test": 1}
    row = dsd["train"][0]
    assert row == {"id": "1#1", "dialogue": "Amy: Lunch?\nBob: Sure!", "summary": "Amy asks Bob about lunch.",
                   "references": ["Amy asks Bob about lunch."]}  # fmt: skip
    assert messages(record) == [
        f"1 rows dropped for an empty dialogue or summary from {tmp_path / 'train.json'} (train)"
    ]


def test_tweetsumm_processed_one_row_per_reference_and_cleaning(tmp_path):
    with pytest.warns(UserWarning, match=r"1 rows dropped .*train\.jsonl \(train\)"):
        dsd = data.load("tweetsumm", tweetsumm_folder(tmp_path))
    assert_shape(dsd)
    assert data.sizes(dsd) == {"train": 2, "validation": 1, "test": 1}
    train = dsd["train"]
    assert train["id"] == ["t1#1", "t1#3"]  # the empty second summary is dropped, numbering kept
    assert train["summary"] == [
        "Customer cannot charge. Agent sends a link.",
        "Phone fails. Agent helps.",
    ]
    assert train[0]["references"] == train["summary"]
    # The agent turn that was only a link disappears; handles and links are gone.
    assert train[0]["dialogue"] == "Customer: my phone won't charge\nAgent: Sorry to hear that. See"
    assert dsd["test"][0]["references"] == [
        "Phone fails. Agent helps.",
        "Customer cannot charge. Agent sends a link.",
    ]


def test_tweetsumm_annotations_joined_to_twcs(tmp_path):
    path = annotated_tweetsumm(tmp_path)
    with pytest.warns(UserWarning) as record:
        dsd = data.load("tweetsumm", path)
    assert data.sizes(dsd) == {"train": 0, "validation": 1, "test": 0}
    row = dsd["validation"][0]
    assert row["id"] == "conv-a#1"
    assert (
        row["dialogue"]
        == "Customer: where is my parcel?\nAgent: Hi! Please DM us & we'll check.\nCustomer: Thanks"
    )
    assert row["summary"] == "Customer lost a parcel. Agent asks for a DM."
    assert (
        messages(record)
        == [
            f"skipped 1 conversations of {path} whose tweets are missing from twcs.csv (first: conv-missing)",
            f"1 rows dropped for an empty dialogue or summary from {path} (validation)",  # the null summary
        ]
    )


def test_tweetsumm_annotation_folder_uses_one_csv_for_all_splits(tmp_path):
    annotated_tweetsumm(tmp_path)
    write_jsonl(
        tmp_path / "final_train_tweetsum.jsonl",
        [annotation("tr", [10, 30], [["A.", "B."], ["C.", "D."]])],
    )
    write_jsonl(
        tmp_path / "final_test_tweetsum.jsonl",
        [annotation("te", [30, 20], [["E.", "F."], ["G.", "H."]])],
    )
    with pytest.warns(UserWarning):
        dsd = data.load("tweetsumm", tmp_path)
    assert data.sizes(dsd) == {"train": 2, "validation": 1, "test": 1}
    assert (
        dsd["train"]["dialogue"][0]
        == "Customer: where is my parcel?\nAgent: Hi! Please DM us & we'll check."
    )
    assert dsd["test"][0]["references"] == ["E. F.", "G. H."]


@pytest.mark.parametrize(
    ("filename", "split"),
    [("dialogsum.dev.jsonl", "validation"), ("my_val.jsonl", "validation"), ("dialogsum.test.jsonl", "test"),
     ("train.jsonl", "train"), ("anything.jsonl", "train")],
)  # fmt: skip
def test_single_file_split_from_name(tmp_path, filename, split):
    path = write_jsonl(
        tmp_path / filename, [{"fname": "a", "dialogue": "#Person1#: x", "summary": "y"}]
    )
    dsd = data.load("dialogsum", str(path))
    assert_shape(dsd)
    assert {s: n for s, n in data.sizes(dsd).items() if n} == {split: 1}


# ---------------------------------------------------------------- hub copies (offline: load_dataset faked)


def fake_hub(monkeypatch, splits: dict[str, list[dict]]) -> list[str]:
    calls: list[str] = []
    hub = datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}
    )
    monkeypatch.setattr(data, "load_dataset", lambda hub_id: calls.append(hub_id) or hub)
    return calls


def test_hub_copy_merges_test_rows_and_renames_splits(monkeypatch):
    rain = "#Person1#: Rain?\n#Person2#: Yes."
    test = [
        {"id": f"test_0_{k}", "dialogue": rain, "summary": s}
        for k, s in enumerate(["Rain.", "Wet.", "Rain."])
    ]
    calls = fake_hub(monkeypatch, {
        "train": [{"id": "train_0", "dialogue": "#Person1#: Hi.", "summary": "Hi."}],
        "val": [{"id": "dev_0", "dialogue": "#Person1#: A", "summary": "B"}],
        "test": [*test, {"id": "test_1", "dialogue": "#Person1#: Bye.", "summary": "Bye."}],
        "holdout": [{"id": "h", "dialogue": "x", "summary": "y"}],
    })  # fmt: skip
    dsd = data.load("dialogsum", "someone/dialogsum-copy")
    assert calls == ["someone/dialogsum-copy"]
    assert data.sizes(dsd) == {"train": 1, "validation": 1, "test": 2}
    assert dsd["test"][0]["references"] == [
        "Rain.",
        "Wet.",
    ]  # one row per dialogue, duplicates once


CLEANING = [
    ("@Delta my   bag is lost https://t.co/q", "my bag is lost"),
    ("see http://example.com/a?b=1 or www.help.com/x or t.co/zz ok", "see or or ok"),
    ("Tom &amp; Jerry\n\tline two", "Tom & Jerry line two"),
    ("mail me at jo@example.com", "mail me at jo@example.com"),
]


@pytest.mark.parametrize(("raw", "clean"), CLEANING)
@pytest.mark.parametrize(("customer", "agent"), [("user", "assistant"), ("Customer", "Agent"), ("human", "bot"),
                                                 ("client", "support"), (" USER ", "company")])  # fmt: skip
def test_hub_tweetsumm_turns_any_role_labels_and_cleaning(monkeypatch, customer, agent, raw, clean):
    turns = [{"role": customer, "content": raw}, {"role": agent, "content": "@1234 Sorry! DM us."},
             {"role": agent, "content": "https://t.co/only-a-link"}]  # fmt: skip
    summary = "Customer lost a bag. Agent asks for a DM."
    fake_hub(
        monkeypatch,
        {"validation": [{"conversation_id": "c1", "conversation": turns, "summary": summary}]},
    )
    row = data.load("tweetsumm", "someone/tweetsumm")["validation"][0]
    assert row["dialogue"] == f"Customer: {clean}\nAgent: Sorry! DM us."
    assert row["id"] == "c1#1" and row["references"] == [summary]


def test_hub_tweetsumm_unknown_role_is_named_with_the_accepted_ones(monkeypatch):
    turns = [{"role": "user", "content": "hi"}, {"role": "moderator", "content": "hello"}]
    fake_hub(monkeypatch, {"train": [{"id": "c1", "conversation": turns, "summary": "s"}]})
    with pytest.raises(ValueError, match="row 0: unknown speaker role 'moderator'") as err:
        data.load("tweetsumm", "someone/tweetsumm")
    assert all(
        role in str(err.value)
        for role in ("customer", "user", "human", "client", "agent", "assistant", "bot")
    )


def test_parquet_folder_of_a_hub_copy(tmp_path):
    turns = [
        {"role": "user", "content": "@Brand my order?"},
        {"role": "assistant", "content": "On its way!"},
    ]
    (tmp_path / "data").mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"id": f"{split}-1", "conversation": turns, "summary": f"Order asked in {split}."}]
        datasets.Dataset.from_list(rows).to_parquet(
            str(tmp_path / "data" / f"{split}-00000-of-00001.parquet")
        )
    dsd = data.load("tweetsumm", tmp_path)
    assert data.sizes(dsd) == {"train": 1, "validation": 1, "test": 1}
    assert dsd["test"][0]["dialogue"] == "Customer: my order?\nAgent: On its way!"


def test_source_none_follows_the_profile(monkeypatch, tmp_path):
    calls = fake_hub(monkeypatch, {"train": [{"id": "1", "dialogue": "A: hi", "summary": "Hi."}]})
    data.load("samsum", profile=SimpleNamespace(name="full"))
    assert calls == [data.HUB_IDS["samsum"]] == ["knkarthick/samsum"]
    monkeypatch.setenv("TUTORLIB_HOME", str(tmp_path))
    (tmp_path / "data" / "samsum").mkdir(parents=True)
    samsum_folder(tmp_path / "data" / "samsum")
    for bundled in (SimpleNamespace(name="smoke"), None):  # no profile: the bundled samples
        with pytest.warns(UserWarning):
            sizes = data.sizes(data.load("samsum", profile=bundled))
        assert sizes == {"train": 1, "validation": 1, "test": 1}
    assert len(calls) == 1


# ---------------------------------------------------------------- issue 14: drops, empty splits, encodings


def test_drops_are_counted_per_file_and_split(tmp_path):
    dialogsum_folder(tmp_path)
    rows = [{"fname": "d1", "dialogue": "", "summary": "s"}, {"fname": "d2", "dialogue": "#Person1#: x", "summary": " "},
            {"fname": "d3", "dialogue": "#Person1#: y", "summary": "ok"}]  # fmt: skip
    write_jsonl(tmp_path / "dialogsum.dev.jsonl", rows)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # the filter a notebook has: the warning must show
        dsd = data.load("dialogsum", tmp_path)
    assert messages(record) == [
        f"2 rows dropped for an empty dialogue or summary from {tmp_path / 'dialogsum.dev.jsonl'} (validation)"
    ]
    assert dsd["validation"]["id"] == ["d3#1"]


def test_a_split_left_empty_is_an_error_saying_why(tmp_path):
    write_jsonl(
        tmp_path / "dialogsum.test.jsonl",
        [{"fname": "t", "dialogue": "#Person1#: x", "summary1": ""}],
    )
    why = "is empty: 1 dialogues read, 1 rows dropped for an empty dialogue or summary"
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"test split from .*test\.jsonl " + why),
    ):
        data.load("dialogsum", tmp_path / "dialogsum.test.jsonl")
    (tmp_path / "train.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty: 0 dialogues read"):
        data.load("samsum", tmp_path / "train.json")


@pytest.mark.parametrize("name", ["train.json", "dialogsum.train.jsonl"])
def test_a_file_that_is_not_utf8_is_named(tmp_path, name):
    path = tmp_path / name
    record = {"id": "1", "fname": "1", "dialogue": "Zoë: café?", "summary": "Zoë wants coffee."}
    (write_json if name.endswith(".json") else write_jsonl)(path, [record], "latin-1")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r" is not UTF-8 .*expected UTF-8"):
        data.load("samsum" if name.endswith(".json") else "dialogsum", path)


def test_a_twcs_csv_that_is_not_utf8_is_named(tmp_path):
    path = annotated_tweetsumm(tmp_path)
    write_twcs(tmp_path / "twcs.csv", PARCEL_TWEETS, encoding="utf-16")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "twcs.csv")) + " is not UTF-8"):
        data.load("tweetsumm", path)


def test_a_utf8_byte_order_mark_is_accepted_in_json_jsonl_and_csv_headers(tmp_path):
    samsum = write_json(
        tmp_path / "train.json",
        [{"id": "1", "summary": "Zoë greets.", "dialogue": "Zoë: hi"}],
        "utf-8-sig",
    )
    assert data.load("samsum", samsum)["train"][0]["summary"] == "Zoë greets."
    dialogsum = write_jsonl(
        tmp_path / "dialogsum.dev.jsonl",
        [{"fname": "a", "dialogue": "#Person1#: x", "summary": "y"}],
        "utf-8-sig",
    )
    assert data.load("dialogsum", dialogsum)["validation"]["id"] == ["a#1"]
    (tmp_path / "tw").mkdir()
    path = annotated_tweetsumm(tmp_path / "tw", encoding="utf-8-sig")
    assert (tmp_path / "tw" / "twcs.csv").read_bytes().startswith(b"\xef\xbb\xbftweet_id")
    with pytest.warns(UserWarning):
        assert data.sizes(data.load("tweetsumm", path))["validation"] == 1


# ---------------------------------------------------------------- other errors


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="tweetsumm, dialogsum, samsum"):
        data.load("cnn_dailymail", "whatever")


def test_missing_files_and_splits_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.jsonl"))):
        data.load("dialogsum", tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="no such file or folder: not a hub id"):
        data.load("samsum", "not a hub id")
    write_jsonl(
        tmp_path / "dialogsum.train.jsonl",
        [{"fname": "a", "dialogue": "#Person1#: x", "summary": "y"}],
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"has no file for the validation/test split; expected .*dialogsum\.dev\.jsonl",
    ):
        data.load("dialogsum", tmp_path)


def test_missing_twcs_csv_is_named(tmp_path):
    path = annotated_tweetsumm(tmp_path)
    (tmp_path / "twcs.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"twcs\.csv .*Kaggle"):
        data.load("tweetsumm", path)


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({"fname": "b", "summary": "s"}), "line 2: missing field 'dialogue / dialog / conversation'; expected a record {id"),
        (json.dumps({"fname": "b", "dialogue": 5, "summary": "s"}), "line 2: expected string or bytes-like object"),
        (json.dumps({"fname": "b", "dialogue": "x"}), "line 2: missing field 'summary / abstractive_summary'"),
        (json.dumps({"fname": "b", "dialogue": "x", "summary": 3}), "line 2: expected text or a list of sentences, got int"),
        (json.dumps(["a", "list"]), "line 2: 'list' object has no attribute 'get'; expected a record {id"),
    ],
)  # fmt: skip
def test_malformed_jsonl_names_file_line_and_expected_shape(tmp_path, second_line, message):
    path = tmp_path / "dialogsum.dev.jsonl"
    path.write_text(
        json.dumps({"fname": "a", "dialogue": "#Person1#: x", "summary": "y"})
        + "\n"
        + second_line
        + "\n"
    )
    with pytest.raises(ValueError, match=re.escape(f"{path}, {message}")):
        data.load("dialogsum", path)


def test_malformed_json_list_names_record_index(tmp_path):
    path = write_json(
        tmp_path / "train.json", [{"id": "1", "summary": "s", "dialogue": "A: x"}, {"id": "2"}]
    )
    with pytest.raises(
        ValueError, match=re.escape(f"{path}, record index 1: missing field 'dialogue")
    ):
        data.load("samsum", path)
    path.write_text('[{"id": "1",\n "summary": }]')
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: not valid JSON")):
        data.load("samsum", path)


def test_malformed_tweetsumm_records_name_file_line_and_shape(tmp_path):
    bad_turn = processed_tweetsumm("t2", [["a", "b"]])
    bad_turn["dialog"]["turns"][0]["is_agent"] = "yes"
    path = write_jsonl(
        tmp_path / "train.jsonl", [processed_tweetsumm("t1", [["a", "b"]]), bad_turn]
    )
    message = (
        f"{path}, line 2: 'is_agent' should be true or false, got 'yes'; expected a record {{dialog"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        data.load("tweetsumm", path)
    ann = annotated_tweetsumm(tmp_path, "final_test_tweetsum.jsonl")
    write_jsonl(
        ann,
        [
            annotation("c", [10], [["a", "b"]]),
            {"conversation_id": "d", "tweet_ids_sentence_offset": []},
        ],
    )
    message = f"{ann}, line 2: missing field 'annotations'; expected a record {{conversation_id"
    with pytest.raises(ValueError, match=re.escape(message)):
        data.load("tweetsumm", ann)


def test_malformed_twcs_rows_and_header_are_named(tmp_path):
    path = annotated_tweetsumm(tmp_path)
    write_twcs(tmp_path / "twcs.csv", [(30, "maybe", "Tue Oct 31 10:00:00 +0000 2017", "hi")])
    with pytest.raises(
        ValueError,
        match=re.escape(f"{tmp_path / 'twcs.csv'}, line 3: expected 'inbound' True or False"),
    ):
        data.load("tweetsumm", path)
    write_twcs(tmp_path / "twcs.csv", [(30, True, "yesterday", "hi")])
    with pytest.raises(ValueError, match="line 3: expected .*'created_at' like"):
        data.load("tweetsumm", path)
    (tmp_path / "twcs.csv").write_text("id,text\n30,hi\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no column\(s\) \['created_at', 'inbound', 'tweet_id'\]"):
        data.load("tweetsumm", path)


# ---------------------------------------------------------------- helpers and bundled samples


def test_sizes_and_take(tmp_path):
    with pytest.warns(UserWarning):
        dsd = data.load("tweetsumm", tweetsumm_folder(tmp_path))
    assert data.take(dsd["train"], 1)["id"] == ["t1#1"]
    assert len(data.take(dsd["train"], 50)) == 2
    assert data.take(dsd["train"], None) is dsd["train"]
    with pytest.raises(ValueError, match="non-negative int or None, got -1"):
        data.take(dsd["train"], -1)


@pytest.mark.parametrize("name", data.DATASETS)
def test_bundled_samples_load(name):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dsd = data.load(name, BUNDLED / name)
    assert_shape(dsd)
    assert all(n > 0 for n in data.sizes(dsd).values())
    test = dsd["test"]
    assert all(row["summary"] == row["references"][0] for row in test)
    assert len(set(test["id"])) == len(test)  # one row per dialogue
    assert all(
        row["summary"] in row["references"] and "\r" not in row["dialogue"] for row in dsd["train"]
    )
    if name == "tweetsumm":
        for text in [*dsd["train"]["dialogue"], *test["dialogue"]]:
            assert all(line.startswith(("Customer: ", "Agent: ")) for line in text.split("\n"))
            assert not re.search(r"https?://|(?<!\w)@\w", text)
        assert messages(record) == [
            f"1 rows dropped for an empty dialogue or summary from {BUNDLED / name / 'train.jsonl'} (train)"
        ]
    else:
        assert messages(record) == []


# ---------------------------------------------------------------- real released files (read only)


@realdata
@pytest.mark.realdata
def test_realdata_dialogsum_dev_and_test():
    dev = data.load("dialogsum", REALDATA / "dialogsum.dev.jsonl")
    assert data.sizes(dev) == {"train": 0, "validation": 500, "test": 0}
    assert dev["validation"][0]["id"] == "dev_0#1"
    assert dev["validation"][0]["dialogue"].startswith("#Person1#: ")
    test = data.load("dialogsum", REALDATA / "dialogsum.test.jsonl")["test"]
    assert len(test) == 500
    assert {len(refs) for refs in test["references"]} == {3}
    assert all(row["summary"] == row["references"][0] for row in test)


@realdata
@pytest.mark.realdata
def test_realdata_samsum_examples():
    dsd = data.load("samsum", REALDATA / "samsum.examples.json")
    assert data.sizes(dsd) == {"train": 5, "validation": 0, "test": 0}
    raw = json.loads((REALDATA / "samsum.examples.json").read_text(encoding="utf-8"))
    for row, rec in zip(dsd["train"], raw, strict=True):
        assert row["id"] == f"{rec['id']}#1"
        assert (
            row["dialogue"].count("\n") == rec["dialogue"].strip().count("\r\n")
            and "\r" not in row["dialogue"]
        )


def realdata_twcs(path: Path, conversations: list[dict]) -> Path:
    """A twcs.csv with made-up texts for the tweets of `conversations` (the real texts are not here).

    Times follow the annotation order; customer and agent alternate, starting with the customer."""
    tweets = []
    for conv in conversations:
        for minute, item in enumerate(conv["tweet_ids_sentence_offset"]):
            tid = item["tweet_id"]
            created = f"Tue Oct 31 {10 + minute // 60:02d}:{minute % 60:02d}:00 +0000 2017"
            tweets.append((tid, minute % 2 == 0, created, f"@Brand tweet {tid} https://t.co/{tid}"))
    return write_twcs(path, tweets)


@realdata
@pytest.mark.realdata
def test_realdata_tweetsumm_annotations(tmp_path):
    path = tmp_path / "final_valid_tweetsum.jsonl"
    shutil.copyfile(REALDATA / "tweetsumm.valid.annotations.jsonl", path)
    conversations = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    # Every tweet present: the document's 356 validation rows (two annotations have no abstractive summary).
    realdata_twcs(tmp_path / "twcs.csv", conversations)
    with pytest.warns(UserWarning) as record:
        assert data.sizes(data.load("tweetsumm", path)) == {
            "train": 0,
            "validation": 356,
            "test": 0,
        }
    assert messages(record) == [
        f"2 rows dropped for an empty dialogue or summary from {path} (validation)"
    ]

    # Only three conversations' tweets present: the other 107 are skipped and counted once.
    kept = conversations[:3]
    realdata_twcs(tmp_path / "twcs.csv", kept)
    with pytest.warns(UserWarning) as record:
        rows = data.load("tweetsumm", path)["validation"]
    expected = [
        " ".join(" ".join(a["abstractive"]).split())
        for c in kept
        for a in c["annotations"]
        if a["abstractive"]
    ]
    assert rows["summary"] == expected
    ids = [item["tweet_id"] for item in kept[0]["tweet_ids_sentence_offset"]]
    assert rows[0]["dialogue"] == "\n".join(
        f"{'Customer' if i % 2 == 0 else 'Agent'}: tweet {t}" for i, t in enumerate(ids)
    )
    assert rows[0]["id"] == f"{kept[0]['conversation_id']}#1"
    skipped = [m for m in messages(record) if m.startswith("skipped")]
    assert len(skipped) == 1 and skipped[0].startswith(
        f"skipped {len(conversations) - 3} conversations"
    )
