"""Typed settings: defaults < config/development.yaml < config/local.yaml < --config file
< environment (RDP_*) < command-line flags (config/settings.py). Nothing is imported here, so
that importing config.commands for a help screen does not load pydantic."""
