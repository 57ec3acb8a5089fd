"""The agent: the device's network side (uploads the telemetry spool to the central fleet server)."""
