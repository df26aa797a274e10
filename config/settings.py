"""Settings models and the layered loader.

Every setting has a default, a type and a one-line description (the `description` of its
field, shown by `config show`). Unknown keys and bad values are reported with the file (or
environment variable) and the dotted key name.
"""

from __future__ import annotations

import difflib
import os
import stat
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from config.cache import CacheSettings
from utils.errors import ConfigError
from utils.urls import has_secret, is_secret_key
from utils.vocabulary import SOURCE_COLUMNS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_FILES = (CONFIG_DIR / "development.yaml", CONFIG_DIR / "local.yaml")
ENV_PREFIX = "RDP_"
# libyaml's loader when PyYAML was built with it: the same safe loader, about ten times faster
# (every command reads config/development.yaml first).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YAML_LOADER)


def source_columns(value: list[str]) -> list[str]:
    """A setting that names source columns: each must be one of the source layout's."""
    unknown = [v for v in value if v not in SOURCE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(SOURCE_COLUMNS)}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatabaseSettings(_Section):
    url: str = Field(
        "sqlite:///data/warehouse.db",
        description="SQLAlchemy URL of the warehouse; a relative SQLite path is relative to the project folder",
    )
    pool_size: int = Field(5, ge=1, le=200, description="connections kept open in the pool (PostgreSQL)")
    max_overflow: int = Field(10, ge=0, le=500, description="extra connections allowed above pool_size (PostgreSQL)")
    pool_timeout_s: float = Field(30.0, gt=0, description="seconds to wait for a free pooled connection")
    pool_pre_ping: bool = Field(True, description="test a pooled connection before using it")
    connect_timeout_s: int = Field(10, ge=1, description="seconds to wait when opening a connection")
    lock_timeout_s: float = Field(600.0, ge=0, description="seconds a second ETL run waits for the warehouse lock before failing")
    sqlite_busy_timeout_s: float = Field(30.0, ge=0, description="seconds SQLite waits on a locked database file")


_DISTRIBUTION_REFUSED = {
    "customer_key": "loads and rollbacks UPDATE fact_sales.customer_key (the SCD2 re-point) and Citus cannot change a "
    "distribution column; agg_daily_product has no customer_key to be co-located by",
    "product_key": "the exactly-once key (date_key, line_id) and the daily aggregates' keys do not contain it",
}


class WarehouseSettings(_Section):
    distributed: Literal["none", "citus"] = Field(
        "none",
        description="none: one PostgreSQL (or SQLite) database; citus: `setup` makes the dimensions reference tables and "
        "distributes fact_sales (docs/citus.md)",
    )
    distribution_column: Literal["date_key"] = Field(
        "date_key", description="column fact_sales and its daily aggregates are distributed by on Citus (only date_key: docs/citus.md)"
    )

    @field_validator("distribution_column", mode="before")
    @classmethod
    def _distributable(cls, value: Any) -> Any:
        if value in _DISTRIBUTION_REFUSED:
            raise ValueError(f"fact_sales cannot be distributed by {value}: {_DISTRIBUTION_REFUSED[value]}; use date_key")
        return value


class EtlSettings(_Section):
    chunk_size: int = Field(50_000, ge=100, le=5_000_000, description="rows read and cleaned per chunk (memory grows with it)")
    encoding: Literal["auto", "utf-8", "cp1252", "latin-1"] = Field(
        "auto", description="source text encoding; auto tries UTF-8, then Windows-1252, then Latin-1"
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="field separator of CSV sources")
    decimal: Literal[".", ","] = Field(".", description="decimal separator of UnitPrice in the source")
    date_formats: list[str] = Field(
        default_factory=lambda: ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M"],
        min_length=1,
        description="InvoiceDate formats tried in order (strptime codes)",
    )
    engine: Literal["pandas", "dask"] = Field(
        "pandas", description="pandas: this process reads and cleans; dask: Dask workers read and clean partitions (docs/scaling.md)"
    )
    dask_workers: int = Field(2, ge=1, le=256, description="engine dask without a scheduler: worker processes of the local cluster")
    dask_scheduler: str | None = Field(
        None, description="engine dask: address of a running Dask scheduler (tcp://host:8786); empty starts a local cluster"
    )
    dask_connect_timeout_s: float = Field(10.0, gt=0, description="engine dask: seconds to reach the scheduler and its first worker")


class SourceLayout(_Section):
    columns: dict[str, str] = Field(default_factory=dict, description="canonical column -> header in this source, e.g. UnitPrice: Preis")
    date_formats: list[str] | None = Field(None, description="InvoiceDate formats of this source (default: etl.date_formats)")
    encoding: Literal["auto", "utf-8", "cp1252", "latin-1"] | None = Field(None, description="text encoding of this source")
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="field separator of this source")
    decimal: Literal[".", ","] | None = Field(None, description="decimal separator of this source")


class RuleSettings(_Section):
    required_fields: list[str] = Field(
        default_factory=lambda: ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country"],
        description="columns that must be present and non-empty in every row",
    )
    reject_zero_quantity: bool = Field(True, description="quarantine rows whose Quantity is 0")
    reject_non_positive_price: bool = Field(True, description="quarantine rows whose UnitPrice is 0 or negative")
    price_exempt_invoice_prefixes: list[str] = Field(
        default_factory=lambda: ["A"], description="invoice prefixes exempt from the price rule (bad-debt adjustments)"
    )
    price_exempt_stock_codes: list[str] = Field(default_factory=lambda: ["B"], description="stock codes exempt from the price rule")
    reject_duplicates: bool = Field(True, description="quarantine rows that repeat an earlier row of the same source in all eight fields")
    max_abs_quantity: int = Field(
        1_000_000,
        ge=1,
        le=2_147_483_647,
        description="|Quantity| above this is quarantined as out of range (at most the INTEGER column's range)",
    )
    max_unit_price: float = Field(
        1_000_000.0, gt=0, le=999_999_999_999, description="|UnitPrice| above this is quarantined as out of range (at most NUMERIC(18, 3))"
    )
    min_date: date = Field(date(1990, 1, 1), description="transactions before this date are quarantined as out of range")
    max_future_days: int = Field(1, ge=0, description="transactions more than this many days in the future are quarantined")

    @field_validator("required_fields")
    @classmethod
    def _known_columns(cls, value: list[str]) -> list[str]:
        return source_columns(value)


class ProductSettings(_Section):
    non_merchandise_codes: dict[str, str] = Field(
        default_factory=lambda: {
            "POST": "postage",
            "DOT": "postage",
            "C2": "postage",
            "M": "adjustment",
            "D": "adjustment",
            "S": "adjustment",
            "B": "adjustment",
            "ADJUST": "adjustment",
            "ADJUST2": "adjustment",
            "BANK CHARGES": "fee",
            "AMAZONFEE": "fee",
            "PADS": "fee",
            "CRUK": "charity",
        },
        description="stock codes (upper case) that are not goods, with their category",
    )
    non_merchandise_prefixes: dict[str, str] = Field(
        default_factory=lambda: {"GIFT_": "voucher", "DCGS": "other"},
        description="stock-code prefixes (upper case) that are not goods, with their category",
    )


class CheckOverride(_Section):
    threshold: float | None = Field(None, ge=0, le=1, description="pass when the check's score is at least this")
    blocking: bool | None = Field(None, description="a failure fails the run (true) or only warns (false)")


class QualitySettings(_Section):
    completeness: float = Field(0.95, ge=0, le=1, description="minimum completeness score (share of non-null required values)")
    validity: float = Field(0.90, ge=0, le=1, description="minimum validity score (formats and domains)")
    uniqueness: float = Field(0.99, ge=0, le=1, description="minimum uniqueness score")
    accuracy: float = Field(0.85, ge=0, le=1, description="minimum accuracy score (business rules)")
    consistency: float = Field(1.0, ge=0, le=1, description="minimum consistency score (keys resolve, SCD2 ranges sound)")
    anomaly: float = Field(
        0.10,
        ge=0,
        le=1,
        description="relative move of a metric against the median of its history that counts as an anomaly (from the second run)",
    )
    anomaly_z: float = Field(3.5, gt=0, description="robust z-score beyond which a metric is anomalous")
    anomaly_window: int = Field(20, ge=3, le=1000, description="runs of history a metric is compared with")
    anomaly_min_history: int = Field(
        5, ge=2, description="earlier runs from which the robust z-score joins the relative-change rule (and judges reject rates, revenue)"
    )
    volume_factor: float = Field(
        3.0, gt=1, description="a run reading below 1/this or above this times its feed's usual rows raises a volume alert"
    )
    schema_drift: bool = Field(True, description="alert when a feed's header changes (a column added or gone, another name variant)")
    new_value_columns: list[str] = Field(
        default_factory=lambda: ["Country"],
        description="low-cardinality columns whose values never seen before are reported in the run summary and the quality report",
    )
    freshness_max_age_days: float = Field(
        2.0, gt=0, description="a job (for manual runs: any load) whose last successful load is older than this many days is stale"
    )
    data_recency_max_age_days: float | None = Field(
        None, gt=0, description="switch on the data-recency check: a newest transaction older than this many days is stale; empty: off"
    )
    data_start: date = Field(date(2009, 1, 1), description="transactions before this date fail the accuracy check")
    on_failure: Literal["fail", "warn"] = Field(
        "fail", description="a failing blocking check fails the run (fail) or is only reported (warn)"
    )
    sample_size: int = Field(5, ge=0, le=100, description="offending values kept with each failing check")
    checks: dict[str, CheckOverride] = Field(default_factory=dict, description="per-check overrides by check name: threshold, blocking")

    @field_validator("new_value_columns")
    @classmethod
    def _known_value_columns(cls, value: list[str]) -> list[str]:
        return source_columns(value)


class AlertChannel(_Section):
    name: str = Field(..., min_length=1, description="channel name used by `alerts test --channel`")
    type: Literal["log", "file", "webhook", "email"] = Field(..., description="log, file (JSON lines), webhook (HTTP POST) or email (SMTP)")
    min_severity: Literal["info", "warning", "critical"] = Field("warning", description="lowest severity sent on this channel")
    path: str | None = Field(None, description="file channel: JSON-lines file")
    url: str | None = Field(None, description="webhook channel: URL to POST to")
    timeout_s: float = Field(5.0, gt=0, description="webhook/email: network timeout")
    smtp_host: str | None = Field(None, description="email channel: SMTP server")
    smtp_port: int = Field(25, ge=1, le=65535, description="email channel: SMTP port")
    sender: str | None = Field(None, description="email channel: From address")
    recipients: list[str] = Field(default_factory=list, description="email channel: To addresses")


class AlertSettings(_Section):
    channels: list[AlertChannel] = Field(
        default_factory=lambda: [AlertChannel(name="log", type="log")], description="where alerts are sent"
    )
    cooldown_minutes: float = Field(60.0, ge=0, description="the same alert is not sent again within this time")
    max_retries: int = Field(3, ge=0, le=20, description="retries of a failing channel (with backoff) before giving up")


class SchedulerSettings(_Section):
    pid_file: str = Field("data/scheduler.pid", description="PID file of the scheduler daemon (relative to the project folder)")
    max_retries: int = Field(3, ge=0, le=50, description="retries of a job after a transient failure (database unreachable)")
    retry_backoff_s: float = Field(5.0, ge=0, description="first retry delay in seconds; doubles on each retry")
    catch_up: Literal["once", "skip"] = Field(
        "once", description="a run missed while the daemon was down: run it once at start-up, or skip it"
    )
    settle_seconds: float = Field(2.0, ge=0, description="a dropped file whose size changed within this time is still being written: wait")
    archive_dir: str | None = Field(
        None, description="move files loaded by folder jobs here (relative to the project folder); empty keeps them"
    )
    reload_check_s: float = Field(
        5.0, gt=0, le=3600, description="the daemon's idle tick: seconds between its looks at scheduled_jobs for changed jobs"
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="console log level")
    file: str = Field("logs/rdp.log", description="JSON-lines log file (relative to the project folder); empty to disable")


class Settings(_Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    etl: EtlSettings = Field(default_factory=EtlSettings)
    sources: dict[str, SourceLayout] = Field(default_factory=dict, description="named source layouts for `etl --layout NAME`")
    rules: RuleSettings = Field(default_factory=RuleSettings)
    products: ProductSettings = Field(default_factory=ProductSettings)
    quality_rules: QualitySettings = Field(default_factory=QualitySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Problems found while loading that do not stop the platform (a config file others can read)."""
        return self._warnings

    def resolve_path(self, value: str) -> Path:
        """A path setting made absolute against the project folder."""
        path = Path(value)
        return path if path.is_absolute() else PROJECT_ROOT / path


def _dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _dotted_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _dotted_keys(Settings), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one YAML settings file; a missing, unreadable or non-mapping file is a ConfigError."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; check the --config path")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass a YAML file")
    try:
        data = _yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file; save it as UTF-8 YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (database:, etl:, ...), got {type(data).__name__}")
    validate_layer(data, str(path))
    return data


def credentials_in(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of `data` that hold a credential: a URL with a password or secret parameter,
    or a key named like a secret (password, token, api_key, …) with a value."""
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in credentials_in(value, f"{prefix}{key}.")]
    if isinstance(data, list):
        return [k for i, value in enumerate(data) for k in credentials_in(value, f"{prefix}{i}.")]
    key = prefix.rstrip(".")
    return [key] if has_secret(data) or (data not in (None, "") and is_secret_key(key.rsplit(".", 1)[-1])) else []


def exposure_warning(path: Path, data: dict[str, Any]) -> str | None:
    """The warning for a settings file that holds credentials and is readable by group or others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    secrets = credentials_in(data)
    if not secrets or not mode & 0o077:
        return None
    return (
        f"config file {path} holds credentials ({', '.join(secrets)}) and is readable by other users (mode {mode:o}); "
        f"restrict it: chmod 600 {path}"
    )


def _env_layer(environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from RDP_SECTION__KEY variables (plus the RDP_DATABASE_URL shortcut)."""
    layer: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "RDP_CONFIG":
            continue
        if name == "RDP_DATABASE_URL":
            dotted = "database.url"
            value: Any = raw
        elif "__" in name:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            value = raw if dotted == "database.url" else _yaml(raw) if raw.strip() else raw
        else:
            continue
        section, _, key = dotted.partition(".")
        layer.setdefault(section, {})[key] = value
        origins[dotted] = f"environment variable {name}"
    return layer, origins


def validate_layer(data: dict[str, Any], origin: str) -> None:
    """Check one layer for unknown keys and bad values, naming `origin` and the key."""
    try:
        Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _describe(exc: ValidationError, origin: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'{_suggest(key)}")
        else:
            problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return f"{origin}: " + "; ".join(problems)


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    default_files: tuple[Path, ...] = DEFAULT_FILES,
) -> Settings:
    """Build the effective settings from every layer, later layers winning."""
    environ = dict(os.environ) if environ is None else environ
    merged: dict[str, Any] = {}
    files = [p for p in default_files if p.exists()]
    extra = config_file or (Path(environ["RDP_CONFIG"]) if environ.get("RDP_CONFIG") else None)
    if extra is not None:
        files.append(extra)
    warnings = []
    for path in files:
        data = read_config_file(path)
        warnings += [w for w in [exposure_warning(path, data)] if w]
        merged = _deep_merge(merged, data)
    env_layer, origins = _env_layer(environ)
    for dotted, origin in origins.items():
        section, _, key = dotted.partition(".")
        validate_layer({section: {key: env_layer[section][key]}}, origin)
    merged = _deep_merge(merged, env_layer)
    merged = _deep_merge(merged, overrides or {})
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "command-line options")) from None
    settings._warnings = warnings
    return settings


def masked(value: Any, key: str = "") -> Any:
    """A settings value as it may be shown: URL passwords and secret parameters, and values of
    keys named like a secret, replaced by ***, inside lists and mappings too."""
    from utils.urls import mask_url

    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if value not in (None, "") and is_secret_key(key):
        return "***"
    return mask_url(value) if isinstance(value, str) else value


def describe_settings(settings: Settings) -> list[dict[str, Any]]:
    """Every setting as a row: dotted name, effective value (secrets masked), description."""
    rows = []
    for section_name, section_field in Settings.model_fields.items():
        section = getattr(settings, section_name)
        if not isinstance(section, BaseModel):
            plain_map = {k: v.model_dump(mode="json", exclude_none=True) for k, v in section.items()}
            rows.append({"setting": section_name, "value": masked(plain_map), "description": section_field.description or ""})
            continue
        plain = section.model_dump(mode="json")
        for key, field_info in type(section).model_fields.items():
            rows.append({"setting": f"{section_name}.{key}", "value": masked(plain[key], key), "description": field_info.description or ""})
    return rows
