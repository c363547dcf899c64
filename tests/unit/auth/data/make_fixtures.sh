#!/bin/sh
# Regenerates the SigV4 fixtures signed by independent implementations:
#   curl_*.http      signed by curl --aws-sigv4
#   botocore_*.http  signed by botocore.auth.SigV4Auth (Debian python3-botocore)
# Each request is sent to a throw-away listener on 127.0.0.1 that records the
# raw bytes as they arrived; <name>.meta records the time it arrived (the `now`
# the unit test verifies at) and the test-only credentials.
# Usage: tests/unit/auth/data/make_fixtures.sh   (needs curl, /usr/bin/python3)
set -eu
cd "$(dirname "$0")"

# Test-only credentials, shaped as the XKS spec requires (key id: 20-30 of
# A-Z 2-7; secret: 43-64 of A-Z a-z 0-9 + / =). They protect nothing.
AKID=XKSFIXTUREACCESSKEY234
SECRET=dGVzdC1vbmx5LXNlY3JldC1kby1ub3QtdXNlLTAwMDA=
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# listen <raw-output> <meta-output> <signer>: serves one request in the
# background and prints the port it listens on.
listen() {
  rm -f "$TMP/port"
  "$PY" - "$1" "$2" "$3" "$AKID" "$SECRET" >"$TMP/port" <<'PYEOF' &
import socket, sys, time
raw_out, meta_out, signer, akid, secret = sys.argv[1:6]
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
sys.stdout.close()
conn, _ = srv.accept()
conn.settimeout(10)
data = b""
while b"\r\n\r\n" not in data:
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
received = int(time.time())
head, _, body = data.partition(b"\r\n\r\n")
length = 0
for line in head.split(b"\r\n")[1:]:
    name, _, value = line.partition(b":")
    if name.strip().lower() == b"content-length":
        length = int(value.strip())
while len(body) < length:
    chunk = conn.recv(65536)
    if not chunk:
        break
    body += chunk
conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
conn.close()
with open(raw_out, "wb") as f:
    f.write(head + b"\r\n\r\n" + body)
with open(meta_out, "w") as f:
    f.write(f"now={received}\naccess_key_id={akid}\nsecret={secret}\nsigner={signer}\n")
PYEOF
  LISTENER=$!
  for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    [ -s "$TMP/port" ] && break
    sleep 0.2
  done
  PORT=$(cat "$TMP/port")
}

cat >"$TMP/encrypt.json" <<'JSON'
{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}
JSON
cat >"$TMP/health.json" <<'JSON'
{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"1124f4d6-db54-4af4-ae30-c55a22a8abcd"}}
JSON

# curl, as in Appendix D of the spec.
curl_fixture() {  # name path body
  listen "$1.http" "$1.meta" "$(curl --version | head -n1 | cut -d' ' -f1-2)"
  curl -sS -o /dev/null --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "$AKID:$SECRET" \
    -H 'Content-Type: application/json' -d @"$3" "http://127.0.0.1:$PORT$2"
  wait "$LISTENER"
}
curl_fixture curl_encrypt /xks/kms/xks/v1/keys/test-key_1.v2/encrypt "$TMP/encrypt.json"
curl_fixture curl_health /kms/xks/v1/health "$TMP/health.json"

# botocore: sign with SigV4Auth and send with botocore's own HTTP session.
botocore_fixture() {  # name path body region
  listen "$1.http" "$1.meta" "botocore $("$PY" -c 'import botocore; print(botocore.__version__)')"
  "$PY" - "$PORT" "$2" "$3" "$4" "$AKID" "$SECRET" <<'PYEOF'
import sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session
port, path, body_file, region, akid, secret = sys.argv[1:7]
body = open(body_file, "rb").read()
request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}{path}", data=body,
                     headers={"Content-Type": "application/json"})
SigV4Auth(Credentials(akid, secret), "kms-xks-proxy", region).add_auth(request)
response = URLLib3Session().send(request.prepare())
assert response.status_code == 200, response.status_code
PYEOF
  wait "$LISTENER"
}
botocore_fixture botocore_encrypt /xks/kms/xks/v1/keys/test-key_1.v2/encrypt "$TMP/encrypt.json" us-east-1
botocore_fixture botocore_health /kms/xks/v1/health "$TMP/health.json" eu-west-2

echo "fixtures written to $(pwd)"
