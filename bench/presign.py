#!/usr/bin/python3
"""Pre-signs XKS requests for a wrk replay (bench/lua/replay.lua).

Signs COUNT requests of one scenario with botocore's SigV4 signer (service
kms-xks-proxy, region us-east-1), each with its own kmsRequestId, and writes them as a
Lua table that replay.lua loads and rotates through. The Host header is the host:port wrk
sends, so the signature verifies. A SigV4 signature is accepted for 5 minutes: sign right
before each scenario. The same file is replayed against the nginx baseline, so both sides
receive byte-identical requests.

Scenarios: health, enc32, enc32cdiv, enc4300, enc4300cdiv, decrypt (decrypt first
encrypts a 32-byte plaintext through the proxy to get a real ciphertext).

Usage: bench/presign.py --dir DEMO --port PORT --scenario S [--count 64] --out FILE.lua
Needs Debian's /usr/bin/python3 (python3-botocore).
"""

import argparse
import base64
import http.client
import json
import os
import secrets
import ssl
import sys
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PRINCIPAL = "arn:aws:iam::123456789012:user/bench"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
SCENARIOS = ("health", "enc32", "enc32cdiv", "enc4300", "enc4300cdiv", "decrypt")


class Signer:
    def __init__(self, demo_dir, host, port, key):
        with open(os.path.join(demo_dir, "kms-proxy-config.json")) as f:
            kms = json.load(f)
        cred = kms["XksProxyAuthenticationCredential"]
        self.auth = SigV4Auth(Credentials(cred["AccessKeyId"], cred["RawSecretAccessKey"]),
                              "kms-xks-proxy", "us-east-1")
        self.prefix = kms["XksProxyUriPath"]
        self.host, self.port, self.key = host, port, key
        self.cafile = os.path.join(demo_dir, "tls", "ca.pem")

    def path(self, api):
        return self.prefix + ("/health" if api == "health" else f"/keys/{self.key}/{api}")

    def sign(self, api, body_obj):
        body = json.dumps(body_obj, separators=(",", ":")).encode()
        path = self.path(api)
        hostport = f"{self.host}:{self.port}"
        req = AWSRequest(method="POST", url=f"https://{hostport}{path}", data=body,
                         headers={"Content-Type": "application/json", "Host": hostport})
        self.auth.add_auth(req)
        headers = {k: v for k, v in req.headers.items()}
        headers["Host"] = hostport
        return {"method": "POST", "path": path, "headers": headers, "body": body.decode()}

    def call(self, signed):
        ctx = ssl.create_default_context(cafile=self.cafile)
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=10)
        try:
            conn.request(signed["method"], signed["path"], body=signed["body"].encode(),
                         headers=signed["headers"])
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            raise SystemExit(f"presign: {self.host}:{self.port}{signed['path']}: {e}")
        finally:
            conn.close()
        if r.status != 200:
            raise SystemExit(f"presign: {signed['path']} answered HTTP {r.status}: {data[:300]!r}")
        return json.loads(data)


def metadata(op):
    rm = {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": op}
    if op != "KmsHealthCheck":
        rm.update({"awsPrincipalArn": PRINCIPAL, "kmsKeyArn": KEY_ARN})
    return rm


def encrypt_body(size, cdiv):
    b = {"requestMetadata": metadata("Encrypt"),
         "plaintext": base64.b64encode(secrets.token_bytes(size)).decode(),
         "encryptionAlgorithm": "AES_GCM"}
    if cdiv:
        b["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
    return b


def build(signer, scenario, count):
    out = []
    if scenario == "health":
        for _ in range(count):
            out.append(signer.sign("health", {"requestMetadata": metadata("KmsHealthCheck")}))
    elif scenario.startswith("enc"):
        size = int(scenario[3:].replace("cdiv", ""))
        cdiv = scenario.endswith("cdiv")
        for _ in range(count):
            out.append(signer.sign("encrypt", encrypt_body(size, cdiv)))
    elif scenario == "decrypt":
        enc = signer.call(signer.sign("encrypt", encrypt_body(32, False)))
        for _ in range(count):
            b = {"requestMetadata": metadata("Decrypt"), "encryptionAlgorithm": "AES_GCM"}
            for k in ("ciphertext", "initializationVector", "authenticationTag", "ciphertextMetadata"):
                if k in enc:
                    b[k] = enc[k]
            out.append(signer.sign("decrypt", b))
        # Prove the replayed request succeeds before wrk hammers it.
        check = json.loads(out[0]["body"])
        check["requestMetadata"] = metadata("Decrypt")
        signer.call(signer.sign("decrypt", check))
    else:
        raise SystemExit(f"presign: unknown scenario {scenario!r} ({', '.join(SCENARIOS)})")
    return out


def lua_str(s):
    out = ['"']
    for ch in s.encode():
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= ch < 0x7f:
            out.append(c)
        else:
            out.append("\\%d" % ch)
    out.append('"')
    return "".join(out)


def to_lua(reqs):
    lines = ["return {"]
    for r in reqs:
        hdrs = ", ".join(f"[{lua_str(k)}] = {lua_str(v)}" for k, v in r["headers"].items())
        lines.append(f"  {{ method = {lua_str(r['method'])}, path = {lua_str(r['path'])}, "
                     f"headers = {{ {hdrs} }}, body = {lua_str(r['body'])} }},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="demo directory (kms-proxy-config.json, tls/ca.pem)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scenario", required=True, choices=SCENARIOS)
    ap.add_argument("--key", default="demo-aes-key")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", action="store_true", help="send the first request once and require HTTP 200")
    args = ap.parse_args()

    signer = Signer(args.dir, args.host, args.port, args.key)
    reqs = build(signer, args.scenario, args.count)
    if args.check and args.scenario != "decrypt":
        # Check one extra, separately signed request: the replayed ones stay unused.
        signer.call(build(signer, args.scenario, 1)[0])
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(to_lua(reqs))
    os.replace(tmp, args.out)
    print(f"presign: {len(reqs)} {args.scenario} requests, body {len(reqs[0]['body'])} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
