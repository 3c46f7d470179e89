"""``MetricsFolder`` writes what prometheus-client's own multiprocess collector writes, sample
for sample: files of several processes written by the library's own ``MmapedDict`` (the
writer every process uses), every kind and gauge mode, label values that need escaping,
files that grow past their first mapping between scrapes, a stopped process's live gauges
removed. The same reader is kept across scrapes, as the HTTP worker keeps it."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from nexus_ssot.ledger.metrics_exposition import MetricsFolder

BOUNDS = ("0.005", "0.01", "0.1", "1.0", "10.0", "+Inf")
LABEL_VALUES = ("a", "b", 'q"uote', "back\\slash", "new\nline", "ünï", "")
GAUGE_MODES = ("all", "liveall", "sum", "livesum", "min", "max", "livemax",
               "mostrecent", "livemostrecent")


def library(folder: Path) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class Samples:
    """The families and samples of an exposition; values equal to the last bits (the
    library adds up processes in the order the directory lists them)."""

    def __init__(self, text: bytes) -> None:
        self.families: set[tuple[str, str, str]] = set()
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text.decode()):
            if family.samples:  # the library leaves out a metric with no sample left
                self.families.add((family.name, family.type, family.documentation))
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in self.values, f"{key} twice"
                self.values[key] = s.value

    def __eq__(self, other: object) -> bool:
        assert isinstance(other, Samples)
        return (self.families == other.families and self.values.keys() == other.values.keys()
                and all(math.isclose(v, other.values[k], rel_tol=1e-12)
                        for k, v in self.values.items()))

    def __repr__(self) -> str:
        return f"Samples({len(self.families)} families, {len(self.values)} samples)"


def samples(text: bytes) -> Samples:
    return Samples(text)


class Process:
    """The files of one process, written with the library's writer."""

    def __init__(self, folder: Path, pid: int) -> None:
        self.folder, self.pid = folder, pid
        self.files: dict[str, MmapedDict] = {}

    def write(self, kind: str, metric: str, name: str, labels: dict[str, str], value: float,
              at: float = 0.0) -> None:
        path = self.folder / f"{kind}_{self.pid}.db"
        store = self.files.get(kind)
        if store is None:
            store = self.files[kind] = MmapedDict(str(path))
        key = mmap_key(metric, name, list(labels), list(labels.values()), f"{metric} help\\")
        store.write_value(key, value, at)

    def close(self) -> None:
        for store in self.files.values():
            store.close()


def scribble(rng: random.Random, process: Process, writes: int, spread: int = 0) -> None:
    """``writes`` random writes; with ``spread``, routes from that many more (new keys)."""
    for _ in range(writes):
        route = rng.choice(LABEL_VALUES) if not spread else f"/r{rng.randrange(spread)}"
        labels = {"route": route, "method": rng.choice(("GET", "PUT"))}
        roll = rng.random()
        if roll < 0.35:
            process.write("counter", "ssot_things", "ssot_things_total", labels,
                          float(rng.randint(0, 10**6)))
        elif roll < 0.75:
            metric = rng.choice(("ssot_latency_seconds", "ssot_batch"))
            for bound in BOUNDS:
                process.write("histogram", metric, f"{metric}_bucket",
                              {**labels, "le": bound}, float(rng.randint(0, 50)))
            process.write("histogram", metric, f"{metric}_sum", labels, rng.random() * 100)
        else:
            mode = rng.choice(GAUGE_MODES)
            process.write(f"gauge_{mode}", f"ssot_level_{mode}", f"ssot_level_{mode}",
                          labels, rng.uniform(-1e9, 1e9), at=float(rng.randint(1, 10**9)))


@pytest.mark.parametrize("seed", [1, 2])
def test_the_same_samples_as_the_library_across_growing_files(tmp_path: Path,
                                                              seed: int) -> None:
    rng = random.Random(seed)
    processes = [Process(tmp_path, pid) for pid in (101, 202, 303)]
    reader = MetricsFolder(tmp_path)
    try:
        for round_ in range(3):
            for process in processes:
                # the last rounds grow files past their first 64 KiB mapping
                scribble(rng, process, 40 if round_ < 2 else 500, 0 if round_ < 2 else 400)
            ours, theirs = reader.exposition(), library(tmp_path)
            assert samples(ours) == samples(theirs), f"round {round_}"
        assert max(f.stat().st_size for f in tmp_path.iterdir()) > 1 << 16  # grown
        # a stopped process: its live gauges go, its counts stay
        processes[1].close()
        mark_process_dead(202, str(tmp_path))  # type: ignore[no-untyped-call]
        assert not list(tmp_path.glob("gauge_live*_202.db"))
        assert samples(reader.exposition()) == samples(library(tmp_path))
        # a new process after that
        late = Process(tmp_path, 404)
        processes.append(late)
        scribble(rng, late, 200)
        assert samples(reader.exposition()) == samples(library(tmp_path))
        # a process stops and another gets its pid before the next scrape: its live gauges'
        # files are new files under the names the reader holds
        processes[2].close()
        mark_process_dead(303, str(tmp_path))  # type: ignore[no-untyped-call]
        reborn = Process(tmp_path, 303)
        processes.append(reborn)
        for mode in ("liveall", "livesum", "livemax", "livemostrecent"):
            reborn.write(f"gauge_{mode}", f"ssot_level_{mode}", f"ssot_level_{mode}",
                         {"route": "/reborn", "method": "GET"}, 7.0, at=1.0)
        assert samples(reader.exposition()) == samples(library(tmp_path))
    finally:
        reader.close()
        for process in processes:
            process.close()


def test_an_empty_folder_has_nothing_to_say(tmp_path: Path) -> None:
    reader = MetricsFolder(tmp_path)
    assert reader.exposition() == b"" == library(tmp_path)
    reader.close()


def test_a_corrupt_file_is_an_error_not_a_guess(tmp_path: Path) -> None:
    process = Process(tmp_path, 7)
    process.write("counter", "ssot_things", "ssot_things_total", {}, 1.0)
    process.close()
    path = tmp_path / "counter_7.db"
    data = bytearray(path.read_bytes())
    data[8:12] = (10**6).to_bytes(4, "little")  # a key length past the used length
    path.write_bytes(bytes(data))
    reader = MetricsFolder(tmp_path)
    with pytest.raises(RuntimeError, match=r"counter_7\.db"):
        reader.exposition()
    reader.close()
