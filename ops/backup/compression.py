"""The lines of an export file in gzip: written in members of their own, compressed on
threads while the next lines are made, and read back decompressed on a thread while the
lines before are checked."""

from __future__ import annotations

import collections
import contextlib
import gzip
import os
import queue
import threading
import zlib
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from .format import BackupError, BadFile, make_line

#: Uncompressed bytes per gzip member of an export.
MEMBER = 1 << 21
#: Members compressed at once (on threads: zlib lets go of the GIL while it compresses).
_COMPRESSORS = 2


class LineWriter:
    """Lines into a gzip file, each with its running hash. The lines are compressed in
    chunks of ``MEMBER`` bytes, each a gzip member of its own (a gzip file may hold
    several; every gzip reader reads them as one stream), on threads while the next rows
    are fetched and encoded, and written in order."""

    def __init__(self, path: Path, level: int, rh: bytes) -> None:
        self.raw: IO[bytes] = open(path, "wb")  # noqa: SIM115  (closed in close())
        self.level = level
        self.compressors = ThreadPoolExecutor(_COMPRESSORS,
                                              thread_name_prefix="ssot-export-gzip")
        self.compressing: collections.deque[Future[bytes]] = collections.deque()
        self.rh = rh
        self.lines = 0
        self.buffer: list[bytes] = []
        self.size = 0

    def add(self, body: bytes) -> None:
        line, self.rh = make_line(body, self.rh)
        self.buffer.append(line)
        self.size += len(line)
        self.lines += 1
        if self.size >= MEMBER:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.compressing.append(self.compressors.submit(
                gzip.compress, b"".join(self.buffer), self.level, mtime=0))
            self.buffer.clear()
            self.size = 0
        while self.compressing and (len(self.compressing) > _COMPRESSORS
                                    or self.compressing[0].done()):
            self.raw.write(self.compressing.popleft().result())

    def close(self) -> None:
        """Write what is left and sync the file (called again after a failure: then it
        only lets go of the file and the threads)."""
        if self.raw.closed:
            return
        try:
            self.flush()
            while self.compressing:
                self.raw.write(self.compressing.popleft().result())
            self.raw.flush()
            os.fsync(self.raw.fileno())
        finally:
            self.compressors.shutdown(cancel_futures=True)
            self.raw.close()


def read_lines(path: str | os.PathLike[str]) -> Generator[tuple[int, bytes], None, None]:
    """(line number, line) of a gzip file, decompressed on a thread meanwhile; a cut in the
    compressed stream or a last line without its newline is reported as truncation after
    the last complete line."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()
    reader = threading.Thread(target=_decompress, args=(path, chunks, stop), daemon=True,
                              name="ssot-import-gunzip")
    reader.start()
    number, tail = 0, b""
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, EOFError):
                raise BadFile(number + 1, "the file is truncated: the compressed stream ends "
                                          f"early (the last complete line is {number})")
            if isinstance(chunk, zlib.error):
                raise BadFile(number + 1, f"not a gzip-compressed export ({chunk})")
            if isinstance(chunk, BaseException):
                raise BackupError(f"{path}: {chunk}")
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                number += 1
                yield number, raw + b"\n"
        if tail:
            raise BadFile(number + 1, "the file is truncated: this line is incomplete "
                                      f"(the last complete line is {number})")
    finally:
        stop.set()
        reader.join(5)


def _decompress(path: str | os.PathLike[str],
                chunks: queue.Queue[bytes | BaseException | None],
                stop: threading.Event) -> None:
    """Put the bytes of the gzip file ``path`` on ``chunks``, member after member, then
    None, or the error that ended them (EOFError: the last member is cut short)."""
    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                chunks.put(item, timeout=0.1)
                return

    try:
        with open(path, "rb") as f:
            member, fed = zlib.decompressobj(31), False
            while not stop.is_set() and (data := f.read(1 << 18)):
                while data:
                    out = member.decompress(data, 1 << 20)  # bounded, whatever the ratio
                    fed = True
                    if out:
                        put(out)
                    if member.eof:
                        data = member.unused_data
                        member, fed = zlib.decompressobj(31), False
                    else:
                        data = member.unconsumed_tail
            put(EOFError() if fed else None)
    except Exception as e:  # handed over: the reader raises it (zlib.error: not gzip)
        put(e)
