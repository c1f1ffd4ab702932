#!/usr/bin/python3
"""GCS auth flows against a local endpoint that checks what it receives.

Usage: gcs_test.py <test_s3>

One local server plays the GCE metadata server, an OAuth2 token endpoint and
the GCS XML API. It issues short-lived tokens (4 s) and refuses storage
requests whose bearer token is unknown, expired or revoked; it revokes the
token on one key to force a 401. `test_s3 gcs-token` then runs parallel puts
(one token fetch must serve them all), waits past the refresh point and
reads again (a second fetch), and reads the revoked key (a third).

  metadata         tokens from the metadata server (Metadata-Flavor checked)
  service account  a JWT from a real RSA key (openssl genpkey): header alg,
                   typ and kid, claims iss/aud/scope/iat/exp, and the RS256
                   signature checked with `openssl dgst -verify`, exchanged at
                   the key file's token_uri
  refused          the token endpoint answers invalid_grant: the request
                   fails saying so
  unreachable      no metadata server: fails fast
  hmac             GCS HMAC keys: SigV4 headers checked with botocore
Finally no output of any run (verbose) may contain a token, the HMAC secret,
the private key or any part of a JWT.
"""
import base64
import datetime
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qsl, urlsplit

BUCKET = "gbucket"
EMAIL = "snap@test-project.iam.gserviceaccount.com"
KID = "kid-0123456789abcdef"
HMAC_ID = "GOOG1EHMACTESTACCESSID"
HMAC_SECRET = "hmacSECRETbase64+/abcdefghij0123456789"
LIFE = 4


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class State:
    def __init__(self):
        self.reset("metadata")

    def reset(self, mode, pubkey=None, refuse=False):
        self.mode = mode
        self.pubkey = pubkey
        self.refuse = refuse
        self.tokens = {}          # token -> expiry (time.time())
        self.revoked = set()
        self.fetches = 0
        self.fetch_times = []
        self.storage = []         # (time, ok, why)
        self.objects = {}
        self.errors = []
        self.issued = []
        self.revoked_once = False
        self.jwts = []


ST = State()
LOCK = threading.Lock()
ALL_ISSUED = []


def verify_jwt(jwt, token_uri):
    parts = jwt.split(".")
    if len(parts) != 3:
        return "JWT does not have three parts"
    hdr, claims = json.loads(b64d(parts[0])), json.loads(b64d(parts[1]))
    if hdr != {"alg": "RS256", "typ": "JWT", "kid": KID}:
        return "bad JWT header %r" % hdr
    now = time.time()
    if claims.get("iss") != EMAIL or claims.get("aud") != token_uri:
        return "bad iss/aud %r" % claims
    if "https://www.googleapis.com/auth/devstorage.read_write" not in claims.get("scope", ""):
        return "bad scope %r" % claims.get("scope")
    if claims.get("exp", 0) - claims.get("iat", 0) != 3600 or abs(claims["iat"] - now) > 60:
        return "bad iat/exp %r" % claims
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "data"), "wb").write((parts[0] + "." + parts[1]).encode())
        open(os.path.join(d, "sig"), "wb").write(b64d(parts[2]))
        p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", ST.pubkey, "-signature",
                            os.path.join(d, "sig"), os.path.join(d, "data")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            return "JWT signature does not verify: " + p.stdout.decode(errors="replace")
    return None


def check_hmac(h):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    ours = {k.lower(): v for k, v in h.headers.items()}
    excl = {"authorization", "x-amz-date", "content-length", "accept", "user-agent", "expect"}
    req = AWSRequest(method=h.command, url="http://%s%s" % (ours["host"], h.path),
                     data=h.body, headers={k: v for k, v in h.headers.items()
                                           if k.lower() not in excl})
    unsigned = ours.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    from botocore.config import Config
    req.context["client_config"] = Config(s3={"payload_signing_enabled": not unsigned})
    fixed = datetime.datetime.strptime(ours["x-amz-date"], "%Y%m%dT%H%M%SZ")

    class Clock(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return fixed
    real = datetime.datetime
    datetime.datetime = Clock
    try:
        S3SigV4Auth(Credentials(HMAC_ID, HMAC_SECRET), "s3", "auto").add_auth(req)
    finally:
        datetime.datetime = real
    if req.headers["Authorization"] != ours.get("authorization"):
        return "HMAC signature differs from botocore's"
    return None


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def issue(self):
        with LOCK:
            ST.fetches += 1
            ST.fetch_times.append(time.time())
            tok = "ya29.test-token-%d-%s" % (ST.fetches, os.urandom(6).hex())
            ST.tokens[tok] = time.time() + LIFE
            ST.issued.append(tok)
            ALL_ISSUED.append(tok)
        return self.reply(200, json.dumps({"access_token": tok, "expires_in": LIFE,
                                           "token_type": "Bearer"}).encode())

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        u = urlsplit(self.path)
        if u.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if ST.mode != "metadata" or self.headers.get("Metadata-Flavor") != "Google":
                ST.errors.append("metadata request without Metadata-Flavor: Google")
                return self.reply(403)
            return self.issue()
        if u.path == "/token":
            form = dict(parse_qsl(self.body.decode()))
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                ST.errors.append("bad grant_type %r" % form.get("grant_type"))
                return self.reply(400, b'{"error":"unsupported_grant_type"}')
            ST.jwts.append(form.get("assertion", ""))
            if ST.refuse:
                return self.reply(400, b'{"error":"invalid_grant","error_description":'
                                       b'"Invalid JWT Signature."}')
            why = verify_jwt(form.get("assertion", ""), "http://%s/token" % self.headers["Host"])
            if why:
                ST.errors.append(why)
                return self.reply(400, b'{"error":"invalid_grant"}')
            return self.issue()
        # Storage: /bucket/key
        parts = u.path.split("/", 2)
        if len(parts) < 3 or parts[1] != BUCKET:
            return self.reply(404, b"<Error><Code>NoSuchBucket</Code></Error>", "application/xml")
        key = parts[2]
        auth = self.headers.get("Authorization", "")
        now = time.time()
        if ST.mode == "hmac":
            why = check_hmac(self)
            if why:
                ST.errors.append(why)
                return self.reply(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
        else:
            tok = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            with LOCK:
                exp = ST.tokens.get(tok)
                if key.endswith("g/revoke") and not ST.revoked_once:
                    ST.revoked_once = True
                    ST.revoked.add(tok)
                    ok, why = False, "revoked on purpose"
                elif exp is None:
                    ok, why = False, "unknown token"
                elif tok in ST.revoked:
                    ok, why = False, "revoked token used again"
                elif exp < now:
                    ok, why = False, "expired token used"
                else:
                    ok, why = True, ""
                ST.storage.append((now, ok, why))
            if not ok:
                if why != "revoked on purpose":
                    ST.errors.append("storage request refused: " + why)
                return self.reply(401, b"<Error><Code>AuthenticationRequired</Code></Error>",
                                  "application/xml")
        if self.command == "PUT":
            ST.objects[key] = self.body
            return self.reply(200, extra=[("ETag", '"e"')])
        if self.command in ("GET", "HEAD"):
            data = ST.objects.get(key)
            if key.endswith("g/revoke"):
                data = b"0123456789"
            if data is None:
                return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            rng = self.headers.get("Range")
            if self.command == "HEAD":
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return None
            if rng:
                a, b = rng[6:].split("-")
                a, b = int(a), min(int(b), len(data) - 1)
                return self.reply(206, data[a:b + 1], "application/octet-stream",
                                  [("Content-Range", "bytes %d-%d/%d" % (a, b, len(data)))])
            return self.reply(200, data, "application/octet-stream")
        return self.reply(400)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_any


def run(binary, mode, env_extra, port):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "GCE_", "SNAPSTREAM_GCS_", "AWS_"))}
    env.update({"SNAPSTREAM_GCS_ENDPOINT": "http://127.0.0.1:%d" % port,
                "SS_S3_URI": "gs://%s/pfx" % BUCKET, "SS_TEST_VERBOSE": "1",
                "SNAPSTREAM_RETRY_MAX": "3", "SNAPSTREAM_RETRY_SECONDS": "20"})
    env.update(env_extra)
    p = subprocess.run([binary, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    return p.returncode, p.stdout.decode(errors="replace")


def main():
    binary = sys.argv[1]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    fails, outputs = [], []
    tmp = tempfile.mkdtemp(prefix="ss-gcs.")
    key = os.path.join(tmp, "key.pem")
    pub = os.path.join(tmp, "pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", key], check=True, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True)
    pem = open(key).read()
    keyfile = os.path.join(tmp, "sa.json")
    json.dump({"type": "service_account", "project_id": "test-project", "private_key_id": KID,
               "private_key": pem, "client_email": EMAIL, "client_id": "1",
               "token_uri": "http://127.0.0.1:%d/token" % port}, open(keyfile, "w"))

    def flow(name, mode, env, want_rc, checks):
        ST.reset(name, pubkey=pub, refuse=(name == "refused"))
        t0 = time.time()
        rc, out = run(binary, mode, env, port)
        outputs.append(out)
        secs = time.time() - t0
        print("--- %s (%.1f s, %d token fetches)\n%s" % (name, secs, ST.fetches, out.strip()))
        if rc != want_rc:
            fails.append("%s: exit %d, want %d" % (name, rc, want_rc))
        for e in ST.errors:
            fails.append("%s: server saw: %s" % (name, e))
        for ok, why in checks(out, secs):
            if not ok:
                fails.append("%s: %s" % (name, why))

    def token_checks(out, secs):
        first_storage = min((t for t, _, _ in ST.storage), default=0)
        before = sum(1 for t in ST.fetch_times if t <= first_storage)
        yield ST.fetches == 3, "want 3 token fetches (first, after expiry, after the 401), got %d" % ST.fetches
        yield before == 1, "%d fetches before the first storage request (parallel puts must share one)" % before
        yield sum(1 for _, ok, _ in ST.storage if not ok) == 1, "want exactly one refused request"

    flow("metadata", "gcs-token", {"GCE_METADATA_HOST": "127.0.0.1:%d" % port}, 0, token_checks)
    flow("service account", "gcs-token", {"GOOGLE_APPLICATION_CREDENTIALS": keyfile}, 0,
         lambda out, s: list(token_checks(out, s)) + [(len(ST.jwts) == 3, "JWTs sent: %d" % len(ST.jwts))])
    flow("refused", "gcs-fail", {"GOOGLE_APPLICATION_CREDENTIALS": keyfile}, 0,
         lambda out, s: [("invalid_grant" in out, "the error does not carry invalid_grant"),
                         (ST.fetches == 0 and len(ST.jwts) == 1, "a refused grant was retried")])
    flow("unreachable", "gcs-fail", {"GCE_METADATA_HOST": "127.0.0.1:1"}, 0,
         lambda out, s: [(s < 15, "took %.1f s" % s), ("metadata server" in out, "no reason given")])
    flow("hmac", "gcs-token", {"SNAPSTREAM_GCS_HMAC_ACCESS_ID": HMAC_ID,
                               "SNAPSTREAM_GCS_HMAC_SECRET": HMAC_SECRET}, 0,
         lambda out, s: [(ST.fetches == 0, "HMAC mode fetched a token")])

    # Nothing secret in any output, failing or verbose.
    secrets = [HMAC_SECRET, HMAC_ID, "PRIVATE KEY", pem.splitlines()[1][:40]]
    with LOCK:
        secrets += ALL_ISSUED
    blob = "\n".join(outputs)
    for s in secrets:
        if s and s in blob:
            fails.append("a secret appeared in the output: %s..." % s[:12])
    if "eyJ" in blob:
        fails.append("part of a JWT appeared in the output")
    srv.shutdown()
    subprocess.run(["rm", "-rf", tmp])
    for f in fails:
        print("FAIL:", f)
    print("gcs: %s" % ("ok" if not fails else "%d failures" % len(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
