"""The Prometheus text exposition of a metrics folder (``ssot serve``'s processes' files),
kept up to date between scrapes instead of rebuilt for each.

prometheus-client's ``MultiProcessCollector`` reads every file from its start, decodes the
JSON key of every entry and builds sample objects at each scrape: some 60 µs per series
here, over half a second for 10,000 series. A file of that folder only grows (an entry, once
written, stays at its offset for the life of the file; only its value changes), so this
reader decodes each entry once, and a scrape then costs one ``struct`` unpacking of each
file's values, one addition per entry and one line per series, from text rendered once
per series. ``docs/metrics.md`` has the figures (``python -m
nexus_ssot.ops.bench.metrics_scrape``).

The file layout and the merge rules are prometheus-client's (0.26, pinned): a 4-byte used
length, 4 bytes of padding, then entries of a 4-byte key length, the UTF-8 JSON key
``[metric name, sample name, labels, help]`` padded to 8 bytes, and two native doubles
(value, timestamp); counters and histograms add up across processes, histogram buckets
become cumulative with ``_count`` their total, gauges follow their multiprocess mode.
``tests/unit/test_metrics_exposition.py`` proves the output is the library's, sample for
sample, so a change of either fails there first."""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString
from prometheus_client.validation import _is_valid_legacy_metric_name

_USED = struct.Struct("=i")
_HEADER = 8
_ESCAPING = openmetrics.UNDERSCORES
_MINMAX = {"min": min, "livemin": min, "max": max, "livemax": max}
#: A value as the exposition spells it (the library's function, untyped).
_float_text: Callable[[float], str] = floatToGoString


def _any_rune(_rune: str, _index: int) -> bool:
    return True  # not consulted: label values are escaped under ALLOWUTF8


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{openmetrics.escape_label_name(k, _ESCAPING)}="'
                    f'{openmetrics._escape(v, openmetrics.ALLOWUTF8, _any_rune)}"'
                    for k, v in sorted(labels))


def _prefix(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """A sample line up to its value, as ``generate_latest`` writes it."""
    text = _label_text(labels)
    escaped = openmetrics.escape_metric_name(name, _ESCAPING)
    if _ESCAPING != openmetrics.ALLOWUTF8 or _is_valid_legacy_metric_name(name):
        return f"{escaped}{{{text}}} " if text else f"{escaped} "
    return f"{{{escaped}{',' if text else ''}{text}}} "


@dataclass
class _Histogram:
    """One label set of a histogram: its buckets (upper bound, series) and its sum."""
    labels: tuple[tuple[str, str], ...]
    buckets: list[tuple[float, int, str]] = field(default_factory=list)
    sum_series: int | None = None
    count_prefix: str = ""
    sum_prefix: str = ""


@dataclass
class _Metric:
    name: str
    kind: str  # counter, histogram, gauge, summary
    header: str
    #: counters, summaries and gauges: (labels, series, prefix) in the order first seen
    samples: list[tuple[tuple[tuple[str, str], ...], int, str]] = field(default_factory=list)
    histograms: dict[tuple[tuple[str, str], ...], _Histogram] = field(default_factory=dict)


class _File:
    """One process's file of one kind, read from where the last scrape stopped."""

    def __init__(self, path: Path, kind: str, mode: str, pid: str) -> None:
        self.path, self.kind, self.mode, self.pid = path, kind, mode, pid
        self._fd = os.open(path, os.O_RDONLY)
        self.inode = os.fstat(self._fd).st_ino
        self._map: mmap.mmap | None = None
        self.parsed = _HEADER
        #: where the last known entry's value and timestamp end (the next gap starts)
        self.end = 0
        self.series: list[int] = []
        self._format: list[str] = ["="]
        self._gap = 0
        self.values: struct.Struct | None = None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        os.close(self._fd)

    def _mapped(self, needed: int) -> mmap.mmap:
        if self._map is None or len(self._map) < needed:
            if self._map is not None:
                self._map.close()
            size = os.fstat(self._fd).st_size
            if size < needed:
                raise RuntimeError(f"{self.path}: the used length passes the end of the file")
            self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        return self._map

    def entries(self) -> Iterator[tuple[str, int]]:
        """The keys written since the last call, each with its value's offset."""
        data = self._mapped(_HEADER)
        used = _USED.unpack_from(data, 0)[0]
        if used <= self.parsed:
            return
        data = self._mapped(used)
        pos = self.parsed
        while pos < used:
            length = _USED.unpack_from(data, pos)[0]
            if length <= 0 or pos + 4 + length > used:
                raise RuntimeError(f"{self.path}: entry at {pos} passes the used length")
            key = data[pos + 4:pos + 4 + length].decode("utf-8")
            pos += 4 + length + (8 - (length + 4) % 8)
            yield key, pos
            pos += 16
        self.parsed = used

    def add(self, series: int, offset: int) -> None:
        """The entry whose value is at ``offset`` counts for ``series``."""
        self.series.append(series)
        self._format.append(f"{offset - self.end}xdd")
        self.end = offset + 16
        self.values = None

    def read(self) -> tuple[float, ...]:
        """(value, timestamp) of every known entry, flat, in one unpacking."""
        if self.values is None:
            self.values = struct.Struct("".join(self._format))
        return self.values.unpack_from(self._mapped(self.values.size), 0)


class MetricsFolder:
    """The exposition of one metrics folder; one per process that scrapes, its state kept
    between scrapes under a lock (a scrape runs in a worker thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._metrics: dict[str, _Metric] = {}
        self._series: dict[tuple[str, str], int] = {}  # (key, pid or "") -> series

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()

    def exposition(self) -> bytes:
        with self._lock:
            self._refresh()
            return self._render(self._values()).encode("utf-8")

    # -- reading -----------------------------------------------------------------------

    def _refresh(self) -> None:
        present = {}
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".db") and entry.is_file():
                present[entry.name] = entry
        for gone in set(self._files) - set(present):
            self._files.pop(gone).close()  # a stopped process's live gauges
        for name in sorted(present):
            f = self._files.get(name)
            if f is not None and f.inode != present[name].inode():
                # removed and made again under the same name (a live gauge's file, its
                # process gone, and a new process of the same pid): the new one counts
                self._files.pop(name).close()
                f = None
            if f is None:
                parts = name[:-3].split("_")
                kind = parts[0]
                mode = parts[1] if kind == "gauge" else ""
                try:
                    f = _File(Path(present[name].path), kind, mode, parts[-1])
                except FileNotFoundError:
                    continue  # removed between the listing and now (a live gauge's)
                self._files[name] = f
            for key, offset in f.entries():
                f.add(self._series_of(f, key), offset)

    def _series_of(self, f: _File, key: str) -> int:
        keep_pid = f.kind == "gauge" and f.mode in ("all", "liveall")
        ident = (key, f.pid if keep_pid else "")
        found = self._series.get(ident)
        if found is not None:
            return found
        metric_name, name, labels, help_text = json.loads(key)
        metric = self._metrics.get(metric_name)
        if metric is None:
            exposed = metric_name + "_total" if f.kind == "counter" else metric_name
            escaped = openmetrics.escape_metric_name(exposed, _ESCAPING)
            doc = help_text.replace("\\", r"\\").replace("\n", r"\n")
            metric = self._metrics[metric_name] = _Metric(
                metric_name, f.kind,
                f"# HELP {escaped} {doc}\n# TYPE {escaped} {f.kind}\n")
        series = self._series[ident] = len(self._series)
        label_items = tuple(sorted(labels.items()))
        if keep_pid:
            label_items = tuple(sorted((*label_items, ("pid", f.pid))))
        if f.kind == "histogram" and name == metric_name + "_bucket":
            bound = float(labels["le"])
            rest = tuple(item for item in label_items if item[0] != "le")
            histogram = self._histogram(metric, rest)
            le = _float_text(bound)
            histogram.buckets.append((bound, series, _prefix(name, (*rest, ("le", le)))))
            histogram.buckets.sort()
        elif f.kind == "histogram" and name == metric_name + "_sum":
            self._histogram(metric, label_items).sum_series = series
        elif f.kind != "histogram":
            metric.samples.append((label_items, series, _prefix(name, label_items)))
        return series

    @staticmethod
    def _histogram(metric: _Metric, labels: tuple[tuple[str, str], ...]) -> _Histogram:
        found = metric.histograms.get(labels)
        if found is None:
            found = metric.histograms[labels] = _Histogram(
                labels, count_prefix=_prefix(metric.name + "_count", labels),
                sum_prefix=_prefix(metric.name + "_sum", labels))
        return found

    def _values(self) -> list[float | None]:
        """Each series' value across the files, by the rule of its kind."""
        values: list[float | None] = [None] * len(self._series)
        stamps: dict[int, float] = {}
        for f in self._files.values():
            if not f.series:
                continue
            flat = f.read()  # open since it was found: readable even once removed
            series = f.series
            if f.kind != "gauge" or f.mode in ("sum", "livesum", "all", "liveall"):
                for s, v in zip(series, flat[0::2], strict=True):
                    before = values[s]
                    values[s] = v if before is None else before + v
            elif f.mode in _MINMAX:
                pick = _MINMAX[f.mode]
                for s, v in zip(series, flat[0::2], strict=True):
                    before = values[s]
                    values[s] = v if before is None else pick(before, v)
            else:  # mostrecent, livemostrecent
                for s, v, at in zip(series, flat[0::2], flat[1::2], strict=True):
                    if at > stamps.get(s, 0.0):  # the library's rule: a stamp of 0 never wins
                        stamps[s], values[s] = at, v
        return values

    # -- writing -----------------------------------------------------------------------

    def _render(self, values: list[float | None]) -> str:
        out: list[str] = []
        go = _float_text
        for metric in sorted(self._metrics.values(), key=lambda m: m.name):
            out.append(metric.header)
            if metric.kind != "histogram":
                for _, series, prefix in metric.samples:
                    value = values[series]
                    if value is not None:
                        out.append(f"{prefix}{go(value)}\n")
                continue
            for histogram in metric.histograms.values():
                total = 0.0
                for _, series, prefix in histogram.buckets:
                    total += values[series] or 0.0
                    out.append(f"{prefix}{go(total)}\n")
                out.append(f"{histogram.count_prefix}{go(total)}\n")
                if histogram.sum_series is not None:
                    out.append(f"{histogram.sum_prefix}"
                               f"{go(values[histogram.sum_series] or 0.0)}\n")
        return "".join(out)
