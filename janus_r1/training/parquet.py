"""Parquet label files (the released ``midbee/Janus-Pro-R1-Data`` shards and our own), read without their images.

The released dataset is ~344 GB in 524 Parquet shards; its column layout is not documented (spec §3.1), so rows
are read generically and normalised by ``data.py``, in either layout:

* one row per prompt, as our JSONL: ``promptid, prompt, data: list<struct<id, img_path | image, reason, prob,
  state>>`` (plus an optional ``questions`` list);
* one row per image: ``promptid, prompt, img_path | image, reason, prob, state``.

An image is a path string, or embedded bytes (a ``binary`` column, or the HF ``Image`` struct ``{bytes, path}``).
Start-up reads every column *except* the binary ones (Parquet selects nested leaves), so the label scan never
loads image bytes; an embedded image is then named by a reference ``parquet:FILE#ROW:KEY/KEY...`` and read only
when a training step needs it (:func:`read_image_ref`, one row group at a time, cached per process).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path

from ..errors import JanusR1Error

REF_PREFIX = "parquet:"


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise JanusR1Error("reading .parquet label files needs pyarrow: pip install 'janus-r1[train]' "
                           "(or pip install pyarrow)") from None
    return pq


def _open(path: Path):
    pq = _pq()
    try:
        return pq.ParquetFile(str(path))
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise JanusR1Error(f"{path}: cannot read as Parquet ({e})") from None


def _binary_leaves(f) -> tuple[list[str], set[tuple[str, ...]]]:
    """(leaf column paths to read, key paths of binary leaves) -- ``list.element`` steps are dropped in keys."""
    keep, binary = [], set()
    for i in range(len(f.schema)):
        col = f.schema.column(i)
        is_binary = col.physical_type == "BYTE_ARRAY" and col.logical_type.type not in ("STRING", "JSON", "ENUM")
        if is_binary:
            parts = [p for p in col.path.split(".") if p not in ("list", "element", "item")]
            binary.add(tuple(parts[:-1]) if parts and parts[-1] == "bytes" else tuple(parts))
        else:
            keep.append(col.path)
    return keep, binary


def parquet_rows(path: Path):
    """Yield ``(where, row, binary_keys)`` for every row; ``where`` is ``FILE:ROW`` (1-based), image bytes unread.

    ``binary_keys`` holds the key paths (``("image",)``, ``("data", "image")``) of embedded image bytes; the row's
    value at such a key is replaced by a :func:`image_ref` string (list positions filled in by the caller)."""
    f = _open(path)
    columns, binary = _binary_leaves(f)
    n = 0
    try:
        for batch in f.iter_batches(batch_size=1024, columns=columns):
            for row in batch.to_pylist():
                n += 1
                yield f"{path}:{n}", row, binary
    except (OSError, ValueError) as e:
        raise JanusR1Error(f"{path}:{n + 1}: cannot read Parquet row ({e})") from None


def image_ref(path: Path, row: int, keys: list) -> str:
    """``parquet:FILE#ROW:k1/k2`` (ROW 1-based; list positions are numbers in the key path)."""
    return f"{REF_PREFIX}{path}#{row}:" + "/".join(str(k) for k in keys)


_CACHE: OrderedDict = OrderedDict()  # (file, row group, column) -> column values, per process (DataLoader worker)


def _row_group_values(path: str, row: int, column: str):
    f = _open(Path(path))
    start = 0
    for g in range(f.metadata.num_row_groups):
        size = f.metadata.row_group(g).num_rows
        if row < start + size:
            key = (path, g, column)
            if key not in _CACHE:
                _CACHE[key] = f.read_row_group(g, columns=[column]).column(0).to_pylist()
                while len(_CACHE) > 2:
                    _CACHE.popitem(last=False)
            return _CACHE[key][row - start]
        start += size
    raise JanusR1Error(f"{path} has {start} rows, no row {row + 1}")


def read_image_ref(ref: str):
    """The PIL image an embedded-image reference names (``bytes`` of an HF Image struct, or raw bytes)."""
    from PIL import Image

    body = ref[len(REF_PREFIX):]
    file, _, rest = body.rpartition("#")
    row_s, _, keypath = rest.partition(":")
    keys = keypath.split("/")
    value = _row_group_values(file, int(row_s) - 1, keys[0])
    for k in keys[1:]:
        value = value[int(k)] if isinstance(value, list) else value[k]
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise JanusR1Error(f"{ref}: no image bytes there")
    return Image.open(io.BytesIO(value))
