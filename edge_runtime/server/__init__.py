"""The device's HTTP server: a KServe v2 / Triton-compatible API over the serving layer."""
