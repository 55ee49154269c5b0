"""The bulk file between a sandbox and its worker: where a large reply leaves its tensor bytes.

The harness makes the file, a memfd sealed so that it can never shrink, and gives it to its
worker. Each request tells the worker where the room starts (`Bulk.free_from`). A reply whose
tensors take a megabyte or more (a ResNet34's state is 87 MB) writes them there, and says so in
its frame on the channel (`wire.send`).

The harness maps that stretch copy-on-write (`MAP_PRIVATE`) instead of copying it out. The
tensors it rebuilds read the file's pages in place, and a write to them touches only the
harness's own copy. A stretch is in use until the last tensor made from it is gone; later
replies go above the stretches in use, and reuse the pages of those given up.

The worker could write anywhere in the file at any time. So what the harness reads there is
trusted no more than any value the worker sends. The seal keeps the file from shrinking under a
mapping, which would crash the harness.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import weakref

from .wire import WireError

PAGE = mmap.PAGESIZE
MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class Bulk:
    """The harness's end of one worker's bulk file."""

    def __init__(self):
        self.fd = os.memfd_create("conformance-replies", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        self._in_use: dict[int, int] = {}  # the stretches whose tensors the harness still holds: start -> end

    def free_from(self) -> int:
        """Where the next reply may write: the first page above every stretch in use."""
        end = max(self._in_use.values(), default=0)
        return -(-end // PAGE) * PAGE

    def take(self, offset: int, size: int) -> memoryview:
        """The `size` bytes a reply says it wrote at `offset`, mapped; in use until nothing refers to them."""
        if offset % PAGE or offset < self.free_from() or offset + size > os.fstat(self.fd).st_size:
            raise WireError(f"a reply's tensor bytes ({size} at {offset}) are not where the bulk file had room")
        if size > MEMORY:
            raise WireError(f"a reply of {size} bytes of tensors announced, more than this machine holds")
        try:
            region = mmap.mmap(self.fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                               offset=offset)
        except OSError as error:
            raise WireError(f"a reply's tensor bytes ({size} at {offset}) could not be mapped: {error}") from None
        self._in_use[offset] = offset + size
        weakref.finalize(region, self._in_use.pop, offset, None)
        return memoryview(region)

    def close(self) -> None:
        """Close the harness's descriptor; the stretches mapped stay readable."""
        os.close(self.fd)
