"""Where Arrow allocates during a load (utils.memory)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from utils.memory import release_memory, use_system_allocator


@pytest.fixture
def restore_pool():
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


def test_loads_allocate_arrow_memory_with_malloc(restore_pool, monkeypatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    use_system_allocator()
    assert pa.default_memory_pool().backend_name == "system"
    pool = pa.default_memory_pool()
    data = pa.array(["x" * 100] * 10_000)  # about 1 MB, allocated from the new pool
    held = pool.bytes_allocated()
    assert held >= data.nbytes
    del data
    release_memory()  # hands freed pages back; works with the system pool too
    assert pool.bytes_allocated() <= held - 1_000_000


def test_the_environment_chooses_the_pool_when_it_says_so(restore_pool, monkeypatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    use_system_allocator()
    assert pa.default_memory_pool().backend_name == "mimalloc"
