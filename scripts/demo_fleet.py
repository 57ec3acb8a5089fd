"""Print what the central fleet server knows of one device: the demo's last step (scripts/demo.sh)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the fleet server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token-file", type=Path, required=True, help="an operator token")
    parser.add_argument("--device", required=True)
    args = parser.parse_args()
    token = args.token_file.read_text().strip()
    devices = {d["device_id"]: d for d in get(f"{args.url}/api/v1/devices", token)}
    device = devices.get(args.device)
    if device is None:
        print(f"fleet server: no device {args.device!r} (devices: {', '.join(devices) or 'none'})", file=sys.stderr)
        return 1
    now = time.time()
    history = get(f"{args.url}/api/v1/devices/{args.device}/history?since={now - 600:.0f}&until={now + 60:.0f}", token)
    points = history["points"]
    print(f"fleet server {args.url}: device {args.device} {'online' if device['online'] else 'OFFLINE'}, "
          f"history: {len(points)} point(s) at {history['resolution']} resolution, dropped {device['dropped']}")
    print(f"  memory now: rss {device['rss_mb']:.0f} MiB, available {device['mem_available_mb']:.0f} MiB")
    for model in device["models"]:
        served = [p["models"][model["name"]] for p in points if p["models"].get(model["name"], {}).get("requests")]
        busiest = max(served, key=lambda m: m["requests"], default=None)
        latency = (f"p50 {busiest['p50_ms']:.2f} ms, p99 {busiest['p99_ms']:.2f} ms at its busiest point"
                   if busiest else "no requests yet")
        print(f"  model {model['name']} v{model['version']} ({model['backend']}): "
              f"{sum(m['requests'] for m in served)} requests in the history; {latency}")
    print(f"  dashboard: {args.url}/ (operator token in the token file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
