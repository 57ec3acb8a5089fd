"""Telemetry on the device: collectors of process, system and per-model figures, and the sampler thread.

``sampler.start_sampler`` is what the composition root calls: it builds a Record (the contract in
``record.py``) every interval on its own thread and hands it to a sink (the spool's ``append``).
The Jetson readers (``jetson.py``, ``power_rails.py``) read procfs/sysfs under a configurable root,
so tests run them on recorded board trees (tests/fixtures/jetson/).
"""
