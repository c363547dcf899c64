#!/usr/bin/env bash
# make run: install what is missing, build Release, provision the SoftHSM2 demo in run/
# and serve in the foreground. XKS_LISTEN overrides the listen address (127.0.0.1:8443),
# XKS_METRICS_LISTEN the Prometheus metrics listener (127.0.0.1:9464; "off" disables it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh run
scripts/build.sh release
scripts/provision-demo.sh run
# shellcheck source=/dev/null
. run/env

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
if [ "${XKS_MTLS:-0}" = 1 ]; then
  client_cert="--cert $root/run/tls/client.pem --key $root/run/tls/client.key "
fi
cat <<MSG

xks-proxy demo: key store $url
KMS console import file: $root/run/kms-proxy-config.json (holds the secret; mode 0600)
$metrics_hint
Try it from another shell (bash or zsh):

  curl -sS ${client_cert}--cacert $root/run/tls/ca.pem --aws-sigv4 'aws:amz:us-east-1:kms-xks-proxy' \\
    $cred \\
    -H 'Content-Type: application/json' \\
    -d '{"requestMetadata":{"kmsRequestId":"demo-1","kmsOperation":"KmsHealthCheck"}}' \\
    $url/health; echo

  curl -sS ${client_cert}--cacert $root/run/tls/ca.pem --aws-sigv4 'aws:amz:us-east-1:kms-xks-proxy' \\
    $cred \\
    -H 'Content-Type: application/json' \\
    -d '{"requestMetadata":{"kmsRequestId":"demo-2","kmsOperation":"Encrypt","awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/demo"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}' \\
    $url/keys/demo-aes-key/encrypt; echo

MSG
exec build/release/xks-proxy --config run/xks-proxy.yaml
