#!/usr/bin/python3
"""Sequential Encrypt latency against a running demo (`make run`).

N signed Encrypt requests, one after the other, on ONE keep-alive TLS connection.
Each request is signed by botocore before its timer starts; the timed region is
send + receive only. Prints p50/p90/p99/max in microseconds.

Usage: bench/seq_latency.py [--dir run] [--port 8443] [-n 1000] [--key demo-aes-key] [--size 32]
Needs Debian's /usr/bin/python3 (python3-botocore).
"""

import argparse
import base64
import http.client
import json
import os
import secrets
import socket
import ssl
import sys
import time
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "run"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("XKS_LISTEN", "127.0.0.1:8443").rsplit(":", 1)[1]))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--key", default="demo-aes-key")
    ap.add_argument("--size", type=int, default=32, help="plaintext bytes (a data key is 32)")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "kms-proxy-config.json")) as f:
        kms = json.load(f)
    cred = kms["XksProxyAuthenticationCredential"]
    auth = SigV4Auth(Credentials(cred["AccessKeyId"], cred["RawSecretAccessKey"]), "kms-xks-proxy", "us-east-1")
    path = f'{kms["XksProxyUriPath"]}/keys/{args.key}/encrypt'
    url = f"https://{args.host}:{args.port}{path}"
    ctx = ssl.create_default_context(cafile=os.path.join(args.dir, "tls", "ca.pem"))
    plaintext = base64.b64encode(secrets.token_bytes(args.size)).decode()

    def signed():
        body = json.dumps({
            "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:user/bench",
                                "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/bench",
                                "kmsOperation": "Encrypt", "kmsRequestId": str(uuid.uuid4())},
            "plaintext": plaintext, "encryptionAlgorithm": "AES_GCM"}).encode()
        req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
        auth.add_auth(req)
        headers = dict(req.headers.items())
        headers["Host"] = f"{args.host}:{args.port}"
        return body, headers

    conn = http.client.HTTPSConnection(args.host, args.port, context=ctx, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # measure the proxy, not Nagle
    sock = conn.sock
    lat = []
    errors = 0
    for i in range(args.warmup + args.n):
        body, headers = signed()
        t0 = time.perf_counter_ns()
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        t1 = time.perf_counter_ns()
        if r.status != 200:
            errors += 1
            if errors <= 3:
                print(f"request {i}: HTTP {r.status}", file=sys.stderr)
        if conn.sock is not sock:
            print(f"connection was not kept alive (request {i})", file=sys.stderr)
            return 1
        if i >= args.warmup:
            lat.append((t1 - t0) // 1000)
    conn.close()

    lat.sort()
    print(f"Encrypt {args.key} {args.size}-byte plaintext, {args.n} sequential requests on one "
          f"keep-alive TLS connection ({errors} errors)")
    print("p50={}us p90={}us p99={}us max={}us".format(
        percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), lat[-1] if lat else 0))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
