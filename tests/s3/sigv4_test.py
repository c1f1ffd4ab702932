#!/usr/bin/python3
"""SigV4 signing test: the S3 backend's Authorization headers must be
identical to the ones botocore (Debian's python3-botocore) computes for the
same request, credentials and time.

Usage: sigv4_test.py <test_s3>

A local listener plays S3 (path-style, then virtual-hosted through
*.localhost, then path-style with the credentials and region read from
~/.aws/credentials and ~/.aws/config under AWS_PROFILE) and records every
request, and the connections they came on (they must be reused); `test_s3 sig` drives a PUT, a
conditional PUT, a multipart upload (initiate, parts, complete), a multipart
upload that fails and is aborted, ranged and suffix GETs, a two-page
ListObjectsV2 with a continuation token that needs encoding, HEAD and
DELETE, with a session token. Each recorded request is then signed again by
botocore's S3SigV4Auth at the request's own X-Amz-Date, with payload signing
on when we sent a SHA-256 (botocore hashes the body itself) and off when we
sent UNSIGNED-PAYLOAD; the two Authorization headers must match exactly.
"""
import datetime
import hashlib
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from urllib.parse import urlsplit, parse_qsl

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

AK = "AKIDSIGTEST0123456789"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSIGTESTKEY"
TOKEN = "FQoGZXIvYXdzEJr//////////wEaDSIGTESTsessiontoken+/="
REGION = "eu-west-3"
BUCKET = "sigbucket"
UPLOAD_ID = "up/1+2=3 x"           # needs encoding in the query
TOKEN2 = "tok/+=&x y"               # likewise
EXCLUDE = {"authorization", "x-amz-date", "content-length", "accept", "user-agent",
           "expect", "connection", "transfer-encoding"}


class Fake(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = {}
    parts = {}
    seen = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        host = self.headers.get("Host", "")
        u = urlsplit(self.path)
        q = dict(parse_qsl(u.query, keep_blank_values=True))
        vhost = host.startswith(BUCKET + ".")
        path = u.path if not vhost else "/" + BUCKET + u.path
        with self.lock:
            self.seen.append({"method": self.command, "path": self.path, "host": host,
                              "conn": self.client_address,
                              "headers": list(self.headers.items()), "body": body})
        parts = path.split("/", 2)
        key = parts[2] if len(parts) > 2 else ""
        m = self.command
        if m == "GET" and "list-type" in q:
            keys = sorted(k for k in self.store if k.startswith(q.get("prefix", "")))
            if "continuation-token" not in q:
                page, trunc = keys[:2], True
            else:
                assert q["continuation-token"] == TOKEN2, q
                page, trunc = keys[2:], False
            x = "".join("<Contents><Key>%s</Key><Size>%d</Size></Contents>" %
                        (k.replace("&", "&amp;"), len(self.store[k])) for k in page)
            tok = ("<NextContinuationToken>%s</NextContinuationToken>" %
                   TOKEN2.replace("&", "&amp;")) if trunc else ""
            doc = ('<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/'
                   '2006-03-01/"><Name>%s</Name><IsTruncated>%s</IsTruncated>%s%s'
                   '</ListBucketResult>' % (BUCKET, "true" if trunc else "false", x, tok))
            return self.reply(200, doc.encode())
        if m == "POST" and "uploads" in q:
            doc = ("<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>k</Key><UploadId>%s"
                   "</UploadId></InitiateMultipartUploadResult>" % (BUCKET, UPLOAD_ID))
            return self.reply(200, doc.encode())
        if m == "PUT" and "partNumber" in q:
            assert q["uploadId"] == UPLOAD_ID, q
            if key.endswith("fail-multi") and q["partNumber"] == "2":
                return self.reply(403, b"<Error><Code>AccessDenied</Code></Error>")
            self.parts[(key, int(q["partNumber"]))] = body
            return self.reply(200, headers=[("ETag", '"etag-%s"' % q["partNumber"])])
        if m == "POST" and "uploadId" in q:
            data = b"".join(v for (k, _), v in sorted(self.parts.items()) if k == key)
            self.store[key] = data
            return self.reply(200, b"<CompleteMultipartUploadResult><ETag>x</ETag>"
                                   b"</CompleteMultipartUploadResult>")
        if m == "DELETE" and "uploadId" in q:
            return self.reply(204)
        if m == "PUT":
            self.store[key] = body
            return self.reply(200, headers=[("ETag", '"e"')])
        if m in ("GET", "HEAD"):
            if key not in self.store:
                return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
            data = self.store[key]
            rng = self.headers.get("Range")
            if rng and m == "GET":
                a, b = rng[len("bytes="):].split("-")
                if a == "":
                    a, b = max(0, len(data) - int(b)), len(data) - 1
                a, b = int(a), min(int(b), len(data) - 1)
                return self.reply(206, data[a:b + 1],
                                  [("Content-Range", "bytes %d-%d/%d" % (a, b, len(data)))])
            if m == "HEAD":
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return None
            return self.reply(200, data)
        if m == "DELETE":
            self.store.pop(key, None)
            return self.reply(204)
        return self.reply(400)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one


class FixedClock(datetime.datetime):
    fixed = None

    @classmethod
    def utcnow(cls):
        return cls.fixed


def botocore_auth(rec):
    hdrs = {k: v for k, v in rec["headers"] if k.lower() not in EXCLUDE}
    ours = dict((k.lower(), v) for k, v in rec["headers"])
    unsigned = ours.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    req = AWSRequest(method=rec["method"], url="http://%s%s" % (rec["host"], rec["path"]),
                     data=rec["body"], headers=hdrs)
    req.context["client_config"] = Config(s3={"payload_signing_enabled": not unsigned})
    FixedClock.fixed = datetime.datetime.strptime(ours["x-amz-date"], "%Y%m%dT%H%M%SZ")
    real = datetime.datetime
    datetime.datetime = FixedClock
    try:
        S3SigV4Auth(Credentials(AK, SK, TOKEN), "s3", REGION).add_auth(req)
    finally:
        datetime.datetime = real
    return req.headers["Authorization"], req.headers["X-Amz-Content-SHA256"], ours


def run(binary, style, files=None):
    Fake.store.clear()
    Fake.parts.clear()
    Fake.seen.clear()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    port = srv.server_address[1]
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK, "AWS_SESSION_TOKEN": TOKEN,
                "AWS_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_ENDPOINT_URL": "http://%s:%d" % ("localhost" if style == "virtual"
                                                      else "127.0.0.1", port),
                "SNAPSTREAM_S3_ADDRESSING": style, "SNAPSTREAM_RETRY_MAX": "2",
                "SS_S3_URI": "s3://%s/pre" % BUCKET})
    if files:
        # Credentials from ~/.aws/credentials under AWS_PROFILE, the region
        # from ~/.aws/config, as the AWS tools read them.
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.pop(k, None)
        os.makedirs(os.path.join(files, ".aws"), exist_ok=True)
        with open(os.path.join(files, ".aws", "credentials"), "w") as f:
            f.write("[default]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n\n"
                    "[sigprof]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                    "aws_session_token = %s\n" % (AK, SK, TOKEN))
        with open(os.path.join(files, ".aws", "config"), "w") as f:
            f.write("[default]\nregion = us-west-1\n[profile sigprof]\nregion = %s\n" % REGION)
        env.update({"HOME": files, "AWS_PROFILE": "sigprof"})
    p = subprocess.run([binary, "sig"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    srv.shutdown()
    out = p.stdout.decode(errors="replace")
    fails = []
    if p.returncode != 0:
        fails.append("test_s3 sig failed:\n" + out)
    for secret in (SK, TOKEN):
        if secret in out:
            fails.append("a secret appeared in the client's output")
    kinds = set()
    for rec in Fake.seen:
        want, want_sha, ours = botocore_auth(rec)
        q = dict(parse_qsl(urlsplit(rec["path"]).query, keep_blank_values=True))
        kind = rec["method"] + (" uploads" if "uploads" in q else " part" if "partNumber" in q
                                else " complete" if rec["method"] == "POST"
                                else " abort" if "uploadId" in q else " list" if "list-type" in q
                                else "")
        if "continuation-token" in q:
            kind += "+token"
        if "range" in ours:
            kind += " range" + (" suffix" if ours["range"].startswith("bytes=-") else "")
        if "if-none-match" in ours:
            kind += " if-none-match"
        kinds.add(kind)
        if ours.get("authorization") != want:
            fails.append("%s %s:\n  ours:     %s\n  botocore: %s" %
                         (rec["method"], rec["path"], ours.get("authorization"), want))
        if ours.get("x-amz-content-sha256") != want_sha:
            fails.append("%s %s: x-amz-content-sha256 %s, botocore %s" %
                         (rec["method"], rec["path"], ours.get("x-amz-content-sha256"), want_sha))
        if "x-amz-security-token" not in ours.get("authorization", ""):
            fails.append("%s %s: the session token is not signed" % (rec["method"], rec["path"]))
    need = {"PUT", "PUT if-none-match", "POST uploads", "PUT part", "POST complete",
            "DELETE abort", "GET range", "GET range suffix", "GET list", "GET list+token",
            "HEAD", "DELETE"}
    missing = need - kinds
    if missing:
        fails.append("requests never seen: %s (seen: %s)" % (sorted(missing), sorted(kinds)))
    conns = len({r["conn"] for r in Fake.seen})
    if conns > 6:
        fails.append("%d connections for %d requests: connections are not reused" %
                     (conns, len(Fake.seen)))
    print("%s-style%s: %d requests on %d connections checked against botocore %s" %
          (style, " (credentials from ~/.aws)" if files else "", len(Fake.seen), conns,
           __import__("botocore").__version__))
    return fails


def main():
    fails = []
    for style in ("path", "virtual"):
        fails += run(sys.argv[1], style)
    with tempfile.TemporaryDirectory() as home:
        fails += run(sys.argv[1], "path", files=home)
    for f in fails:
        print("FAIL:", f)
    print("sigv4: %s" % ("ok" if not fails else "%d failures" % len(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
