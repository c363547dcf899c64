#!/usr/bin/env bash
# Provisions the embedded demo: a private token with the demo keys, a demo CA +
# server/client certificates, a fresh SigV4 credential and the proxy config.
#
# Usage: scripts/provision-demo.sh [DIR]        (default: run/)
# Env:   XKS_LISTEN   listen address written into the config (default 127.0.0.1:8443)
#        XKS_METRICS_LISTEN  where Prometheus GET /metrics is served, plain HTTP
#                     (default 127.0.0.1:9464; "off" leaves the metrics section out)
#        XKS_DEMO_HSM the PKCS#11 implementation that holds the demo keys:
#                     softhsm2 (default): a SoftHSM2 token in DIR/tokens;
#                     nss: NSS's softoken (Debian libnss3), its database in DIR/nssdb,
#                     the keys created with xksctl keys create ($XKSCTL_BIN, else
#                     build/release/xksctl, build/test/xksctl, or xksctl on PATH)
#        XKS_PKCS11_MODULE   PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so;
#                     for nss /usr/lib/x86_64-linux-gnu/libsoftokn3.so)
#
# Idempotent: a second run reuses the token, keys, PINs, credential and certificates
# and rewrites a generated file only if its content would change. Secrets go to
# DIR/secrets (0600, dir 0700) and are never printed.
set -euo pipefail
umask 077

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-run}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
hsm=${XKS_DEMO_HSM:-softhsm2}
listen=${XKS_LISTEN:-127.0.0.1:8443}
metrics_listen=${XKS_METRICS_LISTEN:-127.0.0.1:9464}
uri_path=/demo/kms/xks/v1
# LABEL:USAGE of each demo key; USAGE is ed (encrypt+decrypt), e, d or none.
demo_keys=(demo-aes-key:ed demo-encrypt-only:e demo-decrypt-only:d demo-no-usage:none
           demo-disabled:ed xks-health:ed)

case "$hsm" in
  softhsm2)
    module=${XKS_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
    token_label=xks-demo
    tools=(openssl cc pkg-config)
    packages=softhsm2
    ;;
  nss)
    module=${XKS_PKCS11_MODULE:-/usr/lib/x86_64-linux-gnu/libsoftokn3.so}
    # NSS softoken's key storage token; its PIN is the database password.
    token_label="NSS Certificate DB"
    tools=(openssl certutil)
    packages="libnss3 libnss3-tools"
    ;;
  *) echo "provision-demo: XKS_DEMO_HSM '$hsm' is neither softhsm2 nor nss" >&2; exit 2 ;;
esac

for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "provision-demo: '$tool' not found (run scripts/install-deps.sh test)" >&2; exit 1; }
done
[ -r "$module" ] || { echo "provision-demo: PKCS#11 module $module not found (install $packages)" >&2; exit 1; }

mkdir -p "$dir/secrets" "$dir/tls"
chmod 0700 "$dir" "$dir/secrets" "$dir/tls"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# write_file PATH MODE  < content: replaces PATH only when the content differs.
write_file() {
  local path=$1 mode=$2 new="$tmp/new"
  cat >"$new"
  if [ -f "$path" ] && cmp -s "$new" "$path"; then
    rm -f "$new"
  else
    mv -f "$new" "$path"
    echo "  wrote ${path#"$dir"/}"
  fi
  chmod "$mode" "$path"
}

# random_chars SET N: N random characters from the tr(1) set SET (no SIGPIPE games).
random_chars() {
  local set=$1 n=$2 out=""
  while [ ${#out} -lt "$n" ]; do
    out+=$(openssl rand -base64 512 | LC_ALL=C tr -dc "$set")
  done
  printf '%s' "${out:0:$n}"
}

# new_secret_file PATH SET N: creates PATH with a random value unless it exists.
new_secret_file() {
  if [ ! -s "$1" ]; then
    random_chars "$2" "$3" >"$1"
    echo "  created ${1#"$dir"/}"
  fi
  chmod 0600 "$1"
}

echo "provision-demo: $dir"

# --- Token (for NSS the keys follow the config, below) -----------------------------
if [ "$hsm" = softhsm2 ]; then
mkdir -p "$dir/tokens"
chmod 0700 "$dir/tokens"
write_file "$dir/softhsm2.conf" 0600 <<EOF
# Private SoftHSM2 configuration for the xks-proxy demo (generated).
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
write_file "$dir/env" 0600 <<EOF
# Source this before starting xks-proxy on this demo directory (generated).
export SOFTHSM2_CONF='$dir/softhsm2.conf'
EOF
export SOFTHSM2_CONF="$dir/softhsm2.conf"

new_secret_file "$dir/secrets/hsm.pin" 'A-Za-z0-9' 24
new_secret_file "$dir/secrets/hsm-so.pin" 'A-Za-z0-9' 24

# shellcheck disable=SC2046  # pkg-config output is meant to be split
cc -O2 -Wall -o "$tmp/p11-demo-keys" "$here/p11-demo-keys.c" $(pkg-config --cflags p11-kit-1) -ldl
"$tmp/p11-demo-keys" "$module" "$token_label" "$dir/secrets/hsm-so.pin" "$dir/secrets/hsm.pin" \
  "${demo_keys[@]}"
else
# NSS softoken keeps its token in one database (cert9.db, key4.db) whose password is
# the token's PIN. hsm.init_args names the database; no environment is needed.
write_file "$dir/env" 0600 <<EOF
# Source this before starting xks-proxy on this demo directory (generated).
EOF
new_secret_file "$dir/secrets/hsm.pin" 'A-Za-z0-9' 24
mkdir -p "$dir/nssdb"
chmod 0700 "$dir/nssdb"
if [ ! -s "$dir/nssdb/key4.db" ]; then
  certutil -N -d "sql:$dir/nssdb" -f "$dir/secrets/hsm.pin" >/dev/null
  echo "  created nssdb (NSS softoken database)"
fi
fi

# --- TLS: demo CA, server certificate (ECDSA P-256), mTLS client certificate --------
tls=$dir/tls
new_ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 0600 "$1"; }
serial() { echo "0x$(openssl rand -hex 16)"; }

if [ ! -s "$tls/ca.pem" ] || [ ! -s "$tls/ca.key" ]; then
  new_ec_key "$tls/ca.key"
  openssl req -x509 -new -key "$tls/ca.key" -sha256 -days 3650 -set_serial "$(serial)" \
    -subj "/O=xks-proxy demo/CN=xks-proxy demo CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$tls/ca.pem"
  rm -f "$tls/server.pem" "$tls/client.pem"   # re-issue under the new CA
  echo "  created tls/ca.pem"
fi

# issue NAME SUBJECT EXTENSIONS: NAME.key + NAME.pem signed by the demo CA.
issue() {
  local name=$1 subject=$2 ext=$3
  if [ -s "$tls/$name.pem" ] && [ -s "$tls/$name.key" ] &&
     openssl verify -CAfile "$tls/ca.pem" "$tls/$name.pem" >/dev/null 2>&1; then
    return 0
  fi
  new_ec_key "$tls/$name.key"
  openssl req -new -key "$tls/$name.key" -subj "$subject" -out "$tmp/$name.csr"
  printf '%s\n' "$ext" >"$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -set_serial "$(serial)" -days 825 -sha256 -extfile "$tmp/$name.ext" \
    -out "$tls/$name.pem" 2>/dev/null
  echo "  created tls/$name.pem"
}
issue server "/O=xks-proxy demo/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
issue client "/CN=cks.kms.us-east-1.amazonaws.com" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
chmod 0644 "$tls/ca.pem" "$tls/server.pem" "$tls/client.pem"
chmod 0600 "$tls/ca.key" "$tls/server.key" "$tls/client.key"

# --- SigV4 credential ------------------------------------------------------------
shopt -s nullglob
existing=("$dir"/secrets/*.secret)
shopt -u nullglob
if [ ${#existing[@]} -gt 1 ]; then
  echo "provision-demo: several credentials in $dir/secrets; keep one" >&2
  exit 1
elif [ ${#existing[@]} -eq 1 ]; then
  akid=$(basename "${existing[0]}" .secret)
  [[ $akid =~ ^[A-Z2-7]{20,30}$ ]] || { echo "provision-demo: bad credential file name ${existing[0]}" >&2; exit 1; }
else
  akid=$(random_chars 'A-Z2-7' 20)
  random_chars 'A-Za-z0-9+/' 48 >"$dir/secrets/$akid.secret"
  echo "  created secrets/$akid.secret"
fi
chmod 0600 "$dir/secrets/$akid.secret"
secret=$(cat "$dir/secrets/$akid.secret")

# --- Configs -----------------------------------------------------------------------
# XKS_MTLS=1: require the demo client certificate (mutual TLS, as KMS presents one).
tls_extra=""
if [ "${XKS_MTLS:-0}" = 1 ]; then
  tls_extra=", client_ca: tls/ca.pem, client_names: [cks.kms.us-east-1.amazonaws.com]"
fi
# Prometheus metrics on their own plain-HTTP listener; loopback unless told otherwise.
metrics_section=""
if [ "$metrics_listen" != off ]; then
  metrics_section="metrics: { listen: \"$metrics_listen\" }"
fi
# The hsm settings that differ between the two implementations.
if [ "$hsm" = softhsm2 ]; then
  hsm_lines="  vendor: softhsm2
  module: $module
  environment: { SOFTHSM2_CONF: softhsm2.conf }
  token_label: $token_label"
else
  # NSS softoken reads its database location from C_Initialize's pReserved.
  hsm_lines="  vendor: nss
  module: $module
  init_args: \"configdir='sql:$dir/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\"
  token_label: \"$token_label\""
fi
write_file "$dir/xks-proxy.yaml" 0600 <<EOF
# xks-proxy demo configuration (generated by scripts/provision-demo.sh).
# Relative paths resolve against this file's directory.
# allow_root: "make run" (and CI) start the demo as root by design; a production
# proxy sets server.user instead (see docs/security.md, "Running unprivileged").
server:  { listen: "$listen", threads: 0, fleet_size: 1, ping_path: /ping, allow_root: true }
tls:     { certificate: tls/server.pem, private_key: tls/server.key$tls_extra }
hsm:
$hsm_lines
  pin: { file: secrets/hsm.pin }
  sessions: 4
  health_key: xks-health
keystores:
  - uri_path: $uri_path
    credentials:
      - { access_key_id: $akid, secret: { file: secrets/$akid.secret } }
    keys:
      - { id: demo-aes-key }
      # Restricted on purpose (the conformance tests' error paths); doctor checks
      # the HSM keys match and KMS gets XksKeyInvalidConfigurationException for them.
      - { id: demo-encrypt-only, expect_usage: [ENCRYPT] }
      - { id: demo-decrypt-only, expect_usage: [DECRYPT] }
      - { id: demo-no-usage, expect_usage: [] }
      - { id: demo-disabled, enabled: false }
logging: { level: info, format: json }
$metrics_section
EOF

# --- NSS keys: made by xksctl keys create through the config just written -----------
if [ "$hsm" = nss ]; then
  xksctl=${XKSCTL_BIN:-}
  for cand in "$here/../build/release/xksctl" "$here/../build/test/xksctl"; do
    [ -n "$xksctl" ] || { [ -x "$cand" ] && xksctl=$cand; }
  done
  [ -n "$xksctl" ] || xksctl=$(command -v xksctl || true)
  [ -n "$xksctl" ] || { echo "provision-demo: xksctl not found (build it, or set XKSCTL_BIN)" >&2; exit 1; }
  listing=$("$xksctl" keys list --config "$dir/xks-proxy.yaml")
  for spec in "${demo_keys[@]}"; do
    label=${spec%%:*}
    case ${spec#*:} in
      ed) want=encrypt,decrypt ;;
      e) want=encrypt ;;
      d) want=decrypt ;;
      none) want=none ;;
    esac
    # keys list prints "  LABEL ID TYPE USAGES ..." for each secret key.
    have=$(awk -v l="$label" '$1 == l && NF >= 4 { print $4; exit }' <<<"$listing")
    if [ -z "$have" ]; then
      # CKA_ID = the label's bytes, as p11-demo-keys gives the SoftHSM2 keys.
      "$xksctl" keys create --config "$dir/xks-proxy.yaml" --label "$label" --usage "$want" \
        --id "$(printf '%s' "$label" | od -An -tx1 | tr -d ' \n')" | sed -n 's/^created /  created /p'
    elif [ "$have" != "$want" ]; then
      echo "provision-demo: key $label exists with usages $have, not $want; delete the NSS database $dir/nssdb to start over" >&2
      exit 1
    fi
  done
fi

# The KMS console's import format; it holds the raw secret, hence 0600.
write_file "$dir/kms-proxy-config.json" 0600 <<EOF
{"XksProxyUriPath": "$uri_path", "XksProxyAuthenticationCredential": {"AccessKeyId": "$akid", "RawSecretAccessKey": "$secret"}}
EOF
unset secret

metrics_note=""
[ "$metrics_listen" = off ] || metrics_note=", metrics http://$metrics_listen/metrics"
echo "provision-demo: ready (listen $listen, key store $uri_path, access key id $akid$metrics_note)"
