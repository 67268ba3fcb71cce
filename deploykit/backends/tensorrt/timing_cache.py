"""The builder's timing cache file (`--timing-cache PATH`): read before a build, written back after it.

TensorRT's calls (NvInfer.h, 10.x and 11.x): `config.create_timing_cache(bytes)` (empty bytes: a new cache),
`config.set_timing_cache(cache, ignore_mismatch)`, which "will report a failure if the CUDA device property in
the provided cache is different from current environment", and `get_timing_cache().serialize()`;
`ITimingCache.queryKeys()` (Python binding "queryKeys") lists its entries. deploykit passes
ignore_mismatch=False ("Using cache generated from devices with different CUDA device properties may lead to
functional/performance bugs", ibid.; trtexec passes True and merges). A cache TensorRT refuses, made on another
GPU or TensorRT or damaged, is an input of someone else's: it is left as it is, the build runs with a fresh
cache, and this build's timings are not saved over it (the message says so and how to keep them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit.io.outputs import atomic_output
from deploykit.types import Progress


@dataclass
class TimingCacheRecord:
    """What happened to the timing cache file, for the sidecar (build_options["timing_cache_record"])."""

    path: str
    status: str  # "new" | "read" | "refused" (another GPU/TensorRT, or damaged: left untouched)
    read_bytes: int = 0
    read_entries: int | None = None  # entries TensorRT loaded (None: this TensorRT cannot list them)
    written_entries: int | None = None  # entries after the build; None when nothing was written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def new_entries(self) -> int | None:
        """Entries this build added: 0 means every tactic it timed came from the cache."""
        if self.written_entries is None or self.read_entries is None:
            return None
        return self.written_entries - self.read_entries


def entries(cache: Any) -> int | None:
    """How many entries a trt.ITimingCache holds (`queryKeys`, TensorRT 10.x+), None when it cannot say."""
    query = getattr(cache, "queryKeys", None)
    if cache is None or not callable(query):
        return None
    try:
        return len(query())
    except Exception:  # an older binding, or an editable-cache-only call: the count is a report, not a need
        return None


def use_timing_cache(config: Any, path: str | None, say: Progress) -> TimingCacheRecord | None:
    """Give `config` the cache at `path` (a new one when there is no file, or when TensorRT refuses it)."""
    if not path:
        return None  # TensorRT keeps its own in-memory cache for the build
    record = TimingCacheRecord(str(path), "new")
    data = b""
    if Path(path).is_file():
        data = Path(path).read_bytes()
        record.status, record.read_bytes = "read", len(data)
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        record.read_entries = entries(cache) if data else 0
        if data:
            counted = f", {record.read_entries} entries" if record.read_entries is not None else ""
            say(f"read timing cache {path} ({len(data)} bytes{counted})")
        return record
    record.status = "refused"
    say(f"timing cache {path} was made on another GPU or TensorRT version, or is damaged: TensorRT refused it "
        "(set_timing_cache with ignore_mismatch=False). It is left as it is and this build's timings are not "
        "saved into it; give --timing-cache a path of its own for this GPU to keep them")
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return record


def save_timing_cache(config: Any, record: TimingCacheRecord | None, say: Progress) -> None:
    """Write the build's cache back to the file it came from (not over a cache TensorRT refused)."""
    if record is None or record.status == "refused":
        return
    cache = config.get_timing_cache()
    serialized = cache.serialize()
    with atomic_output(record.path, force=True) as tmp:
        tmp.write_bytes(memoryview(serialized).tobytes())
    record.written_entries = entries(cache)
    added = f", {record.new_entries} new entries" if record.new_entries is not None else ""
    say(f"updated timing cache {record.path}{added}")
