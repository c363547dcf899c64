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
# The configuration carries the module's environment (hsm.environment); run/env is
# kept for other tools (softhsm2-util, pkcs11-tool) and sourced for them alike.
# shellcheck source=/dev/null
. run/env

scripts/demo-next-steps.sh "$root"
exec build/release/xks-proxy --config run/xks-proxy.yaml
