#!/usr/bin/python3
"""Helper for the tests: damage a store's objects, local or on s3rver, and
check that its index objects list only packs it holds.

  check_obj.py <store> ls [prefix]          keys under the store (relative), one a line
  check_obj.py <store> get <key> <file>
  check_obj.py <store> put <file> <key>
  check_obj.py <store> rm <key>
  check_obj.py <store> cut <key> <n>        drop the last n bytes
  check_obj.py <store> flip <key> <offset>  invert one byte (offset < 0: from the end)
  check_obj.py <store> sha <key>            sha256 of the object
  check_obj.py <store> index-ok             every index object well-formed, every
                                            pack it lists present (exit 1 and a
                                            line per problem otherwise)

<store> is a directory or s3://bucket/prefix (AWS_ENDPOINT_URL names s3rver,
which answers unsigned requests). Exit 1 when an object is missing.
"""
import hashlib
import os
import signal
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


class Local:
    def __init__(self, root):
        self.root = root

    def ls(self, prefix):
        out = []
        for d, _dirs, files in os.walk(self.root):
            for f in files:
                rel = os.path.relpath(os.path.join(d, f), self.root)
                if rel.startswith(prefix) and ".tmp-" not in f:
                    out.append(rel)
        return sorted(out)

    def get(self, key):
        with open(os.path.join(self.root, key), "rb") as f:
            return f.read()

    def put(self, key, data):
        path = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def rm(self, key):
        os.unlink(os.path.join(self.root, key))


class S3:
    def __init__(self, uri):
        rest = uri[len("s3://"):]
        self.bucket, _, self.prefix = rest.partition("/")
        self.prefix = self.prefix.rstrip("/") + "/"
        self.ep = os.environ["AWS_ENDPOINT_URL"].rstrip("/")

    def url(self, key):
        return f"{self.ep}/{self.bucket}/{urllib.parse.quote(self.prefix + key)}"

    def ls(self, prefix):
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": self.prefix + prefix}
            if token:
                q["continuation-token"] = token
            with urllib.request.urlopen(f"{self.ep}/{self.bucket}?{urllib.parse.urlencode(q)}",
                                        timeout=30) as r:
                root = ET.fromstring(r.read())
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for c in root.findall(f"{ns}Contents"):
                out.append(c.find(f"{ns}Key").text[len(self.prefix):])
            if (root.findtext(f"{ns}IsTruncated") or "false") != "true":
                return sorted(out)
            token = root.findtext(f"{ns}NextContinuationToken")

    def get(self, key):
        with urllib.request.urlopen(self.url(key), timeout=60) as r:
            return r.read()

    def put(self, key, data):
        req = urllib.request.Request(self.url(key), data=data, method="PUT")
        urllib.request.urlopen(req, timeout=60).read()

    def rm(self, key):
        urllib.request.urlopen(urllib.request.Request(self.url(key), method="DELETE"),
                               timeout=30).read()


def index_problems(st):
    """Each index object that is not one, and each pack one lists that the
    store does not hold (docs/DESIGN.md, "Store layout")."""
    have = set(st.ls("packs/"))
    out = []
    for key in st.ls("index/"):
        b = st.get(key)
        pids = []
        if b[:8] == b"SSINDX01":
            n, = struct.unpack_from("<I", b, 8)
            off = 16
            for _ in range(n):
                pids.append(b[off:off + 16].hex())
                count, = struct.unpack_from("<I", b, off + 24)
                off += 32 + 32 * count
        elif b[:8] == b"SSINDX02":
            # A sealed store's: its packs are listed in the clear.
            n, = struct.unpack_from("<I", b, 24)
            pids = [b[32 + 16 * i:48 + 16 * i].hex() for i in range(n)]
        else:
            out.append(f"{key}: not an index object")
            continue
        for pid in pids:
            if f"packs/{pid[:2]}/{pid}" not in have:
                out.append(f"{key} lists missing pack {pid}")
    return out


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `ls | head` is fine
    a = sys.argv[1:]
    if len(a) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    st = S3(a[0]) if a[0].startswith("s3://") else Local(a[0])
    op = a[1]
    try:
        if op == "ls":
            for k in st.ls(a[2] if len(a) > 2 else ""):
                print(k)
        elif op == "get":
            open(a[3], "wb").write(st.get(a[2]))
        elif op == "put":
            st.put(a[3], open(a[2], "rb").read())
        elif op == "rm":
            st.rm(a[2])
        elif op == "cut":
            st.put(a[2], st.get(a[2])[: -int(a[3])])
        elif op == "flip":
            b = bytearray(st.get(a[2]))
            b[int(a[3])] ^= 0xFF
            st.put(a[2], bytes(b))
        elif op == "sha":
            print(hashlib.sha256(st.get(a[2])).hexdigest())
        elif op == "index-ok":
            problems = index_problems(st)
            for p in problems:
                print(p)
            return 1 if problems else 0
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (FileNotFoundError, urllib.error.HTTPError) as e:
        print(f"{op} {a[2:]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
