"""Settings sections and the layered loader.

Every setting has a default, a type and a one-line description (the `doc` of its field, shown
by `config show`). Unknown keys and bad values are reported with the file (or environment
variable) and the dotted key name. Sections are frozen dataclasses (config/sections.py):
pydantic validates what the layers give, and a snapshot of the result spares the next command
with the same layers that work (config/snapshot.py).
"""

from __future__ import annotations

import difflib
import os
import stat
import sys
from dataclasses import field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, MaxLen, MinLen

from config import snapshot
from config.cache import CacheSettings
from config.sections import Check, doc_of, is_section, section, setting, setting_names, validate
from utils.errors import ConfigError
from utils.urls import has_secret, is_secret_key
from utils.vocabulary import SOURCE_COLUMNS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_FILES = (CONFIG_DIR / "development.yaml", CONFIG_DIR / "local.yaml")
ENV_PREFIX = "RDP_"
if TYPE_CHECKING:
    from pydantic import ValidationError


def _yaml(text: str) -> Any:
    import yaml  # only when the layers are read: not when a snapshot answers

    # libyaml's loader when PyYAML was built with it: the same safe loader, faster.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def source_columns(value: list[str]) -> list[str]:
    """A setting that names source columns: each must be one of the source layout's."""
    unknown = [v for v in value if v not in SOURCE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(SOURCE_COLUMNS)}")
    return value


@section
class DatabaseSettings:
    url: str = setting(
        "sqlite:///data/warehouse.db", doc="SQLAlchemy URL of the warehouse; a relative SQLite path is relative to the project folder"
    )
    pool_size: Annotated[int, Ge(1), Le(200)] = setting(5, doc="connections kept open in the pool (PostgreSQL)")
    max_overflow: Annotated[int, Ge(0), Le(500)] = setting(10, doc="extra connections allowed above pool_size (PostgreSQL)")
    pool_timeout_s: Annotated[float, Gt(0)] = setting(30.0, doc="seconds to wait for a free pooled connection")
    pool_pre_ping: bool = setting(True, doc="test a pooled connection before using it")
    connect_timeout_s: Annotated[int, Ge(1)] = setting(10, doc="seconds to wait when opening a connection")
    lock_timeout_s: Annotated[float, Ge(0)] = setting(600.0, doc="seconds a second ETL run waits for the warehouse lock before failing")
    sqlite_busy_timeout_s: Annotated[float, Ge(0)] = setting(30.0, doc="seconds SQLite waits on a locked database file")


_DISTRIBUTION_REFUSED = {
    "customer_key": "loads and rollbacks UPDATE fact_sales.customer_key (the SCD2 re-point) and Citus cannot change a "
    "distribution column; agg_daily_product has no customer_key to be co-located by",
    "product_key": "the exactly-once key (date_key, line_id) and the daily aggregates' keys do not contain it",
}


def _distributable(value: Any) -> Any:
    if value in _DISTRIBUTION_REFUSED:
        raise ValueError(f"fact_sales cannot be distributed by {value}: {_DISTRIBUTION_REFUSED[value]}; use date_key")
    return value


@section
class WarehouseSettings:
    distributed: Literal["none", "citus"] = setting(
        "none",
        doc="none: one PostgreSQL (or SQLite) database; citus: `setup` makes the dimensions reference tables and "
        "distributes fact_sales (docs/citus.md)",
    )
    distribution_column: Annotated[Literal["date_key"], Check(_distributable, before=True)] = setting(
        "date_key", doc="column fact_sales and its daily aggregates are distributed by on Citus (only date_key: docs/citus.md)"
    )


@section
class EtlSettings:
    chunk_size: Annotated[int, Ge(100), Le(5_000_000)] = setting(50_000, doc="rows read and cleaned per chunk (memory grows with it)")
    encoding: Literal["auto", "utf-8", "cp1252", "latin-1"] = setting(
        "auto", doc="source text encoding; auto tries UTF-8, then Windows-1252, then Latin-1"
    )
    delimiter: Annotated[str, MinLen(1), MaxLen(1)] = setting(",", doc="field separator of CSV sources")
    decimal: Literal[".", ","] = setting(".", doc="decimal separator of UnitPrice in the source")
    date_formats: Annotated[list[str], MinLen(1)] = setting(
        factory=lambda: ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M"], doc="InvoiceDate formats tried in order (strptime codes)"
    )
    engine: Literal["pandas", "dask"] = setting(
        "pandas", doc="pandas: this process reads and cleans; dask: Dask workers read and clean partitions (docs/scaling.md)"
    )
    dask_workers: Annotated[int, Ge(1), Le(256)] = setting(2, doc="engine dask without a scheduler: worker processes of the local cluster")
    dask_scheduler: str | None = setting(
        None, doc="engine dask: address of a running Dask scheduler (tcp://host:8786); empty starts a local cluster"
    )
    dask_connect_timeout_s: Annotated[float, Gt(0)] = setting(10.0, doc="engine dask: seconds to reach the scheduler and its first worker")


@section
class SourceLayout:
    columns: dict[str, str] = setting(factory=dict, doc="canonical column -> header in this source, e.g. UnitPrice: Preis")
    date_formats: list[str] | None = setting(None, doc="InvoiceDate formats of this source (default: etl.date_formats)")
    encoding: Literal["auto", "utf-8", "cp1252", "latin-1"] | None = setting(None, doc="text encoding of this source")
    delimiter: Annotated[str, MinLen(1), MaxLen(1)] | None = setting(None, doc="field separator of this source")
    decimal: Literal[".", ","] | None = setting(None, doc="decimal separator of this source")


@section
class RuleSettings:
    required_fields: Annotated[list[str], Check(source_columns)] = setting(
        factory=lambda: ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country"],
        doc="columns that must be present and non-empty in every row",
    )
    reject_zero_quantity: bool = setting(True, doc="quarantine rows whose Quantity is 0")
    reject_non_positive_price: bool = setting(True, doc="quarantine rows whose UnitPrice is 0 or negative")
    price_exempt_invoice_prefixes: list[str] = setting(
        factory=lambda: ["A"], doc="invoice prefixes exempt from the price rule (bad-debt adjustments)"
    )
    price_exempt_stock_codes: list[str] = setting(factory=lambda: ["B"], doc="stock codes exempt from the price rule")
    reject_duplicates: bool = setting(True, doc="quarantine rows that repeat an earlier row of the same source in all eight fields")
    max_abs_quantity: Annotated[int, Ge(1), Le(2_147_483_647)] = setting(
        1_000_000, doc="|Quantity| above this is quarantined as out of range (at most the INTEGER column's range)"
    )
    max_unit_price: Annotated[float, Gt(0), Le(999_999_999_999)] = setting(
        1_000_000.0, doc="|UnitPrice| above this is quarantined as out of range (at most NUMERIC(18, 3))"
    )
    min_date: date = setting(date(1990, 1, 1), doc="transactions before this date are quarantined as out of range")
    max_future_days: Annotated[int, Ge(0)] = setting(1, doc="transactions more than this many days in the future are quarantined")


@section
class ProductSettings:
    non_merchandise_codes: dict[str, str] = setting(
        factory=lambda: {
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
        doc="stock codes (upper case) that are not goods, with their category",
    )
    non_merchandise_prefixes: dict[str, str] = setting(
        factory=lambda: {"GIFT_": "voucher", "DCGS": "other"},
        doc="stock-code prefixes (upper case) that are not goods, with their category",
    )


@section
class CheckOverride:
    threshold: Annotated[float, Ge(0), Le(1)] | None = setting(None, doc="pass when the check's score is at least this")
    blocking: bool | None = setting(None, doc="a failure fails the run (true) or only warns (false)")


@section
class QualitySettings:
    completeness: Annotated[float, Ge(0), Le(1)] = setting(0.95, doc="minimum completeness score (share of non-null required values)")
    validity: Annotated[float, Ge(0), Le(1)] = setting(0.90, doc="minimum validity score (formats and domains)")
    uniqueness: Annotated[float, Ge(0), Le(1)] = setting(0.99, doc="minimum uniqueness score")
    accuracy: Annotated[float, Ge(0), Le(1)] = setting(0.85, doc="minimum accuracy score (business rules)")
    consistency: Annotated[float, Ge(0), Le(1)] = setting(1.0, doc="minimum consistency score (keys resolve, SCD2 ranges sound)")
    anomaly: Annotated[float, Ge(0), Le(1)] = setting(
        0.10, doc="relative move of a metric against the median of its history that counts as an anomaly (from the second run)"
    )
    anomaly_z: Annotated[float, Gt(0)] = setting(3.5, doc="robust z-score beyond which a metric is anomalous")
    anomaly_window: Annotated[int, Ge(3), Le(1000)] = setting(20, doc="runs of history a metric is compared with")
    anomaly_min_history: Annotated[int, Ge(2)] = setting(
        5, doc="earlier runs from which the robust z-score joins the relative-change rule (and judges reject rates, revenue)"
    )
    volume_factor: Annotated[float, Gt(1)] = setting(
        3.0, doc="a run reading below 1/this or above this times its feed's usual rows raises a volume alert"
    )
    schema_drift: bool = setting(True, doc="alert when a feed's header changes (a column added or gone, another name variant)")
    new_value_columns: Annotated[list[str], Check(source_columns)] = setting(
        factory=lambda: ["Country"],
        doc="low-cardinality columns whose values never seen before are reported in the run summary and the quality report",
    )
    freshness_max_age_days: Annotated[float, Gt(0)] = setting(
        2.0, doc="a job (for manual runs: any load) whose last successful load is older than this many days is stale"
    )
    data_recency_max_age_days: Annotated[float, Gt(0)] | None = setting(
        None, doc="switch on the data-recency check: a newest transaction older than this many days is stale; empty: off"
    )
    data_start: date = setting(date(2009, 1, 1), doc="transactions before this date fail the accuracy check")
    on_failure: Literal["fail", "warn"] = setting("fail", doc="a failing blocking check fails the run (fail) or is only reported (warn)")
    sample_size: Annotated[int, Ge(0), Le(100)] = setting(5, doc="offending values kept with each failing check")
    checks: dict[str, CheckOverride] = setting(factory=dict, doc="per-check overrides by check name: threshold, blocking")


@section
class AlertChannel:
    name: Annotated[str, MinLen(1)] = setting(doc="channel name used by `alerts test --channel`")
    type: Literal["log", "file", "webhook", "email"] = setting(doc="log, file (JSON lines), webhook (HTTP POST) or email (SMTP)")
    min_severity: Literal["info", "warning", "critical"] = setting("warning", doc="lowest severity sent on this channel")
    path: str | None = setting(None, doc="file channel: JSON-lines file")
    url: str | None = setting(None, doc="webhook channel: URL to POST to")
    timeout_s: Annotated[float, Gt(0)] = setting(5.0, doc="webhook/email: network timeout")
    smtp_host: str | None = setting(None, doc="email channel: SMTP server")
    smtp_port: Annotated[int, Ge(1), Le(65535)] = setting(25, doc="email channel: SMTP port")
    sender: str | None = setting(None, doc="email channel: From address")
    recipients: list[str] = setting(factory=list, doc="email channel: To addresses")


@section
class AlertSettings:
    channels: list[AlertChannel] = setting(factory=lambda: [AlertChannel(name="log", type="log")], doc="where alerts are sent")
    cooldown_minutes: Annotated[float, Ge(0)] = setting(60.0, doc="the same alert is not sent again within this time")
    max_retries: Annotated[int, Ge(0), Le(20)] = setting(3, doc="retries of a failing channel (with backoff) before giving up")


@section
class SchedulerSettings:
    pid_file: str = setting("data/scheduler.pid", doc="PID file of the scheduler daemon (relative to the project folder)")
    max_retries: Annotated[int, Ge(0), Le(50)] = setting(3, doc="retries of a job after a transient failure (database unreachable)")
    retry_backoff_s: Annotated[float, Ge(0)] = setting(5.0, doc="first retry delay in seconds; doubles on each retry")
    catch_up: Literal["once", "skip"] = setting("once", doc="a run missed while the daemon was down: run it once at start-up, or skip it")
    settle_seconds: Annotated[float, Ge(0)] = setting(
        2.0, doc="a dropped file whose size changed within this time is still being written: wait"
    )
    archive_dir: str | None = setting(None, doc="move files loaded by folder jobs here (relative to the project folder); empty keeps them")
    reload_check_s: Annotated[float, Gt(0), Le(3600)] = setting(
        5.0, doc="the daemon's idle tick: seconds between its looks at scheduled_jobs for changed jobs"
    )


@section
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("WARNING", doc="console log level")
    file: str = setting("logs/rdp.log", doc="JSON-lines log file (relative to the project folder); empty to disable")


@section
class Settings:
    database: DatabaseSettings = setting(factory=DatabaseSettings, doc="")
    warehouse: WarehouseSettings = setting(factory=WarehouseSettings, doc="")
    etl: EtlSettings = setting(factory=EtlSettings, doc="")
    sources: dict[str, SourceLayout] = setting(factory=dict, doc="named source layouts for `etl --layout NAME`")
    rules: RuleSettings = setting(factory=RuleSettings, doc="")
    products: ProductSettings = setting(factory=ProductSettings, doc="")
    quality_rules: QualitySettings = setting(factory=QualitySettings, doc="")
    alerts: AlertSettings = setting(factory=AlertSettings, doc="")
    scheduler: SchedulerSettings = setting(factory=SchedulerSettings, doc="")
    cache: CacheSettings = setting(factory=CacheSettings, doc="")
    logging: LoggingSettings = setting(factory=LoggingSettings, doc="")
    # Problems found while loading that do not stop the platform (a config file others can read).
    warnings: list[str] = field(default_factory=list, init=False, compare=False, metadata={"doc": ""})

    def resolve_path(self, value: str) -> Path:
        """A path setting made absolute against the project folder."""
        path = Path(value)
        return path if path.is_absolute() else PROJECT_ROOT / path


def _dotted_keys(section_value: Any, prefix: str = "") -> list[str]:
    keys = []
    for name in setting_names(type(section_value)):
        value = getattr(section_value, name)
        keys += _dotted_keys(value, f"{prefix}{name}.") if is_section(value) else [f"{prefix}{name}"]
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _dotted_keys(Settings()), n=1)
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
    import yaml

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
        if not _is_setting_variable(name) or name == "RDP_CONFIG":
            continue
        if name == "RDP_DATABASE_URL":
            dotted = "database.url"
            value: Any = raw
        else:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            value = raw if dotted == "database.url" else _yaml(raw) if raw.strip() else raw
        section, _, key = dotted.partition(".")
        layer.setdefault(section, {})[key] = value
        origins[dotted] = f"environment variable {name}"
    return layer, origins


def _is_setting_variable(name: str) -> bool:
    """RDP_SECTION__KEY, the RDP_DATABASE_URL shortcut and RDP_CONFIG (the extra file)."""
    return name.startswith(ENV_PREFIX) and ("__" in name or name in ("RDP_DATABASE_URL", "RDP_CONFIG"))


def validate_layer(data: dict[str, Any], origin: str) -> None:
    """Check one layer for unknown keys and bad values, naming `origin` and the key."""
    parse_settings(data, origin)


def parse_settings(data: dict[str, Any], origin: str = "settings") -> Settings:
    """`data` (sections as mappings) validated as Settings; a ConfigError names `origin` and each bad key."""
    from pydantic import ValidationError

    try:
        return validate(Settings, data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _describe(exc: ValidationError, origin: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
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
    """Build the effective settings from every layer, later layers winning: from the snapshot
    of the last command that had the same layers, else read and validated (and snapshotted)."""
    environ = dict(os.environ) if environ is None else environ
    files = [p for p in default_files if p.exists()]
    extra = config_file or (Path(environ["RDP_CONFIG"]) if environ.get("RDP_CONFIG") else None)
    if extra is not None:
        files.append(extra)
    store = snapshot.Store.of(environ)
    key = store.key(_CODE, files, {k: v for k, v in environ.items() if _is_setting_variable(k)}, overrides) if store else None
    settings = store.load(key) if key else None
    if not isinstance(settings, Settings):
        settings = _load(files, environ, overrides)
        if key:
            store.save(key, settings)
    return settings


def _load(files: list[Path], environ: dict[str, str], overrides: dict[str, Any] | None) -> Settings:
    merged: dict[str, Any] = {}
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
    settings = parse_settings(merged, "command-line options")
    object.__setattr__(settings, "warnings", warnings)  # the one field the loader fills in
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
    for section_name in setting_names(Settings):
        section = getattr(settings, section_name)
        if not is_section(section):
            plain_map = {k: _plain(v, drop_none=True) for k, v in section.items()}
            rows.append({"setting": section_name, "value": masked(plain_map), "description": doc_of(Settings, section_name)})
            continue
        for key in setting_names(type(section)):
            value = _plain(getattr(section, key))
            rows.append({"setting": f"{section_name}.{key}", "value": masked(value, key), "description": doc_of(type(section), key)})
    return rows


def _plain(value: Any, drop_none: bool = False) -> Any:
    """A settings value as JSON-ready data: sections as mappings, dates as ISO text."""
    if is_section(value):
        items = ((k, _plain(getattr(value, k))) for k in setting_names(type(value)))
        return {k: v for k, v in items if not (drop_none and v is None)}
    if isinstance(value, dict):
        return {k: _plain(v, drop_none) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, drop_none) for v in value]
    return value.isoformat() if isinstance(value, date) else value


# The code a settings object depends on: a snapshot made by other code is never used.
_CODE = tuple(Path(sys.modules[name].__file__) for name in (__name__, "config.cache", "config.sections", "utils.vocabulary", "utils.urls"))
