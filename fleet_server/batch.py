"""Parse and validate an ingest batch (the contract in docs/fleet.md) into typed records.

Strict: a missing key, a wrong type, a non-finite number, a sequence that is not strictly
increasing, or a record time more than ``max_future_s`` ahead of the server's clock is a
:class:`BadBatchError` (400) naming the path of the bad value, and so is an unknown key in the
envelope (the batch and its record entries). Inside a record, keys this server does not know are
ignored (at most ``json_objects.MAX_KEYS`` per object): a device running a newer runtime may report figures
an older server does not store, and refusing them would refuse every record it sends. Nothing is
stored from a batch that fails. Written by hand rather than with a schema library: the contract is
small, and each message names the exact item at fault in one line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from fleet_server.errors import BadBatchError
from fleet_server.json_objects import checked_object

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_SEQUENCE = 2**63 - 1
MAX_MODELS = 64
MAX_NAMED_FIGURES = 64  # temperatures_c / power_mw entries
MAX_BOUNDS = 128
MAX_TEXT = 128
MAX_FACTS = 32
BATCH_KEYS = ("device_id", "dropped", "facts", "records")
RECORD_KEYS = ("time", "interval_s", "process", "system", "models")
PROCESS_KEYS = ("rss_mb", "rss_peak_mb", "cpu_percent")
SYSTEM_KEYS = ("mem_total_mb", "mem_available_mb", "nvmap_mb", "gpu_load", "temperatures_c", "power_mw",
               "power_mode", "clocks_locked")
ENTRY_KEYS = ("sequence", "record")
HISTOGRAM_KEYS = ("bounds_ms", "counts")
MODEL_KEYS = ("name", "version", "backend", "memory_mb", "requests", "failures", "p50_ms", "p99_ms", "histogram")


@dataclass(frozen=True)
class ModelFigures:
    """One model's figures in one record."""

    name: str
    version: str
    backend: str
    memory_mb: Optional[float]
    requests: int
    failures: int
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    histogram: Optional[Dict[str, List[float]]]


@dataclass(frozen=True)
class Record:
    """One validated telemetry record with its sequence number."""

    sequence: int
    time: float
    interval_s: float
    process: Dict[str, Optional[float]]
    system: Dict[str, Any]
    models: Tuple[ModelFigures, ...]


@dataclass(frozen=True)
class Batch:
    """One validated ingest batch."""

    device_id: str
    dropped: int
    facts: Dict[str, Any]
    records: Tuple[Record, ...]


def parse_batch(body: bytes, now: float, max_records: int, max_future_s: float) -> Batch:
    """The batch in ``body`` (JSON), validated; BadBatchError naming the first problem."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadBatchError(f"body is not valid JSON: {_first_line(exc)}") from exc
    batch = checked_object(data, "body", BATCH_KEYS, BATCH_KEYS)
    device_id = _text(batch["device_id"], "device_id")
    if not DEVICE_ID.match(device_id):
        raise BadBatchError("device_id: expected 1-128 letters, digits, '.', '_', ':' or '-'")
    records = batch["records"]
    if not isinstance(records, list) or not 1 <= len(records) <= max_records:
        raise BadBatchError(f"records: expected a list of 1..{max_records} records")
    parsed = tuple(_record(item, f"records[{index}]", now + max_future_s) for index, item in enumerate(records))
    for index in range(1, len(parsed)):
        if parsed[index].sequence <= parsed[index - 1].sequence:
            raise BadBatchError(f"records[{index}].sequence: expected sequences strictly increasing")
    return Batch(device_id, _count(batch["dropped"], "dropped"), _facts(batch["facts"]), parsed)


def _record(item: Any, path: str, latest: float) -> Record:
    entry = checked_object(item, path, ENTRY_KEYS, ENTRY_KEYS)
    sequence = _count(entry["sequence"], f"{path}.sequence")
    body = checked_object(entry["record"], f"{path}.record", RECORD_KEYS, RECORD_KEYS, lenient=True)
    path = f"{path}.record"
    time = _number(body["time"], f"{path}.time")
    if time <= 0:
        raise BadBatchError(f"{path}.time: expected unix seconds")
    if time > latest:
        raise BadBatchError(f"{path}.time: {time:.0f} is in the future (server clock: {latest:.0f} at most)")
    interval = _number(body["interval_s"], f"{path}.interval_s")
    if interval <= 0:
        raise BadBatchError(f"{path}.interval_s: expected a positive number")
    process_in = checked_object(body["process"], f"{path}.process", PROCESS_KEYS, PROCESS_KEYS, lenient=True)
    process = {key: _figure(process_in[key], f"{path}.process.{key}") for key in PROCESS_KEYS}
    models = body["models"]
    if not isinstance(models, list) or len(models) > MAX_MODELS:
        raise BadBatchError(f"{path}.models: expected a list of at most {MAX_MODELS} models")
    return Record(sequence, time, interval, process, _system(body["system"], f"{path}.system"),
                  tuple(_model(model, f"{path}.models[{index}]") for index, model in enumerate(models)))


def _system(value: Any, path: str) -> Dict[str, Any]:
    system = checked_object(value, path, SYSTEM_KEYS, SYSTEM_KEYS, lenient=True)
    out: Dict[str, Any] = {key: _figure(system[key], f"{path}.{key}")
                           for key in ("mem_total_mb", "mem_available_mb", "nvmap_mb", "gpu_load")}
    if out["gpu_load"] is not None and not 0 <= out["gpu_load"] <= 1:
        raise BadBatchError(f"{path}.gpu_load: expected a number in 0..1 or null")
    for key in ("temperatures_c", "power_mw"):
        named = system[key]
        if not isinstance(named, dict) or len(named) > MAX_NAMED_FIGURES:
            raise BadBatchError(f"{path}.{key}: expected a mapping of at most {MAX_NAMED_FIGURES} named numbers")
        out[key] = {_text(name, f"{path}.{key} key"): _number(figure, f"{path}.{key}.{name}")
                    for name, figure in named.items()}
    mode = system["power_mode"]
    out["power_mode"] = None if mode is None else _text(mode, f"{path}.power_mode")
    locked = system["clocks_locked"]
    if locked is not None and not isinstance(locked, bool):
        raise BadBatchError(f"{path}.clocks_locked: expected true, false or null")
    out["clocks_locked"] = locked
    return out


def _model(value: Any, path: str) -> ModelFigures:
    model = checked_object(value, path, MODEL_KEYS, MODEL_KEYS, lenient=True)
    return ModelFigures(
        name=_text(model["name"], f"{path}.name"), version=_text(model["version"], f"{path}.version"),
        backend=_text(model["backend"], f"{path}.backend"), memory_mb=_figure(model["memory_mb"], f"{path}.memory_mb"),
        requests=_count(model["requests"], f"{path}.requests"), failures=_count(model["failures"], f"{path}.failures"),
        p50_ms=_figure(model["p50_ms"], f"{path}.p50_ms"), p99_ms=_figure(model["p99_ms"], f"{path}.p99_ms"),
        histogram=_histogram(model["histogram"], f"{path}.histogram"),
    )


def _histogram(value: Any, path: str) -> Optional[Dict[str, List[float]]]:
    if value is None:
        return None
    histogram = checked_object(value, path, HISTOGRAM_KEYS, HISTOGRAM_KEYS, lenient=True)
    bounds, counts = histogram["bounds_ms"], histogram["counts"]
    if not isinstance(bounds, list) or not 1 <= len(bounds) <= MAX_BOUNDS:
        raise BadBatchError(f"{path}.bounds_ms: expected a list of 1..{MAX_BOUNDS} numbers")
    edges = [_number(bound, f"{path}.bounds_ms[{index}]") for index, bound in enumerate(bounds)]
    if any(later <= earlier for earlier, later in zip(edges, edges[1:])) or edges[0] <= 0:
        raise BadBatchError(f"{path}.bounds_ms: expected positive, strictly increasing bounds")
    if not isinstance(counts, list) or len(counts) != len(edges) + 1:
        raise BadBatchError(f"{path}.counts: expected a list of len(bounds_ms) + 1 counts")
    checked: List[float] = [_count(count, f"{path}.counts[{index}]") for index, count in enumerate(counts)]
    return {"bounds_ms": edges, "counts": checked}


def _facts(value: Any) -> Dict[str, Any]:
    if not isinstance(value, dict) or len(value) > MAX_FACTS:
        raise BadBatchError(f"facts: expected a mapping of at most {MAX_FACTS} entries")
    facts: Dict[str, Any] = {}
    for key, fact in value.items():
        _text(key, "facts key")
        if fact is not None and not isinstance(fact, (str, int, float, bool)):
            raise BadBatchError(f"facts.{key}: expected text, a number, true/false or null")
        if isinstance(fact, str) and len(fact) > 256:
            raise BadBatchError(f"facts.{key}: expected at most 256 characters")
        facts[key] = fact
    return facts


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
        raise BadBatchError(f"{path}: expected text of 1..{MAX_TEXT} characters")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadBatchError(f"{path}: expected a finite number")
    return float(value)


def _figure(value: Any, path: str) -> Optional[float]:
    """A non-negative measurement, or null when the device could not measure it."""
    if value is None:
        return None
    number = _number(value, path)
    if number < 0:
        raise BadBatchError(f"{path}: expected a number >= 0 or null")
    return number


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQUENCE:
        raise BadBatchError(f"{path}: expected an integer in 0..2^63-1")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
