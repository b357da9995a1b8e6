"""Synthetic dialogue/summary pairs: generated resumably (an interrupted or failed run is rerun
without paying again), an offline template stand-in, near-duplicates found."""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tutorlib import paths

# The offline stand-in assembles customer-support conversations from the pieces in this JSON file.
_PIECES = json.loads((Path(__file__).parent / "synthetic_pieces.json").read_text(encoding="utf-8"))
# Planted flaws, by index modulo 10, so that the filters have known mistakes (an LLM makes its own).
_PLANTED = {
    4: "summary of another conversation",
    7: "one-sentence summary",
    9: "near-duplicate of the previous",
}


def template_pair(index: int) -> dict[str, Any]:
    """Pair `index` of the offline stand-in (deterministic); `planted` names its flaw, if any."""
    flaw = _PLANTED.get(index % 10)
    rng = random.Random(index - 1 if flaw == _PLANTED[9] else index)  # a near-duplicate: same draws
    p = _PIECES
    scenario, item, day = rng.choice(p["scenarios"]), rng.choice(p["items"]), rng.choice(p["days"])
    opening, closing = rng.choice(p["openings"]), rng.choice(p["closings"])
    if flaw == _PLANTED[9]:  # the same conversation, greeted differently
        opening = p["openings"][(p["openings"].index(opening) + 1) % len(p["openings"])]
    said, reply, *summary = (part.format(item=item, day=day) for part in scenario)
    turns = [
        f"Customer: {opening} {said}",
        f"Agent: {reply}",
        f"Customer: {closing}",
        "Agent: Thanks, we're on it.",
    ]
    if flaw == _PLANTED[4]:
        other = p["scenarios"][(p["scenarios"].index(scenario) + 2) % len(p["scenarios"])]
        summary = [
            part.format(item=rng.choice(p["items"]), day=rng.choice(p["days"]))
            for part in other[2:]
        ]
    summary = summary[:1] if flaw == _PLANTED[7] else summary
    return {
        "dialogue": "\n".join(turns),
        "summary": " ".join(summary),
        "generator": "template",
        "planted": flaw,
    }


def resumable(
    path: str | Path, n: int, make: Callable[[int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows 0..n-1 of the JSONL file `path`, calling `make(i)` only for the indices not in it yet.
    Each new row is written and flushed at once. A `make` that raises is counted, warned about and
    tried again on the next call; a line cut short by an interruption is dropped and made again."""
    path, done = Path(path), {}
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    lines = path.read_bytes().splitlines() if path.exists() else []
    for line in lines:
        try:  # a line in another encoding (a row fixed by hand in an editor) is damaged too
            row = json.loads(line.decode("utf-8"))
            done[int(row["index"])] = row
        except (ValueError, KeyError, TypeError):
            pass
    # rewrite without the damaged lines, so appending cannot glue onto one
    if len(done) < len(lines):
        warnings.warn(
            f"{path}: {len(lines) - len(done)} damaged line(s) dropped; those rows are made again",
            stacklevel=2,
        )
        kept = "".join(json.dumps(done[i]) + "\n" for i in sorted(done))
        paths.write_atomic(path, kept)  # whole or not at all: the good rows are never lost
    path.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with path.open("a", encoding="utf-8") as out:
        for i in (i for i in range(n) if i not in done):
            try:
                row = make(i)
                if not all(isinstance(row.get(k), str) for k in ("dialogue", "summary")):
                    raise ValueError(
                        f"expected a dict with 'dialogue' and 'summary' strings, got {row!r:.80}"
                    )
            except Exception as exc:  # noqa: BLE001
                # any failed request or reply: counted, retried next run
                failures.append(f"{i}: {type(exc).__name__}: {exc}"[:200])
                continue
            done[i] = {"index": i, **row}
            out.write(json.dumps(done[i]) + "\n")
            out.flush()
    if failures:
        warnings.warn(
            f"{len(failures)} of {n} rows failed and are not in {path.name} "
            f"(first: {failures[0]}); run again to retry only those",
            stacklevel=2,
        )
    return [done[i] for i in sorted(done) if i < n]


def near_duplicates(texts: list[str], threshold: float = 0.8, n: int = 3) -> dict[int, int]:
    """{index: earlier index it repeats} for texts whose word `n`-grams overlap an earlier kept
    text's by at least `threshold` (Jaccard similarity). Quadratic: for hundreds, not millions."""
    words = [re.findall(r"\w+", text.lower()) for text in texts]
    shingles = [{tuple(w[k : k + n]) for k in range(max(len(w) - n + 1, 1))} for w in words]
    repeats: dict[int, int] = {}
    # shingle sets are never empty: a short text is one (short) tuple
    for i, mine in enumerate(shingles):
        for j in range(i):
            if j not in repeats and len(mine & shingles[j]) >= threshold * len(mine | shingles[j]):
                repeats[i] = j
                break
    return repeats
