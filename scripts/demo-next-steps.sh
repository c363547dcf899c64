#!/usr/bin/env bash
# Prints what to do next with the demo that `make run` serves, in the order a newcomer
# needs it; every indented line (with its `\` continuations) is a command that works
# when pasted into another bash or zsh. tests/integration/test_docs.py runs them.
#
# Usage: scripts/demo-next-steps.sh [ROOT]   (default: this checkout; the demo is ROOT/run)
# Env:   XKS_LISTEN, XKS_METRICS_LISTEN, XKS_MTLS as for scripts/run-demo.sh
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
root=$(cd "$root" && pwd)

listen=${XKS_LISTEN:-127.0.0.1:8443}
port=${listen##*:}
url="https://127.0.0.1:$port/demo/kms/xks/v1"
# Where to scrape: a wildcard listen address is reached through loopback.
metrics_listen=${XKS_METRICS_LISTEN:-127.0.0.1:9464}
metrics_hint="Metrics: off (XKS_METRICS_LISTEN=off)"
if [ "$metrics_listen" != off ]; then
  metrics_host=${metrics_listen%:*}
  case $metrics_host in
    0.0.0.0) metrics_host=127.0.0.1 ;;
    "[::]") metrics_host="[::1]" ;;
  esac
  metrics_hint="Prometheus metrics (plain HTTP): curl -s http://$metrics_host:${metrics_listen##*:}/metrics"
fi
# The credential is read from run/kms-proxy-config.json when the command runs and is
# handed to curl through a config file (-K), so it is neither printed here nor on argv.
cred="-K <(sed -nE 's/.*\"AccessKeyId\": \"([^\"]+)\".*\"RawSecretAccessKey\": \"([^\"]+)\".*/user = \"\\1:\\2\"/p' $root/run/kms-proxy-config.json)"
# XKS_MTLS=1: the demo requires the client certificate (see provision-demo.sh).
client_cert=""
mtls_note=""
if [ "${XKS_MTLS:-0}" = 1 ]; then
  client_cert="--cert $root/run/tls/client.pem --key $root/run/tls/client.key "
  mtls_note=" (xksctl sends no client certificate: with XKS_MTLS=1 steps 2 and 3 are refused)"
fi
xksctl=$root/build/release/xksctl
cat <<MSG

xks-proxy demo: key store $url
Next, from another shell (bash or zsh)$mtls_note:

1. The health check, signed by curl:

  curl -sS ${client_cert}--cacert $root/run/tls/ca.pem --aws-sigv4 'aws:amz:us-east-1:kms-xks-proxy' \\
    $cred \\
    -H 'Content-Type: application/json' \\
    -d '{"requestMetadata":{"kmsRequestId":"demo-1","kmsOperation":"KmsHealthCheck"}}' \\
    $url/health; echo

2. An encrypt, with timings against KMS's 250 ms budget (xksctl trusts the demo's
   certificate because run/xks-proxy.yaml names it):

  $xksctl call encrypt --config $root/run/xks-proxy.yaml --plaintext hello

3. Everything KMS will check, PASS / WARN / FAIL:

  $xksctl doctor --config $root/run/xks-proxy.yaml

4. The proxy configuration file to import in the KMS console (it holds the secret;
   mode 0600): $root/run/kms-proxy-config.json

$metrics_hint

MSG
