#!/usr/bin/python3
"""A file's digest as snapstream's manifests define it (docs/DESIGN.md,
"File digests"), computed with nothing of snapstream's own, so that

    /usr/bin/python3 tests/fdigest.py FILE

prints the digest `snapstream info` shows for a snapshot of FILE.

Format 5 (what a push writes): the file is cut into 1 KiB leaves from its
start (the last may be shorter); a leaf of zeros contributes nothing, any
other leaf i contributes XXH3-128 of its bytes with seed i, as a 128-bit
number; S is their sum modulo 2^128, and the digest is XXH3-128 of
le64(size) || le64(S mod 2^64) || le64(S >> 64). Needs Debian's
python3-xxhash.

With --stream2, writes instead the stream whose XXH3-128 is the digest in
format 2 and 3 manifests, for `| xxh128sum`: the file cut into 4 KiB pages,
each maximal run of zero pages or of other pages followed by 8 bytes
little-endian, its length shifted left by one with the low bit set for
zeros; only the other pages' bytes are in the stream.

Holes are skipped with SEEK_DATA where the file system tells, as the
engine does: they are zeros.
"""
import errno
import os
import struct
import sys

PAGE = 4096
LEAF = 1024


def blocks(f, size, unit):
    """(offset, bytes or None for zeros, length) for each unit-sized block
    of the file, holes not read."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(f.fileno(), pos, os.SEEK_DATA)
        except OSError as e:
            # ENXIO: a hole to the end; anything else: no answer, read it.
            data = size if e.errno == errno.ENXIO else pos
        data = min(data - data % unit, size)
        while pos < data:  # whole blocks of a hole
            n = min(data - pos, size - pos)
            yield pos, None, n
            pos += n
        try:
            hole = os.lseek(f.fileno(), pos, os.SEEK_HOLE)
        except OSError:
            hole = size
        end = min(-(-hole // unit) * unit, size) if hole > pos else min(pos + unit, size)
        f.seek(pos)
        while pos < end:
            b = f.read(min(unit, end - pos))
            yield pos, (None if not any(b) else b), len(b)
            pos += len(b)


def stream2(f, size, out):
    run, zero = 0, None
    for _, b, n in blocks(f, size, PAGE):
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


def digest5(f, size):
    import xxhash
    s = 0
    for off, b, _ in blocks(f, size, LEAF):
        if b is not None:
            s += xxhash.xxh3_128_intdigest(b, seed=off // LEAF)
    s %= 1 << 128
    return xxhash.xxh3_128_hexdigest(struct.pack("<QQQ", size, s & (2**64 - 1), s >> 64))


def main():
    args = sys.argv[1:]
    s2 = "--stream2" in args
    args = [a for a in args if a != "--stream2"]
    if len(args) != 1:
        sys.exit("usage: fdigest.py [--stream2] FILE")
    with open(args[0], "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if s2:
            stream2(f, size, sys.stdout.buffer)
        else:
            print(digest5(f, size))


if __name__ == "__main__":
    main()
