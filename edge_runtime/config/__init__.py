"""Configuration: device configs (what a target is) and runtime settings (how the server runs)."""

from edge_runtime.config.device import (
    BACKENDS,
    CALIBRATION_METHODS,
    PRECISIONS,
    QUANT_SCHEMES,
    BatchProfile,
    DeviceConfig,
    QuantizationSettings,
    device_config_from_mapping,
    load_device_config,
)
from edge_runtime.config.runtime import (
    RESTRICTABLE_GROUPS,
    BatchingSettings,
    HttpSettings,
    LimitSettings,
    RestrictedApi,
    RuntimeSettings,
    SharedMemorySettings,
    load_runtime_settings,
    runtime_settings_from_mapping,
)

__all__ = [
    "BACKENDS",
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "QUANT_SCHEMES",
    "RESTRICTABLE_GROUPS",
    "BatchProfile",
    "BatchingSettings",
    "DeviceConfig",
    "HttpSettings",
    "LimitSettings",
    "QuantizationSettings",
    "RestrictedApi",
    "RuntimeSettings",
    "SharedMemorySettings",
    "device_config_from_mapping",
    "load_device_config",
    "load_runtime_settings",
    "runtime_settings_from_mapping",
]
