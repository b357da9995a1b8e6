"""Loading TWEETSUMM, DialogSum and SAMSum into one record shape.

`load(name, source)` returns a `datasets.DatasetDict` with the splits `train`, `validation` and `test`
and the columns `id`, `dialogue` (turns joined by newlines, each `Speaker: text`), `summary` and
`references` (every reference summary of that dialogue). Training splits hold one row per reference
summary (ids `<dialog_id>#<k>`, k counting the released references from 1) so a model sees each
human summary; the test split holds one row per dialogue, its first reference as `summary`, so
metrics can score against all references at once. The source is a hub id, a folder of the released
files, or one released file; by default the profile decides (hub under `full`, `data/<name>/` under
`smoke`).

TWEETSUMM decisions. Tweets are cleaned by `clean_tweet` (links, @handles, HTML entities, extra
whitespace) and speakers written `Customer` / `Agent`; a turn left empty by cleaning is skipped.
From the authors' annotation files plus the Kaggle `twcs.csv`, turns are ordered by `created_at`,
ties keeping the annotation's order (Twitter ids in that CSV are not chronological), and a
conversation with any tweet missing from the CSV is skipped and counted in one warning per file
rather than loaded with holes. The hub copy in `HUB_IDS` was chosen from its dataset card without
being downloaded (no network here) and keeps one summary per dialogue; pass `source=` to use another
copy, or the authors' files for all references (the document's 2629 / 356 / 110 rows).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import datasets

from tutorlib import paths

if TYPE_CHECKING:  # importing the profile pulls in torch, which data loading does not need
    from tutorlib.profile import Profile

log = logging.getLogger(__name__)

DATASETS = ("tweetsumm", "dialogsum", "samsum")
SPLITS = ("train", "validation", "test")

# Default hub copies under the `full` profile. The original `samsum` is a dataset script, which
# datasets >= 4 refuses to run, so a plain data-file mirror stands in for it.
HUB_IDS: Mapping[str, str] = MappingProxyType(
    {
        "tweetsumm": "shivanandmn/tweet-sum-filtered",  # unverified offline; override with source=
        "dialogsum": "knkarthick/dialogsum",
        "samsum": "knkarthick/samsum",
    }
)

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "dialogue": datasets.Value("string"),
        "summary": datasets.Value("string"),
        "references": datasets.List(datasets.Value("string")),
    }
)

_SPLIT_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "train": "train",
        "validation": "validation",
        "valid": "validation",
        "val": "validation",
        "dev": "validation",
        "test": "test",
    }
)

# The file names each dataset is released under, per split.
_RELEASED: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "dialogsum": {
            "train": "dialogsum.train.jsonl",
            "validation": "dialogsum.dev.jsonl",
            "test": "dialogsum.test.jsonl",
        },
        "samsum": {"train": "train.json", "validation": "val.json", "test": "test.json"},
        "tweetsumm": {"train": "train.jsonl", "validation": "valid.jsonl", "test": "test.jsonl"},
    }
)
_ANNOTATIONS: Mapping[str, str] = MappingProxyType(
    {
        "train": "final_train_tweetsum.jsonl",
        "validation": "final_valid_tweetsum.jsonl",
        "test": "final_test_tweetsum.jsonl",
    }
)
TWCS_CSV = "twcs.csv"
_TWCS_COLUMNS = ("tweet_id", "inbound", "created_at", "text")
_TWCS_TIME = "%a %b %d %H:%M:%S %z %Y"  # e.g. "Tue Oct 31 22:10:47 +0000 2017"

_URL = re.compile(r"(?:https?://|www\.|\bt\.co/)\S*", re.IGNORECASE)
_HANDLE = re.compile(r"(?<![\w@])@\w+")  # not the middle of an e-mail address
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?")
_NUMBERED_SUMMARY = re.compile(r"summary(\d+)")
_AGENT_ROLES = frozenset({"agent", "assistant", "company", "support", "brand"})
_CUSTOMER_ROLES = frozenset({"customer", "user", "client"})


class _Dialog(NamedTuple):
    """One dialogue with its references in released order ("" where a reference is empty)."""

    id: str
    dialogue: str
    references: list[str]


class _Tweet(NamedTuple):
    is_agent: bool
    created_at: datetime
    text: str


class _BadRecord(ValueError):
    """A record that does not have the expected shape; the caller adds file and line."""


def clean_tweet(text: str) -> str:
    """Remove links (http/https/www, t.co) and @handles (also numeric ones like @115820), decode HTML
    entities (`&amp;`) and collapse all whitespace, newlines included, to single spaces."""
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = _HANDLE.sub(" ", text)
    return " ".join(text.split())


def sizes(dsd: datasets.DatasetDict) -> dict[str, int]:
    """Rows per split, e.g. `{"train": 2629, "validation": 356, "test": 110}`."""
    return {split: len(ds) for split, ds in dsd.items()}


def take(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """The first `n` rows of a split (all of them when `n` is None), e.g. `take(dsd["test"], profile.examples("test"))`."""
    if n is None:
        return ds
    if n < 0:
        raise ValueError(f"n must be >= 0 or None, got {n}")
    return ds.select(range(min(n, len(ds))))


def load(
    name: str,
    source: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    profile: Profile | None = None,
) -> datasets.DatasetDict:
    """Load `tweetsumm`, `dialogsum` or `samsum` as a DatasetDict with splits train / validation / test.

    `source` is a hub id, a folder of the released files, or a single released file (which fills
    `split`, else the split named in the file name, else `train`; the other splits come back empty).
    Without a source the profile decides: the hub copy in `HUB_IDS` under `full`, the bundled
    samples in `data/<name>/` under `smoke`.
    """
    key = _dataset_name(name)
    wanted = _canonical_split(split) if split is not None else None
    if source is None:
        if profile is None:
            from tutorlib.profile import detect

            profile = detect()
        source = HUB_IDS[key] if profile.name == "full" else paths.data_dir() / key
    where = _resolve(source)
    if isinstance(where, str):
        _no_split(wanted, where)
        log.info("loading %s from the Hugging Face hub as %r", key, where)
        return normalize(datasets.load_dataset(where), key, origin=where)
    if where.is_dir():
        _no_split(wanted, where)
        return _complete(_load_folder(key, where))
    return _complete(_load_file(key, where, wanted or _split_from_name(where.name)))


def normalize(raw: Mapping[str, datasets.Dataset], name: str, *, origin: str = "hub") -> datasets.DatasetDict:
    """Turn a hub copy (any `Mapping` of split name -> Dataset) into the course's record shape.

    Split names `val` / `valid` / `dev` become `validation`, other unknown splits are ignored; the
    columns may be `id`/`fname`/`conversation_id`, `dialogue`/`dialog`/`conversation` (text, or a list
    of `{role, content}` turns) and `summary`/`summary1..N`/`abstractive_summary`. Rows with the same
    dialogue text are merged first, so a copy that stores one reference per row (hub DialogSum
    test) keeps all references of each dialogue.
    """
    key = _dataset_name(name)
    out: dict[str, datasets.Dataset] = {}
    for split_name, ds in raw.items():
        split = _SPLIT_ALIASES.get(split_name.lower())
        if split is None:
            log.info("ignoring split %r of %s: not one of train / validation / test", split_name, origin)
            continue
        if split in out:
            raise ValueError(f"{origin} has two splits that both mean {split!r}; pass one of them as a file")
        label = f"{origin} [{split_name}]"
        dialogs = _parse_all(((f"row {i}", row) for i, row in enumerate(ds)), label, key == "tweetsumm")
        out[split] = _build_split(_merge_same_dialogue(dialogs), split, label)
    return _complete(out)


# ---------------------------------------------------------------- record shape and splits


def _record(id_: str, dialogue: str, summary: str, references: list[str]) -> dict[str, Any]:
    """The one row shape every loader produces (matches FEATURES)."""
    return {"id": id_, "dialogue": dialogue, "summary": summary, "references": references}


def _build_split(dialogs: Iterable[_Dialog], split: str, origin: str) -> datasets.Dataset:
    """Rows of one split: one per reference in train/validation, one per dialogue in test."""
    rows: list[dict[str, Any]] = []
    dropped = 0
    for d in dialogs:
        refs = [r for r in d.references if r]
        if split == "test":
            if d.dialogue and refs:
                rows.append(_record(d.id, d.dialogue, refs[0], refs))
            else:
                dropped += 1
            continue
        for k, ref in enumerate(d.references, start=1):
            if d.dialogue and ref:
                rows.append(_record(f"{d.id}#{k}", d.dialogue, ref, refs))
            else:
                dropped += 1
        dropped += not d.references  # a dialogue released without any summary
    if dropped:
        log.info("dropped %d rows with an empty dialogue or summary from %s", dropped, origin)
    return _to_dataset(rows)


def _to_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    # Column-wise so that an empty split still gets the full schema.
    return datasets.Dataset.from_dict({col: [r[col] for r in rows] for col in FEATURES}, features=FEATURES)


def _complete(splits: Mapping[str, datasets.Dataset]) -> datasets.DatasetDict:
    return datasets.DatasetDict({s: splits[s] if s in splits else _to_dataset([]) for s in SPLITS})


def _merge_same_dialogue(dialogs: Iterable[_Dialog]) -> list[_Dialog]:
    """One dialogue per distinct text, keeping the first id; empty dialogues stay apart to be counted."""
    merged: dict[str, _Dialog] = {}
    out: list[_Dialog] = []
    for d in dialogs:
        first = merged.get(d.dialogue) if d.dialogue else None
        if first is None:
            first = merged[d.dialogue] = _Dialog(d.id, d.dialogue, [])
            out.append(first)
        first.references.extend(r for r in d.references if r not in first.references)
    return out


# ---------------------------------------------------------------- names, sources, files


def _dataset_name(name: str) -> str:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    return key


def _canonical_split(split: str) -> str:
    key = _SPLIT_ALIASES.get(split.strip().lower())
    if key is None:
        raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(_SPLIT_ALIASES)}")
    return key


def _split_from_name(filename: str) -> str:
    for token in re.split(r"[^a-z0-9]+", filename.lower()):
        if token in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[token]
    return "train"


def _no_split(split: str | None, where: str | Path) -> None:
    if split is not None:
        raise ValueError(f"split={split!r} only applies to a single-file source; {where} holds all splits")


def _resolve(source: str | os.PathLike) -> Path | str:
    """An existing local path, or a hub id (a string that is not a path and looks like `owner/name`)."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = os.fspath(source)
    looks_like_path = (
        not isinstance(source, str)
        or path.suffix.lower() in (".json", ".jsonl", ".csv")
        or text.startswith(("/", ".", "~"))
        or "\\" in text
        or text.count("/") > 1
    )
    if looks_like_path:
        raise FileNotFoundError(f"no such file or folder: {path}")
    if not _HUB_ID.fullmatch(text):
        raise ValueError(f"{text!r} is neither an existing path nor a hub dataset id like 'owner/name'")
    return text


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs: 'line N' for JSON lines and CSV, 'record index N' for a JSON list."""
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8", newline="" if suffix == ".csv" else None) as fh:
        if suffix == ".json":
            try:
                data = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
            yield from ((f"record index {i}", rec) for i, rec in enumerate(data))
        elif suffix == ".csv":
            reader = csv.DictReader(fh)
            for row in reader:
                yield f"line {reader.line_num}", row
        else:  # .jsonl and anything else: one JSON object per line
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{path}, line {n}: not valid JSON ({err.msg}); expected one object per line"
                    ) from None
                yield f"line {n}", rec


def _parse_all(records: Iterable[tuple[str, Any]], origin: str | Path, tweets: bool) -> list[_Dialog]:
    """Plain records (DialogSum, SAMSum, hub copies) to dialogues; a bad one names file and line."""
    dialogs = []
    for where, rec in records:
        try:
            dialogs.append(_plain_dialog(_as_object(rec), tweets=tweets))
        except _BadRecord as err:
            raise ValueError(f"{origin}, {where}: {err}") from None
    return dialogs


def _load_folder(key: str, folder: Path) -> dict[str, datasets.Dataset]:
    if key == "tweetsumm" and any((folder / f).exists() for f in _ANNOTATIONS.values()):
        return _annotated_splits({s: _existing(folder / f) for s, f in _ANNOTATIONS.items()})
    files = {split: _existing(folder / f) for split, f in _RELEASED[key].items()}
    return {split: _load_file(key, path, split)[split] for split, path in files.items()}


def _load_file(key: str, path: Path, split: str) -> dict[str, datasets.Dataset]:
    _existing(path)
    records = list(_records(path))
    if key == "tweetsumm":
        first = next((rec for _, rec in records if isinstance(rec, dict)), {})
        if "conversation_id" in first:  # the authors' annotations: texts come from twcs.csv
            return _annotated_splits({split: path})
        return {split: _build_split(_processed_tweetsumm(records, path), split, str(path))}
    return {split: _build_split(_parse_all(records, path, tweets=False), split, str(path))}


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    return path


# ---------------------------------------------------------------- record parsers


def _as_object(rec: Any) -> Mapping[str, Any]:
    if not isinstance(rec, Mapping):
        raise _BadRecord(f"expected an object with named fields, got {type(rec).__name__}")
    return rec


def _get(rec: Mapping[str, Any], keys: tuple[str, ...], types: tuple[type, ...], what: str) -> Any:
    """The first of `keys` present in `rec`, type-checked; missing or mistyped -> _BadRecord."""
    for k in keys:
        if k in rec:
            if not isinstance(rec[k], types) or isinstance(rec[k], bool):
                expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise _BadRecord(f"field {k!r} should be {expected} ({what}), got {type(rec[k]).__name__}")
            return rec[k]
    raise _BadRecord(f"missing field {' / '.join(map(repr, keys))} ({what})")


def _lines(text: str) -> str:
    """Turns one per line, without the `\\r` of SAMSum's Windows line ends or blank lines."""
    return "\n".join(line.strip() for line in re.split(r"\r\n|\r|\n", text) if line.strip())


def _speaker_line(is_agent: bool, text: str) -> str:
    cleaned = clean_tweet(text)
    return f"{'Agent' if is_agent else 'Customer'}: {cleaned}" if cleaned else ""


def _join_turns(lines: Iterable[str]) -> str:
    return "\n".join(line for line in lines if line)


def _summary_text(value: Any, what: str) -> str:
    """One reference: a string, a list of sentences (joined by a space) or null (empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list) and all(isinstance(p, str) or p is None for p in value):
        return " ".join(" ".join(p or "" for p in value).split())
    raise _BadRecord(f"{what} should be a string or a list of strings, got {type(value).__name__}")


def _plain_dialog(rec: Mapping[str, Any], *, tweets: bool) -> _Dialog:
    id_ = _get(rec, ("id", "fname", "conversation_id", "dialog_id"), (str, int), "the dialogue id")
    value = _get(rec, ("dialogue", "dialog", "conversation"), (str, list, type(None)), "the dialogue")
    if isinstance(value, list):
        dialogue = _join_turns(_hub_turn(turn, tweets) for turn in value)
    elif tweets:
        dialogue = _join_turns(clean_tweet(line) for line in _lines(value or "").split("\n"))
    else:
        dialogue = _lines(value or "")
    numbered = sorted((int(m[1]), k) for k in rec if (m := _NUMBERED_SUMMARY.fullmatch(k)))
    keys = ["summary"] if "summary" in rec else [k for _, k in numbered] or ["abstractive_summary"]
    if keys[0] not in rec:
        raise _BadRecord("missing field 'summary' (or 'summary1'..'summaryN' / 'abstractive_summary')")
    return _Dialog(str(id_), dialogue, [_summary_text(rec[k], f"field {k!r}") for k in keys])


def _hub_turn(turn: Any, tweets: bool) -> str:
    turn = _as_object(turn)
    role = _get(turn, ("role", "speaker"), (str,), "the speaker of a turn")
    text = _get(turn, ("content", "text"), (str, type(None)), "the text of a turn") or ""
    if not tweets:
        return f"{role}: {' '.join(text.split())}" if text.strip() else ""
    if role.lower() not in _AGENT_ROLES | _CUSTOMER_ROLES:
        expected = ", ".join(sorted(_AGENT_ROLES | _CUSTOMER_ROLES))
        raise _BadRecord(f"unknown speaker role {role!r}; expected one of: {expected}")
    return _speaker_line(role.lower() in _AGENT_ROLES, text)


def _processed_tweetsumm(records: Iterable[tuple[str, Any]], path: Path) -> list[_Dialog]:
    """The authors' processor output: {"dialog": {dialog_id, turns}, "summaries": {abstractive_summaries}}."""
    dialogs = []
    for where, rec in records:
        try:
            dialog = _get(_as_object(rec), ("dialog",), (dict,), "the processed TWEETSUMM dialog")
            summaries = _get(rec, ("summaries",), (dict,), "the processed TWEETSUMM summaries")
            id_ = _get(dialog, ("dialog_id",), (str, int), "the dialogue id")
            lines = []
            for turn in _get(dialog, ("turns",), (list,), "the list of turns"):
                turn = _as_object(turn)
                is_agent = turn.get("is_agent")
                if not isinstance(is_agent, bool):
                    raise _BadRecord(f"turn field 'is_agent' should be true or false, got {is_agent!r}")
                sentences = _get(turn, ("sentences",), (list,), "the sentences of a turn")
                lines.append(_speaker_line(is_agent, _summary_text(sentences, "turn field 'sentences'")))
            abstractive = _get(summaries, ("abstractive_summaries",), (list,), "[[customer, agent], ...]")
            refs = [_summary_text(s, "an abstractive summary") for s in abstractive]
        except _BadRecord as err:
            raise ValueError(f"{path}, {where}: {err}") from None
        dialogs.append(_Dialog(str(id_), _join_turns(lines), refs))
    return dialogs


# ---------------------------------------------------------------- TWEETSUMM annotations + twcs.csv


class _Annotation(NamedTuple):
    conversation_id: str
    tweet_ids: list[str]
    references: list[str]


def _annotation(rec: Any) -> _Annotation:
    rec = _as_object(rec)
    conv = _get(rec, ("conversation_id",), (str,), "the conversation id")
    tweet_ids = []
    for item in _get(rec, ("tweet_ids_sentence_offset",), (list,), "the conversation's tweets"):
        tweet_ids.append(str(_get(_as_object(item), ("tweet_id",), (int, str), "a Twitter id")))
    refs = []
    for ann in _get(rec, ("annotations",), (list,), "the annotators' summaries"):
        abstractive = _get(_as_object(ann), ("abstractive",), (list, type(None)), "a list of sentences")
        refs.append(_summary_text(abstractive, "field 'abstractive'"))
    return _Annotation(conv, tweet_ids, refs)


def _annotated_splits(files: Mapping[str, Path]) -> dict[str, datasets.Dataset]:
    """Join annotation files to the tweet texts of the `twcs.csv` beside them (one pass over the CSV)."""
    parsed: dict[str, list[_Annotation]] = {}
    for split, path in files.items():
        parsed[split] = []
        for where, rec in _records(path):
            try:
                parsed[split].append(_annotation(rec))
            except _BadRecord as err:
                raise ValueError(f"{path}, {where}: {err}") from None
    csv_path = next(iter(files.values())).parent / TWCS_CSV
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"missing file: {csv_path} (the TWEETSUMM annotations hold tweet ids only; their texts come "
            "from the Kaggle 'Customer Support on Twitter' twcs.csv, expected beside the annotation files)"
        )
    tweets = _read_twcs(csv_path, {t for anns in parsed.values() for a in anns for t in a.tweet_ids})
    out = {}
    for split, anns in parsed.items():
        dialogs, skipped = [], []
        for a in anns:
            if any(t not in tweets for t in a.tweet_ids):
                skipped.append(a.conversation_id)
                continue
            # Stable sort: tweets posted in the same second keep the annotators' order.
            ordered = sorted(a.tweet_ids, key=lambda t: tweets[t].created_at)
            lines = (_speaker_line(tweets[t].is_agent, tweets[t].text) for t in ordered)
            dialogs.append(_Dialog(a.conversation_id, _join_turns(lines), a.references))
        if skipped:
            log.warning(
                "skipped %d conversations of %s whose tweets are missing from %s (first: %s)",
                len(skipped),
                files[split],
                csv_path,
                skipped[0],
            )
        out[split] = _build_split(dialogs, split, str(files[split]))
    return out


def _read_twcs(path: Path, wanted: set[str]) -> dict[str, _Tweet]:
    """Stream the Kaggle CSV (about 500 MB, 2.8M tweets) keeping only the wanted ids; stops once all are found."""
    found: dict[str, _Tweet] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = [c for c in _TWCS_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; expected the Kaggle twcs.csv header"
            )
        i_id, i_in, i_time, i_text = (header.index(c) for c in _TWCS_COLUMNS)
        for row in reader:
            if len(row) <= i_id or row[i_id] not in wanted:
                continue
            try:
                inbound = row[i_in].strip().lower()
                if inbound not in ("true", "false"):
                    raise ValueError(f"'inbound' should be True or False, got {row[i_in]!r}")
                created = _tweet_time(row[i_time])
                found[row[i_id]] = _Tweet(inbound == "false", created, row[i_text])
            except (ValueError, IndexError) as err:
                raise ValueError(f"{path}, line {reader.line_num}: {err}") from None
            if len(found) == len(wanted):
                break
    return found


def _tweet_time(text: str) -> datetime:
    try:
        return datetime.strptime(text.strip(), _TWCS_TIME)
    except ValueError:
        raise ValueError(
            f"'created_at' should look like 'Tue Oct 31 22:10:47 +0000 2017', got {text!r}"
        ) from None
