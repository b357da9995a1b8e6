"""TWEETSUMM, DialogSum and SAMSum in one shape (ARCHITECTURE.md, "Data records"); a train or
validation row's id is `<dialogue id>#<k>`, k counting the released references from 1.

TWEETSUMM tweets lose links, @handles and HTML entities, speakers become Customer / Agent; the
authors' annotations are joined to the Kaggle `twcs.csv` beside them, turns ordered by
`created_at`. The TWEETSUMM hub copy has one summary."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # a dependency of datasets
from datasets import Dataset, DatasetDict, Features, Value, load_dataset

from tutorlib import paths

DATASETS = ("tweetsumm", "dialogsum", "samsum")
SPLITS = ("train", "validation", "test")
# `samsum` itself is a loading script, which datasets >= 4 refuses; a data-file mirror stands in.
HUB_IDS = {"tweetsumm": "shivanandmn/tweet-sum-filtered", "dialogsum": "knkarthick/dialogsum"}
HUB_IDS["samsum"] = "knkarthick/samsum"
_STR = Value("string")
FEATURES = Features(dict.fromkeys(("id", "dialogue", "summary"), _STR) | {"references": [_STR]})
_VALIDATION = ("validation", "valid", "val", "dev")
_SPLIT_NAMES = {"train": "train", "test": "test"} | dict.fromkeys(_VALIDATION, "validation")
_SUFFIXES = (".json", ".jsonl", ".parquet")
_TWCS = "twcs.csv"
_TWCS_TIME = "%a %b %d %H:%M:%S %z %Y"  # "Tue Oct 31 22:10:47 +0000 2017"
_URL = re.compile(r"(?:https?://|www\.|\bt\.co/)\S*", re.IGNORECASE)
_HANDLE = re.compile(r"(?<![\w@])@\w+")  # not the middle of an e-mail address
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?")
_CUSTOMER_ROLES = ("customer", "user", "human", "client")
_AGENT_ROLES = ("agent", "assistant", "support", "company", "bot", "brand")
_ANNOTATION = "tweet_ids_sentence_offset"  # the field that marks the authors' annotation records


def sizes(dsd: DatasetDict) -> dict[str, int]:
    """Rows per split, e.g. `{"train": 2629, "validation": 356, "test": 110}`."""
    return {split: len(ds) for split, ds in dsd.items()}


def take(ds: Dataset, n: int | None) -> Dataset:
    """The first `n` rows of a split (all of them when `n` is None)."""
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    return ds if n is None else ds.select(range(min(n, len(ds))))


def load(name: str, source: str | os.PathLike | None = None, *, profile: Any = None) -> DatasetDict:
    """Load `name` from a hub id, a released .json/.jsonl/.parquet file (split from its name, else
    train) or a folder of them. Without a `source`: the hub copy in `HUB_IDS` when `profile` is
    `full`, else the bundled samples in data/<name>/."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    if source is None:
        full = getattr(profile, "name", None) == "full"
        source = HUB_IDS[key] if full else paths.data_dir() / key
    path = Path(source).expanduser()
    local = path.exists()
    hub_id = isinstance(source, str) and _HUB_ID.fullmatch(source) is not None
    if local:
        raw = {
            split: [(str(f), _read(f)) for f in files]
            for split, files in _split_files(path).items()
        }
    elif hub_id and path.suffix.lower() not in _SUFFIXES:
        raw = {}
        for s, ds in load_dataset(source).items():  # splits of other names are ignored
            if split := _SPLIT_NAMES.get(s.lower()):
                raw[split] = [(f"{source} [{s}]", [(f"row {i}", r) for i, r in enumerate(ds)])]
    else:
        raise FileNotFoundError(
            f"no such file or folder: {path} (nor a hub dataset id like 'owner/name')"
        )
    tweets = _tweets_for(raw) if key == "tweetsumm" else None  # None: not tweets, nothing to clean
    out: dict[str, list] = {split: [] for split in SPLITS}
    for split, sources in raw.items():
        for origin, records in sources:
            dialogs = _dialogs(origin, records, tweets, merge=not local)
            out[split] += _rows(dialogs, split, origin)
    # Column-wise so that an empty split still has the full schema.
    columns = {split: {c: [r[c] for r in rows] for c in FEATURES} for split, rows in out.items()}
    return DatasetDict(
        {split: Dataset.from_dict(c, features=FEATURES) for split, c in columns.items()}
    )


def _split_of(name: str) -> str | None:
    return next(
        (_SPLIT_NAMES[t] for t in re.split(r"[^a-z0-9]+", name.lower()) if t in _SPLIT_NAMES), None
    )


def _split_files(path: Path) -> dict[str, list[Path]]:
    """One file: its split. A folder: the data files named after each split (all three required)."""
    if path.is_file():
        return {_split_of(path.name) or "train": [path]}
    found: dict[str, list[Path]] = {}
    for f in sorted(path.rglob("*")):
        # such as .ipynb_checkpoints
        hidden = any(part.startswith(".") for part in f.relative_to(path).parts)
        split = _split_of(f.name)
        if split and f.is_file() and f.suffix.lower() in _SUFFIXES and not hidden:
            found.setdefault(split, []).append(f)
    if missing := [s for s in SPLITS if s not in found]:
        raise FileNotFoundError(
            f"{path} has no file for the {'/'.join(missing)} split; expected .json, .jsonl or "
            ".parquet files named after their split, e.g. dialogsum.dev.jsonl"
        )
    return found


def _read(path: Path) -> list[tuple[str, Any]]:
    """(where, record) pairs: 'line N' of JSON lines, 'record index N' of a JSON list,
    'row N' of parquet."""
    if path.suffix.lower() == ".parquet":
        return [(f"row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    if path.suffix.lower() != ".json":
        return [
            (f"line {n}", _json(x, path, n))
            for n, x in enumerate(_utf8(path), start=1)
            if x.strip()
        ]
    if not isinstance(records := _json("".join(_utf8(path)), path), list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return [(f"record index {i}", r) for i, r in enumerate(records)]


def _json(text: str, path: Path, line: int = 1) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}, line {line + err.lineno - 1}: not valid JSON ({err.msg})"
        ) from None


def _utf8(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file (a byte-order mark allowed); another encoding is an error naming
    the file."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            yield from fh
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 ({err.reason} at byte {err.start}); expected UTF-8"
        ) from None


def _rows(dialogs: list[tuple], split: str, origin: str) -> list[dict[str, Any]]:
    """One row per reference (train/validation) or dialogue (test); drops are counted and warned."""
    rows, dropped = [], 0
    for id_, dialogue, references in dialogs:
        refs = [r for r in references if r]
        if split == "test":
            candidates = [(id_, refs[0] if refs else "")]
        else:  # a dialogue released without any summary counts as one dropped row
            numbered = [(f"{id_}#{k}", r) for k, r in enumerate(references, start=1)]
            candidates = numbered or [(id_, "")]
        kept = [(i, summary) for i, summary in candidates if dialogue and summary]
        rows += [{"id": i, "dialogue": dialogue, "summary": s, "references": refs} for i, s in kept]
        dropped += len(candidates) - len(kept)
    what = f"{dropped} rows dropped for an empty dialogue or summary"
    if dropped:
        warnings.warn(f"{what} from {origin} ({split})", stacklevel=3)
    if not rows:
        raise ValueError(
            f"the {split} split from {origin} is empty: {len(dialogs)} dialogues read, {what}"
        )
    return rows


def _dialogs(
    origin: str, records: list[tuple[str, Any]], tweets: dict | None, merge: bool
) -> list[tuple]:
    """(id, dialogue, references) by each record's shape; a bad record names its file and line."""
    merged: dict[str, tuple] = {}
    skipped: list[str] = []
    for where, rec in records:
        # each parser's docstring is the record shape it expects, for the error message
        parse = _plain
        try:
            nested = isinstance(rec.get("dialog"), dict)  # the processor's output nests the dialog
            parse = _annotated if _ANNOTATION in rec else _processed if nested else _plain
            id_, dialogue, refs = parse(rec, tweets)
        except (KeyError, TypeError, AttributeError) as err:
            problem = f"missing field {err}" if isinstance(err, KeyError) else err
            raise ValueError(
                f"{origin}, {where}: {problem}; expected a record {parse.__doc__}"
            ) from None
        except ValueError as err:
            raise ValueError(f"{origin}, {where}: {err}") from None
        if dialogue is None:  # an annotated conversation whose tweets are missing
            skipped.append(id_)
        elif merge and dialogue in merged:  # hub DialogSum's test split has one reference per row
            merged[dialogue][2].extend(r for r in refs if r and r not in merged[dialogue][2])
        else:
            # released files keep every record (DialogSum test repeats a dialogue), as do empty ones
            merged[dialogue if merge and dialogue else f"\0{where}"] = (id_, dialogue, refs)
    if skipped:
        msg = f"skipped {len(skipped)} conversations of {origin} whose tweets are missing"
        warnings.warn(f"{msg} from {_TWCS} (first: {skipped[0]})", stacklevel=3)
    return list(merged.values())


def _first(rec: Mapping[str, Any], *keys: str) -> Any:
    # The first of `keys` present; when none is, the KeyError names them all ('id / fname / ...').
    return rec[next((k for k in keys if k in rec), " / ".join(keys))]


def _text(value: Any) -> str:
    """A string, a list of sentences (joined by a space) or null, with whitespace collapsed."""
    value = " ".join(p or "" for p in value) if isinstance(value, list) else value
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected text or a list of sentences, got {type(value).__name__}")
    return " ".join((value or "").split())


def _clean_tweet(text: str) -> str:
    return " ".join(_HANDLE.sub(" ", _URL.sub(" ", html.unescape(text))).split())


def _speakers(turns: Iterable[tuple[bool, str]]) -> str:
    """Cleaned tweets as "Customer: ..." / "Agent: ..." lines; one left empty (a bare link) goes."""
    lines = []
    for is_agent, text in turns:
        if not isinstance(is_agent, bool):
            raise TypeError(f"'is_agent' should be true or false, got {is_agent!r}")
        if text := _clean_tweet(text):
            lines.append(f"{'Agent' if is_agent else 'Customer'}: {text}")
    return "\n".join(lines)


def _plain(rec: Mapping[str, Any], tweets: dict | None) -> tuple:
    """{id or fname, dialogue: text or [{role, content}], summary or summary1..summaryN}"""
    id_ = _first(rec, "id", "fname", "conversation_id", "dialog_id")
    value = _first(rec, "dialogue", "dialog", "conversation") or ""
    if isinstance(value, list):
        turns = [(_first(t, "role", "speaker"), _text(_first(t, "content", "text"))) for t in value]
        plain = "\n".join(f"{role}: {text}" for role, text in turns if text)
        dialogue = (
            plain if tweets is None else _speakers((_is_agent(role), text) for role, text in turns)
        )
    else:  # SAMSum joins turns with \r\n; blank lines carry nothing
        clean = _text if tweets is None else _clean_tweet
        dialogue = "\n".join(x for x in map(clean, re.split(r"\r\n|\r|\n", value)) if x)
    numbered = sorted((k for k in rec if re.fullmatch(r"summary\d+", k)), key=lambda k: int(k[7:]))
    if numbered:
        refs = [_text(rec[k]) for k in numbered]
    else:
        refs = [_text(_first(rec, "summary", "abstractive_summary"))]
    return str(id_), dialogue, refs


def _is_agent(role: str) -> bool:
    """Hub copies label TWEETSUMM speakers variously; map them, refusing one we cannot place."""
    if (label := role.strip().lower()) not in _CUSTOMER_ROLES + _AGENT_ROLES:
        expected = f"a customer role {_CUSTOMER_ROLES} or an agent role {_AGENT_ROLES}"
        raise ValueError(f"unknown speaker role {role!r}; expected {expected}")
    return label in _AGENT_ROLES


def _processed(rec: Mapping[str, Any], _: Any) -> tuple:
    """{dialog: {dialog_id, turns: [{is_agent, sentences}]}, summaries: {abstractive_summaries}}"""
    turns = [(t["is_agent"], _text(t["sentences"])) for t in rec["dialog"]["turns"]]
    refs = [_text(s) for s in rec["summaries"]["abstractive_summaries"]]
    return str(rec["dialog"]["dialog_id"]), _speakers(turns), refs


def _annotated(rec: Mapping[str, Any], tweets: dict[str, tuple]) -> tuple:
    """{conversation_id, tweet_ids_sentence_offset: [{tweet_id}], annotations: [{abstractive}]}"""
    ids = [str(t["tweet_id"]) for t in rec[_ANNOTATION]]
    refs = [_text(a["abstractive"]) for a in rec["annotations"]]
    if any(t not in tweets for t in ids):  # skipped and counted by the caller
        return str(rec["conversation_id"]), None, refs
    # stable: tweets of the same second keep their order
    ordered = sorted(ids, key=lambda t: tweets[t][1])
    return str(rec["conversation_id"]), _speakers(tweets[t][::2] for t in ordered), refs


def _tweets_for(raw: Mapping[str, list[tuple[str, list]]]) -> dict[str, tuple]:
    """(is_agent, created_at, text) per annotated tweet, in one pass over the 500 MB twcs.csv."""
    wanted, csv_path = set(), None
    for origin, records in (source for sources in raw.values() for source in sources):
        for _, rec in records:
            if isinstance(rec, Mapping) and isinstance(rec.get(_ANNOTATION), list):
                csv_path = csv_path or Path(origin).parent / _TWCS
                wanted |= {
                    str(t.get("tweet_id")) for t in rec[_ANNOTATION] if isinstance(t, Mapping)
                }
    if csv_path is None:
        return {}
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"missing file: {csv_path} (TWEETSUMM annotations hold tweet ids; the texts come "
            "from the Kaggle twcs.csv beside them)"
        )
    reader, found = csv.DictReader(_utf8(csv_path)), {}
    if missing := {"tweet_id", "inbound", "created_at", "text"} - set(reader.fieldnames or []):
        raise ValueError(
            f"{csv_path}: no column(s) {sorted(missing)}; expected the Kaggle twcs.csv header"
        )
    for row in (r for r in reader if r["tweet_id"] in wanted):
        try:
            agent = {"false": True, "true": False}[(row["inbound"] or "").strip().lower()]
            created = datetime.strptime(row["created_at"] or "", _TWCS_TIME)
        except (KeyError, ValueError):
            raise ValueError(
                f"{csv_path}, line {reader.line_num}: expected 'inbound' True or False and "
                f"'created_at' like 'Tue Oct 31 22:10:47 +0000 2017', got {row}"
            ) from None
        found[row["tweet_id"]] = (agent, created, row["text"])
        if len(found) == len(wanted):
            break
    return found
