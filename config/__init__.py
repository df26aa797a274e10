"""Typed settings: defaults < config/development.yaml < config/local.yaml < --config file
< environment (RDP_*) < command-line flags."""

from config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
