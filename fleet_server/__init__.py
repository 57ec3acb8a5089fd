"""The central fleet server: devices, tokens, telemetry ingest, history, dashboard (not device code)."""
