"""The object every command receives: settings (loaded lazily) and the warehouse engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # both load on first use: help screens and cached answers need neither SQLAlchemy nor all of the settings' models
    from sqlalchemy import Engine

    from config.settings import Settings


@dataclass
class AppContext:
    """Global options of the root command, and what they produce on first use."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    _settings: Settings | None = None
    _engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from config.settings import load_settings

            self._settings = load_settings(self.config_file, self.overrides)
            for warning in self._settings.warnings:
                click.echo(f"Warning: {warning}", err=True)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from database.engine import make_engine

            self._engine = make_engine(self.settings.database)
        return self._engine

    def close(self) -> None:
        """Release pooled connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
