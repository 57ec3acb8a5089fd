"""JSON request parsing: orjson (what the server uses) vs the standard library, time and transient memory.

The body is a KServe v2 inference request carrying one ResNet-sized FP32 input (150,528 numbers)
in its ``data`` list, encoded two ways: as tritonclient does (``json.dumps`` of a Python list:
float64 text, ~3.1 MB) and with orjson from the float32 array (shortest float32 text, ~1.6 MB).
Each parser runs on each body in interleaved rounds; peak memory is tracemalloc's peak over one
parse (Python allocations, including the parsers' working buffers, which both allocate through
Python's allocator). It backs the trade-off stated in edge_runtime/server/json_body.py.

    python scripts/bench/json_parse_bench.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import orjson

SHAPE = (1, 3, 224, 224)


def _bodies() -> Dict[str, bytes]:
    values = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32).ravel()
    tensor = {"name": "input", "shape": list(SHAPE), "datatype": "FP32"}
    return {
        "json.dumps of a list (tritonclient)": json.dumps({"inputs": [dict(tensor, data=values.tolist())]}).encode(),
        "orjson of the float32 array": orjson.dumps({"inputs": [dict(tensor, data=values)]},
                                                    option=orjson.OPT_SERIALIZE_NUMPY),
    }


def _peak(parse: Callable[[bytes], Any], body: bytes) -> int:
    tracemalloc.start()
    try:
        parse(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    parsers: Dict[str, Callable[[bytes], Any]] = {"orjson": orjson.loads, "json (stdlib)": json.loads}
    bodies = _bodies()
    times: Dict[Tuple[str, str], List[float]] = {(b, p): [] for b in bodies for p in parsers}
    for _ in range(args.rounds):
        for body_name, body in bodies.items():
            for parser_name, parse in parsers.items():
                started = time.perf_counter()
                parse(body)
                times[(body_name, parser_name)].append(time.perf_counter() - started)
    print(f"`python scripts/bench/json_parse_bench.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
          + f" — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} rounds, interleaved.\n")
    print("| body | MB | parser | p50 ms | peak MB | peak / body |\n|---|---:|---|---:|---:|---:|")
    for (body_name, parser_name), values in times.items():
        body = bodies[body_name]
        peak = _peak(parsers[parser_name], body)
        print(f"| {body_name} | {len(body) / 1e6:.2f} | {parser_name} | {statistics.median(values) * 1e3:.2f} "
              f"| {peak / 1e6:.1f} | {peak / len(body):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
