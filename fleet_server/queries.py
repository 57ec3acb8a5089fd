"""What operators read: the device list and a device's history at sample, minute or hour resolution.

The device list is one query over ``devices`` (each row keeps its latest record's figures). History
picks the finest resolution that still covers the range (raw samples are kept ``raw_days``,
per-minute rollups ``minute_days``) unless asked; coarse points combine stored rollups with
finer data of the same buckets aggregated on the fly, so a range that spans the retention
boundary has no gap.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional

from sqlalchemy import Connection, select

from fleet_server.aggregation import BucketAggregate, Row, bucket_start
from fleet_server.errors import BadBatchError, DeviceNotFoundError
from fleet_server.models import Device, ModelRollup, ModelSample, Rollup, Sample
from fleet_server.settings import FleetSettings

RESOLUTIONS = ("sample", "minute", "hour")
DAY = 86400.0
SAMPLE_SPAN_S = 6 * 3600.0  # auto resolution: raw samples for ranges up to 6 h
MINUTE_SPAN_S = 14 * DAY  # per-minute points up to 14 days; hours beyond
SAMPLE_COLUMNS = (Sample.id, Sample.time, Sample.rss_mb, Sample.rss_peak_mb, Sample.cpu_percent,
                  Sample.mem_total_mb, Sample.mem_available_mb, Sample.nvmap_mb, Sample.gpu_load)
MODEL_COLUMNS = (ModelSample.sample_id, ModelSample.name, ModelSample.version, ModelSample.backend,
                 ModelSample.memory_mb, ModelSample.requests, ModelSample.failures, ModelSample.p50_ms,
                 ModelSample.p99_ms, ModelSample.histogram)
MODEL_ROLLUP_COLUMNS = (ModelRollup.bucket, ModelRollup.name, ModelRollup.version, ModelRollup.backend,
                        ModelRollup.samples, ModelRollup.requests, ModelRollup.failures, ModelRollup.memory_mb_sum,
                        ModelRollup.memory_mb_n, ModelRollup.p99_ms_max, ModelRollup.histogram)


def list_devices(connection: Connection, now: float, online_after_s: Optional[float]) -> List[Dict[str, Any]]:
    """Every enrolled device with its latest figures, ordered by device id."""
    rows = connection.execute(select(Device.device_id, Device.last_seen, Device.dropped, Device.facts,
                                     Device.summary).order_by(Device.device_id))
    devices = []
    for device_id, last_seen, dropped, facts, summary in rows:
        summary = summary or {}
        window = online_after_s if online_after_s is not None else 3 * float(summary.get("interval_s") or 0)
        devices.append({
            "device_id": device_id, "last_seen": last_seen,
            "online": last_seen is not None and now - last_seen <= window,
            "dropped": dropped, "facts": facts or {}, "rss_mb": summary.get("rss_mb"),
            "mem_available_mb": summary.get("mem_available_mb"), "nvmap_mb": summary.get("nvmap_mb"),
            "models": summary.get("models", []),
        })
    return devices


def choose_resolution(settings: FleetSettings, since: float, until: float, now: float) -> str:
    """The finest resolution whose data still covers ``since`` and whose point count stays modest."""
    retention = settings.retention
    span = until - since
    if since >= now - retention.raw_days * DAY and span <= SAMPLE_SPAN_S:
        return "sample"
    if since >= now - retention.minute_days * DAY and span <= MINUTE_SPAN_S:
        return "minute"
    return "hour"


def device_history(connection: Connection, device_id: str, since: float, until: float, resolution: str,
                   max_points: int) -> Dict[str, Any]:
    """A device's points in [since, until] at ``resolution`` (the latest ``max_points`` of them)."""
    if resolution not in RESOLUTIONS:
        raise BadBatchError(f"resolution: expected one of {', '.join(RESOLUTIONS)}")
    if until < since:
        raise BadBatchError("until: expected a time after since")
    row = connection.execute(select(Device.id).where(Device.device_id == device_id)).first()
    if row is None:
        raise DeviceNotFoundError(f"no enrolled device {device_id!r}")
    device_pk = int(row[0])
    if resolution == "sample":
        points = _sample_points(connection, device_pk, since, until, max_points)
    else:
        buckets = aggregate_range(connection, device_pk, since, until, resolution)
        points = [buckets[start].point(start) for start in sorted(buckets)][-max_points:]
    return {"device_id": device_id, "resolution": resolution, "points": points}


def _sample_points(connection: Connection, device_pk: int, since: float, until: float, limit: int
                   ) -> List[Dict[str, Any]]:
    samples = list(connection.execute(
        select(*SAMPLE_COLUMNS).where(Sample.device_pk == device_pk, Sample.time >= since, Sample.time <= until)
        .order_by(Sample.time.desc()).limit(limit)).mappings())
    samples.reverse()
    models = _model_rows(connection, device_pk, samples[0]["time"], samples[-1]["time"]) if samples else {}
    points = []
    for sample in samples:
        point = {key: sample[key] for key in ("time", "rss_mb", "mem_available_mb", "nvmap_mb", "gpu_load")}
        point["models"] = {row["name"]: {"version": row["version"], "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"],
                                         "requests": row["requests"], "memory_mb": row["memory_mb"]}
                           for row in models.get(sample["id"], [])}
        points.append(point)
    return points


def _model_rows(connection: Connection, device_pk: int, since: float, until: float
                ) -> Dict[int, List[Row]]:
    by_sample: Dict[int, List[Row]] = defaultdict(list)
    rows = connection.execute(select(*MODEL_COLUMNS).where(
        ModelSample.device_pk == device_pk, ModelSample.time >= since, ModelSample.time <= until)).mappings()
    for row in rows:
        by_sample[int(row["sample_id"])].append(row)
    return by_sample


def aggregate_range(connection: Connection, device_pk: int, since: float, until: float, resolution: str
                    ) -> Dict[float, BucketAggregate]:
    """Buckets of ``resolution`` over [since, until]: stored rollups merged with finer data aggregated now."""
    buckets: Dict[float, BucketAggregate] = defaultdict(BucketAggregate)
    samples = list(connection.execute(select(*SAMPLE_COLUMNS).where(
        Sample.device_pk == device_pk, Sample.time >= since, Sample.time <= until)).mappings())
    models = _model_rows(connection, device_pk, since, until) if samples else {}
    for sample in samples:
        buckets[bucket_start(sample["time"], resolution)].add_sample(sample, models.get(int(sample["id"]), []))
    finer = ("minute", "hour") if resolution == "hour" else ("minute",)
    for stored_resolution in finer:
        for start, aggregate in stored_rollups(connection, device_pk, stored_resolution, since, until).items():
            buckets[bucket_start(start, resolution)].merge(aggregate)
    return dict(buckets)


def stored_rollups(connection: Connection, device_pk: int, resolution: str, since: float, until: float
                   ) -> Dict[float, BucketAggregate]:
    """The device's stored rollups of ``resolution`` whose bucket starts in [since, until]."""
    rollups = list(connection.execute(select(Rollup.bucket, Rollup.samples, Rollup.figures).where(
        Rollup.device_pk == device_pk, Rollup.resolution == resolution,
        Rollup.bucket >= since, Rollup.bucket <= until)))
    if not rollups:
        return {}
    by_bucket: Dict[float, List[Row]] = defaultdict(list)
    for row in connection.execute(select(*MODEL_ROLLUP_COLUMNS).where(
            ModelRollup.device_pk == device_pk, ModelRollup.resolution == resolution,
            ModelRollup.bucket >= since, ModelRollup.bucket <= until)).mappings():
        by_bucket[float(row["bucket"])].append(row)
    return {float(bucket): BucketAggregate.from_stored(int(samples), figures, by_bucket.get(float(bucket), []))
            for bucket, samples, figures in rollups}

