"""Read back a W&B offline run (``run-*.wandb``): the history rows and the config its records
hold.

The file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
records, each with a 7-byte header (checksum, little-endian length, type: full, first, middle,
last) and a piece of a serialized ``Record`` protobuf; a block's tail shorter than a header is
padding.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    payloads: list[bytes] = []
    pending = b""
    offset = HEADER
    while offset + HEADER <= len(data):
        left = BLOCK - offset % BLOCK
        if left < HEADER:
            offset += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        if kind == 0 and length == 0:  # zero padding
            offset += left
            continue
        piece = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == FULL:
            payloads.append(piece)
        elif kind == FIRST:
            pending = piece
        elif kind == MIDDLE:
            pending += piece
        elif kind == LAST:
            payloads.append(pending + piece)
            pending = b""
    return payloads


def config(run_dir: Path) -> dict[str, Any]:
    """The offline run's config (its hyperparameters): key to decoded JSON value, the latest
    update of each key."""
    from wandb.proto import wandb_internal_pb2

    (log,) = run_dir.glob("run-*.wandb")
    values: dict[str, Any] = {}
    for payload in records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        items = record.config.update if kind == "config" else []
        if kind == "run":
            items = record.run.config.update
        for item in items:
            values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def history(run_dir: Path) -> list[dict[str, Any]]:
    """Every history row of the offline run in ``run_dir``: key to decoded JSON value."""
    from wandb.proto import wandb_internal_pb2

    (log,) = run_dir.glob("run-*.wandb")
    rows = []
    for payload in records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            value = json.loads(item.value_json)
            if item.key or len(item.nested_key) == 1:
                row[item.key or item.nested_key[0]] = value
                continue
            # a media value is written field by field: nested_key = [key, field, ...]
            node = row.setdefault(item.nested_key[0], {})
            for part in item.nested_key[1:-1]:
                node = node.setdefault(part, {})
            node[item.nested_key[-1]] = value
        rows.append(row)
    return rows
