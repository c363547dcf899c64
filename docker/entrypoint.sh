#!/usr/bin/env bash
# Container entrypoint for xks-proxy.
#
#   (no arguments)          serve $XKS_CONFIG if it exists; otherwise provision the
#                           SoftHSM2 demo into $XKS_DEMO_DIR (first start only) and
#                           serve it on $XKS_LISTEN
#   --check-config, -...    passed to xks-proxy (with --config as above)
#   any other command       run it (e.g. `xksctl doctor --config ...`, `bash`)
#
# xks-proxy runs as PID 1's replacement (exec): SIGTERM drains and exits 0,
# SIGHUP reloads the configuration.
set -euo pipefail

config=${XKS_CONFIG:-/etc/xks-proxy/xks-proxy.yaml}
demo=${XKS_DEMO_DIR:-/var/lib/xks-proxy/demo}
scripts=${XKS_SCRIPTS_DIR:-/opt/xks-proxy/scripts}

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

if [ -e "$config" ]; then
  exec xks-proxy --config "$config" "$@"
fi

echo "xks-proxy-entrypoint: no configuration at $config; serving the SoftHSM2 demo from $demo" >&2
if ! command -v cc >/dev/null; then
  echo "xks-proxy-entrypoint: this image was built without the demo (XKS_DEMO=0); mount a" \
       "configuration at $config (see docker/README.md)" >&2
  exit 78
fi
# Idempotent: a restart with the same volume reuses the token, PINs, credential
# and certificates. Secrets stay in $demo/secrets (0600) and are never printed.
XKS_LISTEN=${XKS_LISTEN:-0.0.0.0:8443} "$scripts/provision-demo.sh" "$demo" >&2
# shellcheck source=/dev/null
. "$demo/env"
echo "xks-proxy-entrypoint: key store /demo/kms/xks/v1; KMS import file $demo/kms-proxy-config.json," \
     "CA $demo/tls/ca.pem (copy them out with docker cp)" >&2
exec xks-proxy --config "$demo/xks-proxy.yaml" "$@"
