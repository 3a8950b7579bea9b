"""Per-image results of an evaluation run, kept on disk as each image is done, so that an
interrupted run picks up where it stopped.

The file is JSON lines: first the run's settings, then one {"image": name, ...} per image.
Records are appended and flushed one by one; a last line cut short by an interruption is dropped
when the file is opened again. A run with other settings (model, task options) refuses to mix
its results into the file.
"""

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from tqdm import tqdm

from ..data import MaskDataset, Sample
from ..errors import SegAnyError
from ..fileio import write_text_atomic


class ImageRecords:
    """The records of one task's run in `path`, made with `settings` (a JSON-ready dict)."""

    def __init__(self, path: Union[str, Path], settings: dict) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))
        self.records: Dict[str, dict] = {}
        if not self.path.exists():  # written with the first record: a run that fails at once leaves nothing
            return
        lines = self.path.read_text(encoding="utf-8").split("\n")
        try:
            written = json.loads(lines[0])["settings"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SegAnyError(f"{self.path}: not a segany per-image results file; use another --output") from None
        if written != self.settings:
            changed = sorted(k for k in {*written, *self.settings} if written.get(k) != self.settings.get(k))
            raise SegAnyError(f"{self.path}: written by a run with other settings ({', '.join(changed)}); "
                              f"use another --output or delete the file to start over")
        for number, line in enumerate(lines[1:-1], start=2):  # lines[-1]: after the last newline
            try:
                record = json.loads(line)
                self.records[record.pop("image")] = record
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise SegAnyError(f"{self.path}:{number}: not a per-image record; delete the file to start over") \
                    from None
        if lines[-1]:  # a record cut short by an interruption: rewrite the file without it
            kept = [json.dumps({"settings": self.settings})]
            kept += [json.dumps({"image": name, **record}) for name, record in self.records.items()]
            write_text_atomic(self.path, "\n".join(kept) + "\n")

    def get(self, name: str) -> Optional[dict]:
        return self.records.get(name)

    def add(self, name: str, record: dict) -> None:
        """Store one image's record durably before going on."""
        if not self.path.exists():
            write_text_atomic(self.path, json.dumps({"settings": self.settings}) + "\n")
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"image": name, **record}) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self.records[name] = record


def each_image(dataset: MaskDataset, limit: Optional[int], compute: Callable[[Sample], dict],
               records: Optional[ImageRecords] = None, progress: Optional[str] = None) -> List[dict]:
    """compute(sample) for the first `limit` images of the dataset, in order: with `records`,
    images already recorded are read back instead of loaded, and new results are recorded; with a
    `progress` label, a progress bar of that name."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    results = []
    for index in tqdm(range(count), desc=progress, unit="image", disable=progress is None):
        name = dataset.names[index]
        record = records.get(name) if records is not None else None
        if record is None:
            record = compute(dataset[index])
            if records is not None:
                records.add(name, record)
        results.append(record)
    return results
