"""Parts of a long workflow, recognised by what defines them, so a rerun after a stop redoes nothing finished.

A part (stage 1, one method's vote and training, one evaluation, the table) has a *definition*: the settings and
inputs that produce it, as plain JSON. Its record in the workflow's manifest holds the definition's fingerprint and
a status. On a rerun a part is
- skipped when its record has the same fingerprint, says `finished` and its products are on disk;
- run (or resumed: stage 1 and the trainer resume by themselves) when it has no record, or its record is unfinished
  with the same fingerprint, or its products are gone;
- refused, when the record's definition differs and the part's directory still holds its work: the message names
  each setting that changed and the directory to delete to redo it. Nothing is mixed, nothing silently reused.
A directory that merely exists is never taken for a finished part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation.protocol import differences
from pipeline.io import write_text_atomic

FINISHED = "finished"


class PartChanged(ValueError):
    """A part on disk was made with other settings than the current ones; the message says what and where."""


def fingerprint(definition: Any) -> str:
    """A stable hash of a JSON-able definition (keys sorted)."""
    text = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PartRecords:
    """The records of every part, kept in one JSON manifest written atomically after each change."""

    path: Path
    body: dict[str, Any]  # {"parts": {name: record}, ...other facts the workflow keeps beside them}

    @classmethod
    def load(cls, path: str | Path) -> PartRecords:
        path = Path(path)
        body = json.loads(path.read_text()) if path.is_file() else {}
        body.setdefault("parts", {})
        return cls(path, body)

    @property
    def parts(self) -> dict[str, dict[str, Any]]:
        return self.body["parts"]

    def save(self, **facts: Any) -> None:
        """Write the records, with `facts` (timings, counts) kept beside them."""
        self.body.update(facts)
        write_text_atomic(self.path, json.dumps(self.body, indent=2, default=str) + "\n")

    def is_done(self, name: str, definition: Any, products: Iterable[Path] = ()) -> bool:
        """Finished with this very definition, and its products still on disk."""
        record = self.parts.get(name)
        return (
            record is not None
            and record.get("fingerprint") == fingerprint(definition)
            and record.get("status") == FINISHED
            and all(Path(p).exists() for p in products)
        )

    def check(self, name: str, definition: Any, directory: Path | None) -> None:
        """Refuse when `directory` holds this part's work made with another definition."""
        record = self.parts.get(name)
        if record is None or record.get("fingerprint") == fingerprint(definition):
            return
        if directory is not None and directory.exists() and any(directory.iterdir()):
            changed = differences(record.get("definition", {}), definition)
            raise PartChanged(
                f"{name}: {directory} was made with other settings ({'; '.join(changed) or 'unknown'}; before vs "
                f"now). Nothing is mixed or overwritten: use another run.output_dir, or delete {directory} to "
                f"redo this part"
            )

    def mark(self, name: str, definition: Any, status: str, **extra: Any) -> None:
        self.parts[name] = {
            "fingerprint": fingerprint(definition),
            "status": status,
            "definition": definition,
            **extra,
        }
        self.save()
