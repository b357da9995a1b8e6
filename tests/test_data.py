"""Tests of tutorlib.data: every released format, the record shape, cleaning, dropping and errors."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import datasets
import pytest

from tutorlib import data

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
BUNDLED = Path(__file__).resolve().parents[1] / "data"
realdata = pytest.mark.skipif(not REALDATA.exists(), reason=f"{REALDATA} not present")


# ---------------------------------------------------------------- writers of tiny released files


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def dialogsum_folder(folder: Path) -> Path:
    write_jsonl(
        folder / "dialogsum.train.jsonl",
        [
            {
                "fname": "train_0",
                "dialogue": "#Person1#: Hi.\n#Person2#: Hello.",
                "summary": "They greet.",
                "topic": "hi",
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
        [{"fname": "dev_0", "dialogue": "#Person1#: Late?\n#Person2#: No.", "summary": "Not late."}],
    )
    write_jsonl(
        folder / "dialogsum.test.jsonl",
        [
            {
                "fname": "test_0",
                "dialogue": "#Person1#: Rain?\n#Person2#: Yes, take an umbrella.",
                "summary1": "It rains.",
                "summary2": "#Person2# advises an umbrella.",
                "summary3": "Rain is expected.",
                "topic1": "weather",
            }
        ],
    )
    return folder


def samsum_folder(folder: Path) -> Path:
    write_json(
        folder / "train.json",
        [
            {"id": "1", "summary": "Amy asks Bob about lunch. ", "dialogue": "Amy: Lunch?\r\nBob: Sure!\r\n"},
            {"id": "2", "summary": "Nothing.", "dialogue": ""},
        ],
    )
    write_json(
        folder / "val.json", [{"id": "3", "summary": "Cy is late.", "dialogue": "Cy: Late\r\nDee: ok"}]
    )
    write_json(
        folder / "test.json", [{"id": "4", "summary": "Ed says hi.", "dialogue": "Ed: hi\r\nFay: hey"}]
    )
    return folder


def processed_tweetsumm(dialog_id: str, summaries: list) -> dict:
    turns = [
        {"is_agent": False, "sentences": ["@AppleSupport my phone", "won't charge https://t.co/abc"]},
        {"is_agent": True, "sentences": ["@115820 Sorry to hear that.", "See www.apple.com/help"]},
        {"is_agent": True, "sentences": ["https://t.co/only-a-link"]},
    ]
    return {
        "dialog": {"dialog_id": dialog_id, "turns": turns},
        "summaries": {"extractive_summaries": [], "abstractive_summaries": summaries},
    }


def tweetsumm_folder(folder: Path) -> Path:
    refs = [["Customer cannot charge.", "Agent sends a link."], ["", ""], ["Phone fails.", "Agent helps."]]
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


def write_twcs(path: Path, tweets: list[tuple[int, bool, str, str]]) -> Path:
    """tweets: (tweet_id, inbound, created_at, text)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TWCS_HEADER)
        writer.writerow([1, "someone", "True", "Mon Oct 30 10:00:00 +0000 2017", "unrelated tweet", "", ""])
        for tweet_id, inbound, created_at, text in tweets:
            writer.writerow([tweet_id, "x", str(inbound), created_at, text, "", ""])
    return path


def annotation(conversation_id: str, tweet_ids: list[int], abstractive: list) -> dict:
    return {
        "conversation_id": conversation_id,
        "tweet_ids_sentence_offset": [{"tweet_id": t, "sentence_offsets": ["[0, 10]"]} for t in tweet_ids],
        "annotations": [{"extractive": [], "abstractive": a} for a in abstractive],
    }


def annotated_tweetsumm(folder: Path, name: str = "final_valid_tweetsum.jsonl") -> Path:
    # Ids deliberately out of time order: the order must come from created_at.
    write_twcs(
        folder / "twcs.csv",
        [
            (30, True, "Tue Oct 31 10:00:00 +0000 2017", "@AmazonHelp where is my\nparcel? https://t.co/x1"),
            (10, False, "Tue Oct 31 10:05:00 +0000 2017", "@115712 Hi! Please DM us &amp; we'll check."),
            (20, True, "Tue Oct 31 10:09:00 +0000 2017", "Thanks @AmazonHelp"),
        ],
    )
    return write_jsonl(
        folder / name,
        [
            annotation("conv-a", [20, 10, 30], [["Customer lost a parcel.", "Agent asks for a DM."], None]),
            annotation("conv-missing", [30, 999], [["Unused.", "Unused."]]),
        ],
    )


def assert_shape(dsd: datasets.DatasetDict) -> None:
    assert list(dsd) == list(data.SPLITS)
    for ds in dsd.values():
        assert ds.features == data.FEATURES


def dropped_counts(caplog) -> list[int]:
    return [int(m[1]) for r in caplog.records if (m := re.match(r"dropped (\d+) rows", r.getMessage()))]


# ---------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("@AppleSupport my phone   won't charge", "my phone won't charge"),
        ("@115820 Sorry, DM us https://t.co/AbC123 now", "Sorry, DM us now"),
        ("see http://example.com/a?b=1 or www.help.com/x or t.co/zz ok", "see or or ok"),
        ("Tom &amp; Jerry\n\tline two", "Tom & Jerry line two"),
        ("mail me at jo@example.com", "mail me at jo@example.com"),
        ("https://t.co/only", ""),
    ],
)
def test_clean_tweet(raw, clean):
    assert data.clean_tweet(raw) == clean


# ---------------------------------------------------------------- each released format


def test_dialogsum_folder_rows_and_references(tmp_path):
    dsd = data.load("DialogSum", dialogsum_folder(tmp_path))
    assert_shape(dsd)
    assert data.sizes(dsd) == {"train": 2, "validation": 1, "test": 1}
    train = dsd["train"][0]
    assert train["id"] == "train_0#1"
    assert train["dialogue"] == "#Person1#: Hi.\n#Person2#: Hello."
    assert train["summary"] == "They greet." and train["references"] == ["They greet."]
    test = dsd["test"][0]
    assert test["id"] == "test_0"
    assert test["summary"] == "It rains."
    assert test["references"] == ["It rains.", "#Person2# advises an umbrella.", "Rain is expected."]


def test_samsum_folder_line_ends_and_empty_dialogue_dropped(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tutorlib.data")
    dsd = data.load("samsum", samsum_folder(tmp_path))
    assert_shape(dsd)
    assert data.sizes(dsd) == {"train": 1, "validation": 1, "test": 1}
    row = dsd["train"][0]
    assert row["dialogue"] == "Amy: Lunch?\nBob: Sure!"
    assert row["summary"] == "Amy asks Bob about lunch."
    assert row["id"] == "1#1"
    messages = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert messages == [f"dropped 1 rows with an empty dialogue or summary from {tmp_path / 'train.json'}"]


def test_tweetsumm_processed_one_row_per_reference_and_cleaning(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tutorlib.data")
    dsd = data.load("tweetsumm", tweetsumm_folder(tmp_path))
    assert_shape(dsd)
    assert data.sizes(dsd) == {"train": 2, "validation": 1, "test": 1}
    train = dsd["train"]
    assert train["id"] == ["t1#1", "t1#3"]  # the empty second summary is dropped
    assert train["summary"] == ["Customer cannot charge. Agent sends a link.", "Phone fails. Agent helps."]
    assert train[0]["references"] == train["summary"]
    # The agent turn that was only a link disappears; handles and links are gone.
    assert train[0]["dialogue"] == "Customer: my phone won't charge\nAgent: Sorry to hear that. See"
    test = dsd["test"][0]
    assert test["id"] == "s1"
    assert test["summary"] == "Phone fails. Agent helps."
    assert test["references"] == ["Phone fails. Agent helps.", "Customer cannot charge. Agent sends a link."]
    assert dropped_counts(caplog) == [1]


def test_tweetsumm_annotations_joined_to_twcs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tutorlib.data")
    path = annotated_tweetsumm(tmp_path)
    dsd = data.load("tweetsumm", path)
    assert_shape(dsd)
    assert data.sizes(dsd) == {"train": 0, "validation": 1, "test": 0}
    row = dsd["validation"][0]
    assert row["id"] == "conv-a#1"
    assert row["dialogue"] == (
        "Customer: where is my parcel?\nAgent: Hi! Please DM us & we'll check.\nCustomer: Thanks"
    )
    assert row["summary"] == "Customer lost a parcel. Agent asks for a DM."
    assert dropped_counts(caplog) == [1]  # the annotation whose abstractive summary is null
    skipped = [
        r for r in caplog.records if r.levelno == logging.WARNING and "skipped 1 conversations" in r.message
    ]
    assert len(skipped) == 1 and "conv-missing" in skipped[0].message


def test_tweetsumm_annotation_folder_uses_one_csv_for_all_splits(tmp_path):
    annotated_tweetsumm(tmp_path, "final_valid_tweetsum.jsonl")
    write_jsonl(
        tmp_path / "final_train_tweetsum.jsonl", [annotation("tr", [10, 30], [["A.", "B."], ["C.", "D."]])]
    )
    write_jsonl(
        tmp_path / "final_test_tweetsum.jsonl", [annotation("te", [30, 20], [["E.", "F."], ["G.", "H."]])]
    )
    dsd = data.load("tweetsumm", tmp_path)
    assert data.sizes(dsd) == {"train": 2, "validation": 1, "test": 1}
    assert (
        dsd["train"]["dialogue"][0] == "Customer: where is my parcel?\nAgent: Hi! Please DM us & we'll check."
    )
    assert dsd["test"][0]["references"] == ["E. F.", "G. H."]


@pytest.mark.parametrize(
    ("filename", "split"),
    [
        ("dialogsum.dev.jsonl", "validation"),
        ("my_val.jsonl", "validation"),
        ("validation.jsonl", "validation"),
        ("dialogsum.test.jsonl", "test"),
        ("train.jsonl", "train"),
        ("anything.jsonl", "train"),
    ],
)
def test_single_file_split_from_name(tmp_path, filename, split):
    path = write_jsonl(tmp_path / filename, [{"fname": "a", "dialogue": "#Person1#: x", "summary": "y"}])
    dsd = data.load("dialogsum", path)
    assert_shape(dsd)
    assert {s: n for s, n in data.sizes(dsd).items() if n} == {split: 1}


def test_single_file_explicit_split_and_string_path(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"fname": "a", "dialogue": "#Person1#: x", "summary": "y"}])
    dsd = data.load("dialogsum", str(path), split="dev")
    assert data.sizes(dsd) == {"train": 0, "validation": 1, "test": 0}
    assert dsd["validation"][0]["id"] == "a#1"


def test_single_csv_file(tmp_path):
    path = tmp_path / "test.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["id", "dialogue", "summary"], ["7", "A: hi\r\nB: yo", "They greet."]])
    dsd = data.load("samsum", path)
    assert dsd["test"][0] == {
        "id": "7",
        "dialogue": "A: hi\nB: yo",
        "summary": "They greet.",
        "references": ["They greet."],
    }


# ---------------------------------------------------------------- hub copies (normalization only, offline)


def test_normalize_groups_hub_test_rows_and_renames_splits(caplog):
    dialogue = "#Person1#: Rain?\n#Person2#: Yes."
    raw = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"id": ["train_0"], "dialogue": ["#Person1#: Hi."], "summary": ["Hi."], "topic": ["t"]}
            ),
            "val": datasets.Dataset.from_dict(
                {"id": ["dev_0"], "dialogue": ["#Person1#: A"], "summary": ["B"]}
            ),
            "test": datasets.Dataset.from_dict(
                {
                    "id": ["test_0_1", "test_0_2", "test_0_3", "test_1_1", "e_1", "e_2"],
                    "dialogue": [dialogue, dialogue, dialogue, "#Person1#: Bye.", "", ""],
                    "summary": ["It rains.", "Umbrella.", "Wet.", "Bye.", "x", "y"],
                    "topic": ["w", "w", "w", "b", "e", "e"],
                }
            ),
            "holdout": datasets.Dataset.from_dict({"id": ["h"], "dialogue": ["x"], "summary": ["y"]}),
        }
    )
    caplog.set_level(logging.INFO, logger="tutorlib.data")
    dsd = data.normalize(raw, "dialogsum", origin="knkarthick/dialogsum")
    assert_shape(dsd)
    assert data.sizes(dsd) == {"train": 1, "validation": 1, "test": 2}
    assert dsd["test"][0]["references"] == ["It rains.", "Umbrella.", "Wet."]
    assert dsd["test"][0]["summary"] == "It rains."
    assert dsd["test"][1]["references"] == ["Bye."]
    assert dropped_counts(caplog) == [2]  # empty dialogues are counted one by one, not merged


def test_normalize_tweetsumm_conversation_turns():
    raw = {
        "val": datasets.Dataset.from_list(
            [
                {
                    "conversation_id": "c1",
                    "conversation": [
                        {"role": "user", "content": "@Delta my bag is lost https://t.co/q"},
                        {"role": "assistant", "content": "@1234 Sorry! DM us."},
                    ],
                    "abstractive_summary": "Customer lost a bag. Agent asks for a DM.",
                }
            ]
        )
    }
    dsd = data.normalize(raw, "tweetsumm")
    row = dsd["validation"][0]
    assert row["dialogue"] == "Customer: my bag is lost\nAgent: Sorry! DM us."
    assert row["id"] == "c1#1"


def test_hub_id_goes_through_load_dataset_and_normalize(monkeypatch):
    calls = []
    fake = datasets.DatasetDict(
        {"dev": datasets.Dataset.from_dict({"id": ["1"], "dialogue": ["A: hi\r\nB: yo"], "summary": ["Hi."]})}
    )
    monkeypatch.setattr(data.datasets, "load_dataset", lambda hub_id: calls.append(hub_id) or fake)
    dsd = data.load("samsum", "someone/samsum-copy")
    assert calls == ["someone/samsum-copy"]
    assert dsd["validation"][0]["dialogue"] == "A: hi\nB: yo"


def test_profile_picks_the_default_source(monkeypatch, tmp_path):
    import torch

    from tutorlib.profile import Profile

    calls = []
    monkeypatch.setattr(data.datasets, "load_dataset", lambda hub_id: calls.append(hub_id) or {})
    data.load("samsum", profile=Profile(name="full", device="cpu", dtype=torch.float32))
    assert calls == [data.HUB_IDS["samsum"]] == ["knkarthick/samsum"]

    monkeypatch.setenv("TUTORLIB_HOME", str(tmp_path))
    (tmp_path / "data" / "samsum").mkdir(parents=True)
    samsum_folder(tmp_path / "data" / "samsum")
    dsd = data.load("samsum", profile=Profile(name="smoke", device="cpu", dtype=torch.float32))
    assert data.sizes(dsd) == {"train": 1, "validation": 1, "test": 1}


# ---------------------------------------------------------------- errors


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="tweetsumm, dialogsum, samsum"):
        data.load("cnn_dailymail", "whatever")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.jsonl"))):
        data.load("dialogsum", tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        data.load("samsum", "nope.json")
    (tmp_path / "dialogsum.train.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match=re.escape("dialogsum.dev.jsonl")):
        data.load("dialogsum", tmp_path)


def test_missing_twcs_csv_is_named(tmp_path):
    path = annotated_tweetsumm(tmp_path)
    (tmp_path / "twcs.csv").unlink()
    with pytest.raises(FileNotFoundError, match="twcs.csv"):
        data.load("tweetsumm", path)


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({"fname": "b", "summary": "s"}), "line 2: missing field 'dialogue'"),
        (json.dumps({"fname": "b", "dialogue": 5, "summary": "s"}), "line 2: field 'dialogue' should be str"),
        (json.dumps({"fname": "b", "dialogue": "x"}), "line 2: missing field 'summary'"),
        (json.dumps(["a", "list"]), "line 2: expected an object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, second_line, message):
    path = tmp_path / "dialogsum.dev.jsonl"
    path.write_text(
        json.dumps({"fname": "a", "dialogue": "#Person1#: x", "summary": "y"}) + "\n" + second_line + "\n"
    )
    with pytest.raises(ValueError, match=re.escape(f"{path}, {message}")):
        data.load("dialogsum", path)


def test_malformed_json_list_names_record_index(tmp_path):
    path = write_json(tmp_path / "train.json", [{"id": "1", "summary": "s", "dialogue": "A: x"}, {"id": "2"}])
    with pytest.raises(ValueError, match=re.escape(f"{path}, record index 1: missing field 'dialogue'")):
        data.load("samsum", path)
    path.write_text('[{"id": "1",\n "summary": }]')
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: not valid JSON")):
        data.load("samsum", path)


def test_malformed_tweetsumm_records_name_file_and_line(tmp_path):
    bad_turn = processed_tweetsumm("t2", [["a", "b"]])
    bad_turn["dialog"]["turns"][0]["is_agent"] = "yes"
    path = write_jsonl(tmp_path / "train.jsonl", [processed_tweetsumm("t1", [["a", "b"]]), bad_turn])
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: turn field 'is_agent'")):
        data.load("tweetsumm", path)
    ann = write_jsonl(
        tmp_path / "final_test_tweetsum.jsonl", [annotation("c", [1], [["a", "b"]]), {"conversation_id": "d"}]
    )
    with pytest.raises(
        ValueError, match=re.escape(f"{ann}, line 2: missing field 'tweet_ids_sentence_offset'")
    ):
        data.load("tweetsumm", ann)


def test_malformed_twcs_row_names_csv_line(tmp_path):
    path = annotated_tweetsumm(tmp_path)
    write_twcs(tmp_path / "twcs.csv", [(30, "maybe", "Tue Oct 31 10:00:00 +0000 2017", "hi")])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'twcs.csv'}, line 3: 'inbound'")):
        data.load("tweetsumm", path)
    write_twcs(tmp_path / "twcs.csv", [(30, True, "yesterday", "hi")])
    with pytest.raises(ValueError, match="line 3: 'created_at'"):
        data.load("tweetsumm", path)


def test_split_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="only applies to a single-file source"):
        data.load("samsum", samsum_folder(tmp_path), split="test")
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        data.load("samsum", tmp_path / "train.json", split="holdout")
    with pytest.raises(ValueError, match="neither an existing path nor a hub dataset id"):
        data.load("samsum", "not a hub id")


# ---------------------------------------------------------------- helpers


def test_sizes_and_take(tmp_path):
    dsd = data.load("tweetsumm", tweetsumm_folder(tmp_path))
    assert data.take(dsd["train"], 1)["id"] == ["t1#1"]
    assert len(data.take(dsd["train"], 50)) == 2
    assert data.take(dsd["train"], None) is dsd["train"]
    with pytest.raises(ValueError):
        data.take(dsd["train"], -1)


# ---------------------------------------------------------------- bundled samples


@pytest.mark.parametrize("name", data.DATASETS)
def test_bundled_samples_load(name, caplog):
    folder = BUNDLED / name
    if not folder.is_dir() or not any(folder.iterdir()):
        pytest.skip(f"bundled samples not written yet: {folder}")
    caplog.set_level(logging.INFO, logger="tutorlib.data")
    dsd = data.load(name, folder)
    assert_shape(dsd)
    assert all(n > 0 for n in data.sizes(dsd).values())
    test = dsd["test"]
    assert all(row["summary"] == row["references"][0] for row in test)
    assert len(set(test["id"])) == len(test)  # one row per dialogue
    assert all(row["summary"] in row["references"] for row in dsd["train"])
    for row in dsd["train"]:
        assert row["dialogue"] and "\r" not in row["dialogue"]
    if name == "tweetsumm":
        for text in [*dsd["train"]["dialogue"], *test["dialogue"]]:
            assert all(line.startswith(("Customer: ", "Agent: ")) for line in text.split("\n"))
            assert not re.search(r"https?://|(?<!\w)@\w", text)
        assert dropped_counts(caplog) == [1]  # the sample train dialogue with an empty summary pair


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
        assert "\r" not in row["dialogue"]
        assert row["dialogue"].count("\n") == rec["dialogue"].strip().count("\r\n")


def realdata_twcs(path: Path, conversations: list[dict]) -> Path:
    """A twcs.csv holding made-up texts for the tweets of `conversations` (the real texts are not here).

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
def test_realdata_tweetsumm_annotations(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tutorlib.data")
    path = tmp_path / "final_valid_tweetsum.jsonl"
    shutil.copyfile(REALDATA / "tweetsumm.valid.annotations.jsonl", path)
    conversations = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    # Every tweet present: the document's 356 validation rows (two annotations have no abstractive summary).
    realdata_twcs(tmp_path / "twcs.csv", conversations)
    assert data.sizes(data.load("tweetsumm", path)) == {"train": 0, "validation": 356, "test": 0}
    assert dropped_counts(caplog) == [2]

    # Only three conversations' tweets present: the other 107 are skipped and counted once.
    caplog.clear()
    kept = conversations[:3]
    realdata_twcs(tmp_path / "twcs.csv", kept)
    rows = data.load("tweetsumm", path)["validation"]
    expected = [
        " ".join(" ".join(a["abstractive"]).split())
        for c in kept
        for a in c["annotations"]
        if a["abstractive"]
    ]
    assert rows["summary"] == expected
    first = kept[0]
    ids = [item["tweet_id"] for item in first["tweet_ids_sentence_offset"]]
    lines = [f"{'Customer' if i % 2 == 0 else 'Agent'}: tweet {tid}" for i, tid in enumerate(ids)]
    assert rows[0]["dialogue"] == "\n".join(lines)
    assert rows[0]["id"] == f"{first['conversation_id']}#1"
    skipped = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped {len(conversations) - 3} conversations")
