"""s3rver on loopback for the object-store scenarios: started as
tests/s3/harness.py starts it, with a request counter preloaded, and the
environment every S3 tool gets.

Python 3 standard library only."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from common import MiB, ROOT, CommandFailed, first_line, rm

S3RVER_JS = os.path.join(ROOT, "tests", "s3", "node_modules", "s3rver", "bin", "s3rver.js")
_HZ = os.sysconf("SC_CLK_TCK")

# Loaded into s3rver's node with -r: counts the HTTP requests the server
# receives, by method, and answers GET /__ssbench_counts with the counts so
# far (that request is answered before s3rver sees it and is not counted).
# This is the server's side of "requests per GiB pushed".
# GET /__ssbench_bytes answers the response body bytes sent so far, by
# method: what crossed the HTTP layer, whoever asked (the fleet scenario's
# "bytes fetched from the store").
S3_COUNTER_JS = r"""'use strict';
const http = require('http');
const counts = {};
const bytes = {};
const emit = http.Server.prototype.emit;
function size(chunk, enc) {
  if (!chunk || typeof chunk === 'function') return 0;
  return typeof chunk === 'string' ? Buffer.byteLength(chunk, typeof enc === 'string' ? enc : 'utf8')
                                   : chunk.length;
}
http.Server.prototype.emit = function (ev, req, res) {
  if (ev === 'request') {
    if (req.url === '/__ssbench_counts' || req.url === '/__ssbench_bytes') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(req.url === '/__ssbench_counts' ? counts : bytes));
      return true;
    }
    const m = req.method;
    counts[m] = (counts[m] || 0) + 1;
    const write = res.write, end = res.end;
    res.write = function (chunk, enc) {
      bytes[m] = (bytes[m] || 0) + size(chunk, enc);
      return write.apply(this, arguments);
    };
    res.end = function (chunk, enc) {
      bytes[m] = (bytes[m] || 0) + size(chunk, enc);
      return end.apply(this, arguments);
    };
  }
  return emit.apply(this, arguments);
};
"""

# What the S3 tools must not inherit from the caller: another account,
# profile or endpoint, or a CA bundle (rclone refuses to start when
# AWS_CA_BUNDLE names a file, even for plain http). As tests/s3/harness.py.
S3_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
            "AWS_CA_BUNDLE", "SNAPSTREAM_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


class S3rver:
    """s3rver from tests/s3/node_modules, started as tests/s3/harness.py
    starts it (node --openssl-legacy-provider, 127.0.0.1, a free port,
    --silent), with its data directory in the (tmpfs) workdir and the
    request counter preloaded. s3rver checks no signatures, so the untimed
    housekeeping here (make/empty buckets, copy objects out) is plain
    unsigned HTTP."""

    def __init__(self, wd):
        self.wd = wd
        self.proc = None
        self.data = os.path.join(wd, "s3rver-data")
        self.url = None

    @staticmethod
    def available():
        return bool(shutil.which("node")) and os.path.exists(S3RVER_JS)

    @staticmethod
    def version():
        try:
            with open(os.path.join(os.path.dirname(os.path.dirname(S3RVER_JS)), "package.json")) as f:
                v = json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            v = "?"
        return "s3rver %s on node %s" % (v, first_line(["node", "--version"]) or "?")

    def start(self, timeout=30):
        rm(self.data)
        os.makedirs(self.data)
        preload = os.path.join(self.wd, "s3rver-count.js")
        with open(preload, "w") as f:
            f.write(S3_COUNTER_JS)
        out_path = os.path.join(self.wd, "s3rver.out")
        self.err_path = os.path.join(self.wd, "s3rver.err")
        # s3rver encrypts continuation tokens with DES, which OpenSSL 3
        # keeps in its legacy provider.
        cmd = [shutil.which("node"), "--openssl-legacy-provider", "-r", preload, S3RVER_JS,
               "-d", self.data, "-a", "127.0.0.1", "-p", "0", "--silent"]
        with open(out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        end = time.time() + timeout
        while time.time() < end:
            with open(out_path, "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if "listening on" in line:
                        self.port = int(line.rsplit(":", 1)[1])
                        self.url = "http://127.0.0.1:%d" % self.port
                        return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        with open(self.err_path, "rb") as f:
            tail = f.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        raise CommandFailed("s3rver did not start: %s" % " | ".join(tail))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        rm(self.data)

    def cpu(self):
        """s3rver's CPU seconds so far (user+sys, all its threads)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # after the comm: state(3) ... utime(14) stime(15), 1-based
        return (int(fields[11]) + int(fields[12])) / _HZ

    def peak_rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def http(self, method, path, body=None, timeout=120):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def counts(self):
        st, body = self.http("GET", "/__ssbench_counts")
        if st != 200:
            raise CommandFailed("s3rver request counter answered HTTP %d" % st)
        return json.loads(body)

    def bytes_sent(self):
        """Response body bytes sent so far, by HTTP method."""
        st, body = self.http("GET", "/__ssbench_bytes")
        if st != 200:
            raise CommandFailed("s3rver byte counter answered HTTP %d" % st)
        return json.loads(body)

    def make_bucket(self, bucket):
        st, body = self.http("PUT", "/" + bucket)
        if st != 200:
            raise CommandFailed("s3rver: creating bucket %s: HTTP %d %s" % (bucket, st, body[:200]))

    def keys(self, bucket, prefix=""):
        """(key, size) of every object under prefix (ListObjectsV2, paged)."""
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, body = self.http("GET", "/%s?%s" % (bucket, urllib.parse.urlencode(q)))
            if st != 200:
                raise CommandFailed("s3rver: listing %s: HTTP %d" % (bucket, st))
            root = ET.fromstring(body)
            tag = lambda el: el.tag.rsplit("}", 1)[-1]
            token = None
            truncated = False
            for el in root:
                if tag(el) == "Contents":
                    f = {tag(c): c.text for c in el}
                    out.append((f["Key"], int(f.get("Size") or 0)))
                elif tag(el) == "NextContinuationToken":
                    token = el.text
                elif tag(el) == "IsTruncated":
                    truncated = el.text == "true"
            if not (truncated and token):
                return out

    def delete(self, bucket, key):
        st, _ = self.http("DELETE", "/%s/%s" % (bucket, urllib.parse.quote(key, safe="/")))
        if st not in (200, 204):
            raise CommandFailed("s3rver: deleting %s/%s: HTTP %d" % (bucket, key, st))

    def delete_prefix(self, bucket, prefix):
        for key, _ in self.keys(bucket, prefix):
            self.delete(bucket, key)

    def drop_bucket(self, bucket):
        for key, _ in self.keys(bucket):
            self.delete(bucket, key)
        self.http("DELETE", "/" + bucket)

    def mirror(self, bucket, prefix, dest):
        """Copy every object under prefix to dest/<key>: the bucket's layout
        is a local store's layout (as tests/s3_e2e.sh's aws s3 cp copy)."""
        for key, _ in self.keys(bucket, prefix):
            path = os.path.join(dest, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            req = urllib.request.Request("%s/%s/%s" % (self.url, bucket, urllib.parse.quote(key, safe="/")))
            with urllib.request.urlopen(req, timeout=300) as r, open(path, "wb") as f:
                shutil.copyfileobj(r, f, 4 * MiB)



    def env(self):
        """The environment every S3 tool gets: s3rver's fixed account, its
        endpoint, us-east-1, no user configuration (as tests/s3/harness.py),
        and rclone's remote S3R: defined by variables alone, no config file."""
        url = self.url
        return {
            "AWS_ACCESS_KEY_ID": "S3RVER",
            "AWS_SECRET_ACCESS_KEY": "S3RVER",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_CONFIG_S3R_TYPE": "s3",
            "RCLONE_CONFIG_S3R_PROVIDER": "Other",
            "RCLONE_CONFIG_S3R_ENDPOINT": url,
            "RCLONE_CONFIG_S3R_ACCESS_KEY_ID": "S3RVER",
            "RCLONE_CONFIG_S3R_SECRET_ACCESS_KEY": "S3RVER",
        }
