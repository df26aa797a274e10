"""Settings snapshots (config/snapshot.py): the second command with the same layers skips
validation; any change of a layer is validated again; the folder stays the user's alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from config import settings as cfg
from config import snapshot
from utils.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A settings file and an environment choosing a snapshot folder of this test."""
    config = tmp_path / "settings.yaml"
    config.write_text("etl:\n  chunk_size: 2000\n")
    config.chmod(0o600)
    return config, {"RDP_SETTINGS_CACHE": str(tmp_path / "snapshots"), "RDP_CACHE__TTL_SECONDS": "60"}


def _load(config: Path, environ: dict[str, str], overrides: dict | None = None) -> cfg.Settings:
    return cfg.load_settings(config, overrides, environ=environ, default_files=())


def _refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, reading and validating the layers fails the test: only a snapshot can answer."""

    def validated_again(*_args, **_kwargs):
        raise AssertionError("the layers were read and validated again")

    monkeypatch.setattr(cfg, "_load", validated_again)


def test_the_second_load_is_the_snapshot_of_the_first(layers, monkeypatch):
    config, environ = layers
    first = _load(config, environ)
    assert first.etl.chunk_size == 2000 and first.cache.ttl_seconds == 60
    _refuse(monkeypatch)
    assert _load(config, environ) == first
    folder = Path(environ["RDP_SETTINGS_CACHE"])
    (saved,) = folder.glob("*.pickle")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_variables_that_are_not_settings_do_not_change_the_key(layers, monkeypatch):
    config, environ = layers
    _load(config, environ)
    _refuse(monkeypatch)
    _load(config, environ | {"RDP_TEST_POSTGRES_URL": "postgresql://elsewhere/db", "HOME_OF_SOMETHING": "x"})


@pytest.mark.parametrize(
    "change",
    ["file", "variable", "new variable", "override"],
)
def test_any_change_of_a_layer_is_read_again(layers, change):
    config, environ = layers
    _load(config, environ)
    overrides = None
    if change == "file":
        config.write_text("etl:\n  chunk_size: 3000\n")
    elif change == "variable":
        environ = environ | {"RDP_CACHE__TTL_SECONDS": "90"}
    elif change == "new variable":
        environ = environ | {"RDP_DATABASE_URL": "sqlite:////tmp/other.db"}
    else:
        overrides = {"logging": {"level": "DEBUG"}}
    again = _load(config, environ, overrides)
    assert (again.etl.chunk_size, again.cache.ttl_seconds, again.database.url, again.logging.level) == {
        "file": (3000, 60, "sqlite:///data/warehouse.db", "WARNING"),
        "variable": (2000, 90, "sqlite:///data/warehouse.db", "WARNING"),
        "new variable": (2000, 60, "sqlite:////tmp/other.db", "WARNING"),
        "override": (2000, 60, "sqlite:///data/warehouse.db", "DEBUG"),
    }[change]


def test_a_bad_value_after_a_good_snapshot_is_still_an_error(layers):
    config, environ = layers
    _load(config, environ)
    config.write_text("etl:\n  chunk_size: 5\n")
    with pytest.raises(ConfigError, match=r"settings\.yaml: etl\.chunk_size: Input should be greater than or equal to 100 \(got 5\)"):
        _load(config, environ)


def test_a_file_opened_to_others_warns_again(layers):
    config, environ = layers
    config.write_text("database:\n  url: postgresql://etl:secret@db/warehouse\n")
    assert _load(config, environ).warnings == []
    config.chmod(0o644)
    (warning,) = _load(config, environ).warnings
    assert "holds credentials (database.url) and is readable by other users (mode 644)" in warning


def test_off_validates_every_time_and_writes_nothing(layers, tmp_path):
    config, environ = layers
    environ = environ | {"RDP_SETTINGS_CACHE": "off"}
    assert _load(config, environ) == _load(config, environ)
    assert not (tmp_path / "snapshots").exists()


def test_without_a_home_folder_every_load_validates(layers):
    config, environ = layers
    bare = {k: v for k, v in environ.items() if k != "RDP_SETTINGS_CACHE"}
    assert snapshot.Store.of(bare) is None
    assert _load(config, bare).etl.chunk_size == 2000
    assert snapshot.Store.of({"HOME": "/h"}).folder == Path("/h/.cache/retail-data-platform/settings")
    assert snapshot.Store.of({"HOME": "/h", "XDG_CACHE_HOME": "/c"}).folder == Path("/c/retail-data-platform/settings")


def test_a_folder_others_can_write_to_is_not_read(layers, monkeypatch):
    config, environ = layers
    _load(config, environ)
    folder = Path(environ["RDP_SETTINGS_CACHE"])
    folder.chmod(0o777)
    calls = []
    real = cfg._load
    monkeypatch.setattr(cfg, "_load", lambda *a: calls.append(a) or real(*a))
    assert _load(config, environ).etl.chunk_size == 2000
    assert len(calls) == 1


def test_a_damaged_snapshot_is_replaced(layers, monkeypatch):
    config, environ = layers
    first = _load(config, environ)
    (saved,) = Path(environ["RDP_SETTINGS_CACHE"]).glob("*.pickle")
    saved.write_bytes(b"not a pickle")
    assert _load(config, environ) == first
    _refuse(monkeypatch)
    assert _load(config, environ) == first


def test_only_the_newest_snapshots_are_kept(layers, monkeypatch):
    config, environ = layers
    monkeypatch.setattr(snapshot, "KEEP", 3)
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "DEBUG"):
        _load(config, environ, {"logging": {"level": level}})
    assert len(list(Path(environ["RDP_SETTINGS_CACHE"]).glob("*.pickle"))) == 3


def test_a_folder_that_cannot_be_written_is_no_error(layers, tmp_path):
    config, environ = layers
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    environ = environ | {"RDP_SETTINGS_CACHE": str(blocker / "snapshots")}
    assert _load(config, environ).etl.chunk_size == 2000


def test_a_command_with_a_snapshot_does_not_import_pydantic(tmp_path):
    env = os.environ | {"RDP_SETTINGS_CACHE": str(tmp_path / "snapshots"), "RDP_ETL__CHUNK_SIZE": "1234"}
    probe = (
        "import atexit, sys, runpy\n"
        "atexit.register(lambda: sys.__stderr__.write('PYDANTIC=%s\\n' % ('pydantic' in sys.modules)))\n"
        f"sys.argv = ['main.py', 'config', 'show', '--format', 'json']\nrunpy.run_path({str(ROOT / 'main.py')!r}, run_name='__main__')\n"
    )
    seen = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert '"etl.chunk_size": 1234' in proc.stdout
        seen.append(proc.stderr.strip().splitlines()[-1])
    assert seen == ["PYDANTIC=True", "PYDANTIC=False"]
