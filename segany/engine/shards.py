"""The engine's output: shards of per-image SA-1B JSON, and a manifest of every image's outcome.

    OUT/shards/<key>.tar (or .parquet)   SA-1B JSON per image, as `segany auto` writes it
    OUT/manifest/<key>.jsonl             one line per image of that batch: image_id, url, status
                                         ("done" or "error"), masks, seconds, error, shard
    OUT/manifest.parquet                 all of them, rewritten at the end of each run
    OUT/dataset/                         with `dataset=True`: image + JSON pairs `segany train` reads

A batch's shard is written before its manifest part, each atomically (temporary name, then
rename), so an image is done exactly when a manifest part lists it. A shard without its part
is what an interrupted run leaves; the next run deletes it and does those images again. The
key of a batch is a hash of its image ids: a retried batch writes the same files again
instead of new ones, so no image is ever in two shards.
"""

import hashlib
import io
import json
import posixpath
import re
import tarfile
import uuid
from typing import Any, Dict, Iterable, List, Tuple

import fsspec

from .sources import json_name

MANIFEST_FIELDS = ("image_id", "url", "status", "masks", "seconds", "error", "shard")
FORMATS = ("tar", "parquet")


def batch_key(image_ids: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(sorted(image_ids)).encode("utf-8")).hexdigest()[:20]


def put_atomic(fs, path: str, data: bytes) -> None:
    """Write `data` to `path` under a temporary name first: readers see all of it or nothing."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as file:
        file.write(data)
    fs.mv(tmp, path)


def write_batch(out: str, rows: List[Dict[str, Any]], shard_format: str, dataset: bool) -> List[Dict[str, Any]]:
    """Write one batch's shard (its done images), dataset pairs, then its manifest part; returns the part's rows.

    rows: image_id, url, status, masks, seconds, error, json (the SA-1B document, for done images).
    """
    fs, root = fsspec.core.url_to_fs(out)
    key = batch_key(row["image_id"] for row in rows)
    done = [row for row in rows if row["status"] == "done"]
    shard = f"shards/{key}.{shard_format}" if done else ""
    if done:
        fs.makedirs(posixpath.join(root, "shards"), exist_ok=True)
        put_atomic(fs, posixpath.join(root, shard), _shard_bytes(done, shard_format))
    if dataset:
        _write_dataset(fs, posixpath.join(root, "dataset"), done)
    manifest = [{**{name: row.get(name) for name in MANIFEST_FIELDS[:-1]},
                 "shard": shard if row["status"] == "done" else ""} for row in rows]
    fs.makedirs(posixpath.join(root, "manifest"), exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in manifest)
    put_atomic(fs, posixpath.join(root, "manifest", f"{key}.jsonl"), text.encode("utf-8"))
    return manifest


def read_manifest(out: str) -> Dict[str, Dict[str, Any]]:
    """image_id -> manifest row, from every manifest part under OUT."""
    fs, root = fsspec.core.url_to_fs(out)
    rows: Dict[str, Dict[str, Any]] = {}
    for part in sorted(fs.glob(posixpath.join(root, "manifest", "*.jsonl"))):
        with fs.open(part, "rt", encoding="utf-8") as file:
            for line in file:
                row = json.loads(line)
                rows[row["image_id"]] = row
    return rows


def remove_orphans(out: str) -> List[str]:
    """Delete shards and temporary files no manifest part vouches for (an interrupted run's); returns them."""
    fs, root = fsspec.core.url_to_fs(out)
    parts = {posixpath.basename(p)[: -len(".jsonl")] for p in fs.glob(posixpath.join(root, "manifest", "*.jsonl"))}
    removed = []
    for path in fs.glob(posixpath.join(root, "shards", "*")) + fs.glob(posixpath.join(root, "manifest", "*.tmp-*")):
        name = posixpath.basename(path)
        if ".tmp-" in name or name.split(".")[0] not in parts:
            fs.rm(path)
            removed.append(path)
    return removed


def write_manifest_table(out: str, rows: Iterable[Dict[str, Any]]) -> str:
    """OUT/manifest.parquet of `rows` (sorted by image id), atomically; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda row: row["image_id"])
    table = pa.table({name: [row.get(name) for row in rows] for name in MANIFEST_FIELDS},
                     schema=pa.schema([("image_id", pa.string()), ("url", pa.string()), ("status", pa.string()),
                                       ("masks", pa.int64()), ("seconds", pa.float64()), ("error", pa.string()),
                                       ("shard", pa.string())]))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fs, root = fsspec.core.url_to_fs(out)
    path = posixpath.join(root, "manifest.parquet")
    put_atomic(fs, path, buffer.getvalue())
    return path


def read_shard(fs, path: str) -> List[Tuple[str, Dict[str, Any]]]:
    """(member name, SA-1B document) of each image in a shard."""
    with fs.open(path, "rb") as file:
        data = file.read()
    if path.endswith(".tar"):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return [(m.name, json.loads(tar.extractfile(m).read())) for m in tar.getmembers() if m.isfile()]
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    return [(name, json.loads(text)) for name, text in zip(table.column("name").to_pylist(),
                                                           table.column("json").to_pylist())]


def _shard_bytes(rows: List[Dict[str, Any]], shard_format: str) -> bytes:
    buffer = io.BytesIO()
    if shard_format == "tar":
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for row in rows:
                data = row["json"].encode("utf-8")
                info = tarfile.TarInfo(json_name(row["image_id"]))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"image_id": [r["image_id"] for r in rows],
                                 "name": [json_name(r["image_id"]) for r in rows],
                                 "json": [r["json"] for r in rows]}), buffer)
    return buffer.getvalue()


def _write_dataset(fs, folder: str, rows: List[Dict[str, Any]]) -> None:
    """Image + SA-1B JSON pairs named after the image ids, the JSON naming its image copy."""
    fs.makedirs(folder, exist_ok=True)
    for row in rows:
        stem = re.sub(r"[^\w.-]", "_", posixpath.splitext(row["image_id"])[0])
        image_name = stem + posixpath.splitext(row["url"])[1].lower()
        with fsspec.open(row["url"], "rb") as file:
            put_atomic(fs, posixpath.join(folder, image_name), file.read())
        document = json.loads(row["json"])
        document["image"]["file_name"] = image_name
        put_atomic(fs, posixpath.join(folder, stem + ".json"), json.dumps(document).encode("utf-8"))
