#!/usr/bin/env python3
"""The stream whose XXH3-128 is a file's digest in a format 2 manifest
(docs/DESIGN.md, "File digests"), written to stdout, so that

    python3 tests/fdigest.py FILE | xxh128sum

prints the digest `snapstream info` shows, with nothing of snapstream's own.
The file is cut into 4 KiB pages from its start; each maximal run of zero
pages or of other pages is followed by 8 bytes little-endian, its length
shifted left by one with the low bit set for zeros; only the other pages'
bytes are in the stream. Holes are skipped with SEEK_DATA where the file
system tells, as the engine does: they are zero pages.
"""
import errno
import os
import struct
import sys

PAGE = 4096


def pages(f, size):
    """(offset, bytes or None for a zero page) for each page of the file."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(f.fileno(), pos, os.SEEK_DATA)
        except OSError as e:
            # ENXIO: a hole to the end; anything else: no answer, read it.
            data = size if e.errno == errno.ENXIO else pos
        data = min(data - data % PAGE, size)
        while pos < data:  # whole pages of a hole
            n = min(data - pos, size - pos)
            yield pos, None, n
            pos += n
        try:
            hole = os.lseek(f.fileno(), pos, os.SEEK_HOLE)
        except OSError:
            hole = size
        end = min(-(-hole // PAGE) * PAGE, size) if hole > pos else min(pos + PAGE, size)
        f.seek(pos)
        while pos < end:
            b = f.read(min(PAGE, end - pos))
            yield pos, (None if not any(b) else b), len(b)
            pos += len(b)


def main():
    out = sys.stdout.buffer
    with open(sys.argv[1], "rb") as f:
        size = os.fstat(f.fileno()).st_size
        run, zero = 0, None
        for _, b, n in pages(f, size):
            z = b is None
            if run and z != zero:
                out.write(struct.pack("<Q", run << 1 | zero))
                run = 0
            zero = z
            if b is not None:
                out.write(b)
            run += n
        if run:
            out.write(struct.pack("<Q", run << 1 | zero))


if __name__ == "__main__":
    main()
