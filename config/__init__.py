"""Typed settings: defaults < config/development.yaml < config/local.yaml < --config file
< environment (RDP_*) < command-line flags."""

__all__ = ["Settings", "load_settings"]


def __getattr__(name: str):
    """`from config import Settings` still works; importing `config.commands` (help screens)
    does not load pydantic and the settings' models."""
    if name in __all__:
        from config import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'config' has no attribute {name!r}")
