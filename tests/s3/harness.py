#!/usr/bin/python3
"""Run a command against a real S3 server (s3rver, pinned in package-lock.json).

Usage: harness.py [--bucket NAME]... [--proxy ARGS] [--tls] -- command [args...]

Starts s3rver on a free loopback port with the buckets created, optionally a
fault-injecting proxy in front of it (tests/faultproxy.py, ARGS passed on),
exports the AWS environment that points at it, runs the command, and stops
everything afterwards, whatever happens. Exit status: the command's; 1 when
the server cannot start.

Environment given to the command:
  AWS_ENDPOINT_URL       the proxy if any, else s3rver
  SS_S3_DIRECT_ENDPOINT  s3rver itself
  SS_S3_BUCKET           the first bucket
  SS_PROXY_LOG           the proxy's fault log, when there is a proxy
  SS_TLS_CERT            with --tls: the self-signed certificate s3rver serves
                         (for 127.0.0.1), which no system CA vouches for
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY  s3rver's fixed credentials
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
S3RVER = os.path.join(HERE, "node_modules", "s3rver", "bin", "s3rver.js")
PROXY = os.path.join(HERE, "..", "faultproxy.py")


def read_port(proc, what, timeout=30):
    """Wait for a 'listening on ADDR:PORT' line from proc."""
    end = time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        text = line.decode(errors="replace").strip()
        if "listening on" in text:
            return int(text.rsplit(":", 1)[1])
    raise RuntimeError(f"{what} did not start")


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    args = sys.argv[1:]
    buckets, proxy_args, tls = [], None, False
    while args and args[0] != "--":
        if args[0] == "--tls":
            tls = True
            args = args[1:]
        elif args[0] == "--bucket":
            buckets.append(args[1])
            args = args[2:]
        elif args[0] == "--proxy":
            proxy_args = args[1].split()
            args = args[2:]
        else:
            print(f"harness: unknown option {args[0]}", file=sys.stderr)
            return 2
    cmd = args[1:]
    if not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    if not buckets:
        buckets = ["snapstream-test"]
    node = shutil.which("node")
    if not node or not os.path.exists(S3RVER):
        print("harness: s3rver is not installed: run scripts/setup.sh "
              "(it runs npm ci in tests/s3)", file=sys.stderr)
        return 1
    data = tempfile.mkdtemp(prefix="ss-s3rver.")
    server = proxy = None
    try:
        # s3rver encrypts continuation tokens with DES, which OpenSSL 3
        # keeps in its legacy provider.
        sargs = [node, "--openssl-legacy-provider", S3RVER, "-d", data, "-a", "127.0.0.1", "-p", "0", "--silent"]
        for b in buckets:
            sargs += ["--configure-bucket", b]
        cert = None
        if tls:
            key, cert = os.path.join(data, "key.pem"), os.path.join(data, "cert.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sargs += ["--key", key, "--cert", cert]
        server = subprocess.Popen(sargs, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        port = read_port(server, "s3rver")
        direct = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        env = dict(os.environ)
        # s3rver's built-in account; no user configuration may leak in.
        env.update({
            "AWS_ACCESS_KEY_ID": "S3RVER",
            "AWS_SECRET_ACCESS_KEY": "S3RVER",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "SS_S3_BUCKET": buckets[0],
            "SS_S3_DIRECT_ENDPOINT": direct,
            "AWS_ENDPOINT_URL": direct,
        })
        if cert:
            env["SS_TLS_CERT"] = cert
        for k in ("SNAPSTREAM_CA_BUNDLE", "AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            env.pop(k, None)
        env.pop("AWS_SESSION_TOKEN", None)
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_ENDPOINT_URL_S3", None)
        if proxy_args is not None:
            log = os.path.join(data, "proxy.log")
            proxy = subprocess.Popen(
                ["/usr/bin/python3", PROXY, "--upstream", f"127.0.0.1:{port}",
                 "--log", log] + proxy_args,
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            pport = read_port(proxy, "fault proxy")
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{pport}"
            env["SS_PROXY_LOG"] = log
        return subprocess.call(cmd, env=env)
    except RuntimeError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1
    finally:
        stop(proxy)
        stop(server)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
