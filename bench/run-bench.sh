#!/usr/bin/env bash
# make bench: xks-proxy against an nginx baseline with the same TLS settings, driven by
# the same load generator (wrk) with the same connection counts, in one run.
# See docs/performance.md for the method and how to read the results.
#
# Steps: install nginx/wrk (scripts/install-deps.sh bench), build Release (build/release),
# provision the SoftHSM2 demo in bench/out/demo on free 127.0.0.1 ports, start the proxy and
# nginx, then per scenario: pre-sign requests with botocore (bench/presign.py), 2 s wrk
# warm-up, 10 s measured, same against nginx; new TLS connections/s (ECDSA, RSA-2048); an
# open-loop run at 1800 req/s (nginx, then the proxy, same generator); a mixed soak sampling RSS every 5 s; RSS with 1000 idle
# keep-alive connections. Writes bench/out/results.json and prints a table.
# Everything stops by itself; the proxy and nginx are stopped on exit.
#
# Env (defaults in brackets):
#   BENCH_DURATION [10] BENCH_WARMUP [2] seconds per scenario; BENCH_THREADS [2] and
#   BENCH_CONNECTIONS [64] for wrk; BENCH_OPEN_RATE [1800] BENCH_OPEN_SECONDS [30]
#   BENCH_OPEN_CONNECTIONS [16]; BENCH_SOAK_SECONDS [60] (600 for the issue's 10-minute run)
#   BENCH_SOAK_RATE [1800]; BENCH_IDLE_CONNECTIONS [1000]; BENCH_RSA [1] RSA-2048 handshakes;
#   BENCH_SKIP_BUILD [0] reuse build/release; BENCH_PERF [0] perf-record the proxy during
#   the measured Encrypt 32 B run (bench/out/perf.data, perf-report.txt);
#   BENCH_SCENARIOS [health enc32 enc32cdiv enc4300 enc4300cdiv decrypt];
#   BENCH_LOG_FLUSH_MS [200] the proxy's logging.flush_interval_ms (0: a write per line);
#   BENCH_ROUNDS [3] alternating rounds per scenario (proxy, nginx, HSM ceiling; the
#   report takes the median); BENCH_OVERLOAD [1] the overload phase, BENCH_OVERLOAD_SECONDS
#   [30], BENCH_OVERLOAD_FACTOR [2] (x the proxy's maximum), BENCH_OVERLOAD_CONNECTIONS [1500];
#   XKS_BENCH_QUICK=1 every phase a few seconds (checks the script, not a measurement).
# The HSM ceiling (bench/hsm_ceiling) opens the proxy's token with the proxy's sessions and
# worker count and makes only the PKCS#11 calls of each key operation; the report gives
# proxy / ceiling with ceiling = 1 / (1/nginx_rate + 1/hsm_rate).
# XKS_DEMO_HSM=nss measures on the NSS softoken demo instead of SoftHSM2.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=$root/bench/out
raw=$out/raw
# The NSS demo (XKS_DEMO_HSM=nss) gets its own directory next to the SoftHSM2 one.
demo=$out/demo
[ "${XKS_DEMO_HSM:-softhsm2}" = softhsm2 ] || demo=$out/demo-$XKS_DEMO_HSM
py=/usr/bin/python3

# Quick mode: every phase a few seconds, to check the script on a busy machine. Its
# figures are not measurements.
if [ "${XKS_BENCH_QUICK:-0}" = 1 ]; then
  : "${BENCH_DURATION:=3}" "${BENCH_WARMUP:=1}" "${BENCH_OPEN_SECONDS:=3}" "${BENCH_SOAK_SECONDS:=5}"
  : "${BENCH_IDLE_CONNECTIONS:=200}" "${BENCH_RSA:=0}" "${BENCH_OVERLOAD_SECONDS:=4}"
  : "${BENCH_OVERLOAD_CONNECTIONS:=600}"
fi
DUR=${BENCH_DURATION:-10}
WARM=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-3}
OVERLOAD=${BENCH_OVERLOAD:-1}
OVL_SECONDS=${BENCH_OVERLOAD_SECONDS:-30}
OVL_FACTOR=${BENCH_OVERLOAD_FACTOR:-2}
OVL_CONNS=${BENCH_OVERLOAD_CONNECTIONS:-1500}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
OPEN_RATE=${BENCH_OPEN_RATE:-1800}
OPEN_SECONDS=${BENCH_OPEN_SECONDS:-30}
OPEN_CONNS=${BENCH_OPEN_CONNECTIONS:-16}
SOAK=${BENCH_SOAK_SECONDS:-60}
SOAK_RATE=${BENCH_SOAK_RATE:-1800}
IDLE=${BENCH_IDLE_CONNECTIONS:-1000}
RSA=${BENCH_RSA:-1}
PERF=${BENCH_PERF:-0}
SCENARIOS=${BENCH_SCENARIOS:-health enc32 enc32cdiv enc4300 enc4300cdiv decrypt}

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "run-bench: $*" >&2; exit 1; }

# --- dependencies and build --------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "dependencies (scripts/install-deps.sh bench)"
  scripts/install-deps.sh bench
  log "build Release (build/release)"
  scripts/build.sh release xks-proxy xksctl hsm_ceiling
fi
for t in nginx wrk "$py"; do command -v "$t" >/dev/null || die "'$t' not found (scripts/install-deps.sh bench)"; done
proxy_bin=$root/build/release/xks-proxy
xksctl=$root/build/release/xksctl
ceiling_bin=$root/build/release/bench/hsm_ceiling
[ -x "$proxy_bin" ] || die "$proxy_bin not built"
[ -x "$ceiling_bin" ] || die "$ceiling_bin not built (scripts/build.sh release hsm_ceiling)"

mkdir -p "$out" "$raw"
rm -f "$raw"/*.json "$raw"/*.txt "$raw"/*.lua "$out/results.json"
# 1000 idle connections need file descriptors in the proxy and in bench/memory.py.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {  # wait_port PORT PID: until a TLS server answers on PORT (10 s)
  local i
  for i in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || return 1
    if "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2).close()" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

proxy_port=$(free_port)
nginx_port=$(free_port)
[ "$proxy_port" != "$nginx_port" ] || nginx_port=$(free_port)
# The demo serves Prometheus metrics too: a free port, not 9464, which a concurrent
# `make run` or test daemon may hold.
metrics_port=$(free_port)
while [ "$metrics_port" = "$proxy_port" ] || [ "$metrics_port" = "$nginx_port" ]; do metrics_port=$(free_port); done

# --- demo provisioning ----------------------------------------------------------------
log "provision the demo in bench/out/demo (proxy on 127.0.0.1:$proxy_port)"
XKS_LISTEN=127.0.0.1:$proxy_port XKS_METRICS_LISTEN=127.0.0.1:$metrics_port \
  scripts/provision-demo.sh "$demo" >&2
grep -q 'allow_root: true' "$demo/xks-proxy.yaml" || die "$demo/xks-proxy.yaml lacks server.allow_root: true"
# The access log stays on (one line per request, as in production) but batched, as
# docs/configuration.md advises at these rates: logging.flush_interval_ms: 200.
# BENCH_LOG_FLUSH_MS=0 measures a write(2) per line instead.
sed -i "s/^logging: { level: info, format: json }\$/logging: { level: info, format: json, flush_interval_ms: ${BENCH_LOG_FLUSH_MS:-200} }/" \
  "$demo/xks-proxy.yaml"
grep -q "flush_interval_ms: ${BENCH_LOG_FLUSH_MS:-200} }" "$demo/xks-proxy.yaml" \
  || die "cannot set logging.flush_interval_ms in $demo/xks-proxy.yaml"
# shellcheck source=/dev/null
. "$demo/env"

# RSA-2048 server certificate from the same demo CA, for the RSA handshake comparison.
if [ "$RSA" = 1 ] && { [ ! -s "$demo/tls/bench-rsa.pem" ] || [ ! -s "$demo/tls/bench-rsa.key" ]; }; then
  ( umask 077
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$demo/tls/bench-rsa.key" 2>/dev/null
    openssl req -new -key "$demo/tls/bench-rsa.key" -subj "/O=xks-proxy demo/CN=localhost" -out "$out/rsa.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$out/rsa.ext"
    openssl x509 -req -in "$out/rsa.csr" -CA "$demo/tls/ca.pem" -CAkey "$demo/tls/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$out/rsa.ext" \
      -out "$demo/tls/bench-rsa.pem" 2>/dev/null
    rm -f "$out/rsa.csr" "$out/rsa.ext" )
fi

# --- processes: started here, stopped on exit ---------------------------------------
proxy_pid=""
nginx_pid=""
perf_pid=""
stop_pid() {  # stop_pid PID: TERM, then KILL after 5 s
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$perf_pid"
  stop_pid "$proxy_pid"
  stop_pid "$nginx_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_proxy() {  # start_proxy CONFIG PORT LOG
  "$proxy_bin" --config "$1" >>"$3" 2>&1 &
  proxy_pid=$!
  wait_port "$2" "$proxy_pid" || { tail -20 "$3" >&2; die "xks-proxy did not start (log: $3)"; }
}
start_nginx() {  # start_nginx NAME PORT CERT KEY
  local dir=$out/$1
  mkdir -p "$dir"
  sed -e "s|@OUT@|$dir|g" -e "s|@PORT@|$2|g" -e "s|@CERT@|$3|g" -e "s|@KEY@|$4|g" \
    "$root/bench/nginx/nginx.conf.in" >"$dir/nginx.conf"
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >>"$dir/stdout.log" 2>&1 &
  nginx_pid=$!
  wait_port "$2" "$nginx_pid" || { tail -20 "$dir/error.log" >&2; die "nginx did not start"; }
}
# The proxy's access log (one JSON line per request) goes to a file like a journal would
# take it; between phases keep only what is not an info line, so the disk stays small.
proxy_log=$out/proxy.log
trim_log() {
  [ -f "$proxy_log" ] || return 0
  grep -v '"level":"info"' "$proxy_log" | tail -n 200 >>"$out/proxy-warnings.log" || true
  : >"$proxy_log"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# CPU time (utime+stime of all threads, clock ticks) of the server under test: the proxy,
# or nginx's master and workers (CPU_OF=nginx). Wall-clock rates on a shared machine depend
# on what else runs; CPU per request much less.
CPU_OF=proxy
cpu_ticks() {
  local s=0 p pids
  if [ "$CPU_OF" = nginx ]; then pids="$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"; else pids=$proxy_pid; fi
  for p in $pids; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$s"
}

# tls_full NAME PORT: full TLS handshakes/s from BENCH_STIME_PROCS parallel
# `openssl s_time -new` clients, which never resume (wrk resumes with TLS 1.3 tickets).
STIME_PROCS=${BENCH_STIME_PROCS:-4}
tls_full() {
  local name=$1 port=$2 i pids=() t0 t1 c0 c1
  c0=$(cpu_ticks); t0=$(date +%s.%N)
  for i in $(seq 1 "$STIME_PROCS"); do
    openssl s_time -connect "127.0.0.1:$port" -new -time "$DUR" -www /ping >"$raw/$name.stime.$i.txt" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  t1=$(date +%s.%N); c1=$(cpu_ticks)
  "$py" - "$raw" "$name" "$STIME_PROCS" "$t0" "$t1" "$((c1 - c0))" "$(getconf CLK_TCK)" "$(loadavg)" \
    >"$raw/$name.json" <<'EOF'
import json, re, sys
raw, name, procs, t0, t1, ticks, tck, load = sys.argv[1:]
n = 0
for i in range(1, int(procs) + 1):
    m = re.search(r"(\d+) connections in \d+ real seconds", open(f"{raw}/{name}.stime.{i}.txt").read())
    n += int(m.group(1)) if m else 0
secs = float(t1) - float(t0)
cpu = int(ticks) / int(tck)
r = {"requests": n, "duration_s": secs, "rps": n / secs, "errors": {}, "clients": int(procs),
     "generator": "openssl s_time -new", "server_cpu_s": cpu, "cpu_us_per_request": 1e6 * cpu / max(1, n),
     "loadavg_after": load, "latency_us": None}
print(json.dumps(r))
print(f"  {name:<22} {r['rps']:>10.0f} conn/s {r['cpu_us_per_request']:6.1f} us CPU/conn", file=sys.stderr)
EOF
}

# wrk_run NAME URL [wrk args...]: warm-up, then the measured run; JSON to raw/NAME.json
wrk_run() {
  local name=$1 url=$2
  shift 2
  wrk -t"$THREADS" -c"$CONNS" -d"${WARM}s" --timeout 5s -s "$root/bench/lua/replay.lua" "$@" "$url" >/dev/null
  local load_before cpu0 cpu1
  load_before=$(loadavg)
  cpu0=$(cpu_ticks)
  wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --timeout 5s -s "$root/bench/lua/replay.lua" "$@" "$url" \
    >"$raw/$name.wrk.txt"
  cpu1=$(cpu_ticks)
  local line
  line=$(sed -n 's/^BENCH_JSON //p' "$raw/$name.wrk.txt")
  [ -n "$line" ] || { cat "$raw/$name.wrk.txt" >&2; die "wrk printed no result for $name"; }
  "$py" - "$line" "$load_before" "$(loadavg)" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" >"$raw/$name.json" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]); r["loadavg_before"] = sys.argv[2]; r["loadavg_after"] = sys.argv[3]
r["server_cpu_s"] = int(sys.argv[4]) / int(sys.argv[5])
r["cpu_us_per_request"] = 1e6 * r["server_cpu_s"] / max(1, r["requests"])
print(json.dumps(r))
EOF
  "$py" - "$raw/$name.json" "$name" >&2 <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_us"]; e = sum(r["errors"].values())
print(f"  {sys.argv[2]:<22} {r['rps']:>10.0f} req/s {r['cpu_us_per_request']:6.1f} us CPU/req  p50 {l['p50']/1000:.2f} ms  p99 {l['p99']/1000:.2f} ms  p99.9 {l['p999']/1000:.2f} ms  errors {e}")
EOF
}

echo "{\"loadavg_start\": \"$(loadavg)\", \"started\": \"$(date -u +%FT%TZ)\"}" >"$raw/meta.json"

# --- keep-alive scenarios ------------------------------------------------------------
log "start xks-proxy (Release) on 127.0.0.1:$proxy_port and nginx on 127.0.0.1:$nginx_port"
: >"$proxy_log"
start_proxy "$demo/xks-proxy.yaml" "$proxy_port" "$proxy_log"
start_nginx nginx "$nginx_port" "$demo/tls/server.pem" "$demo/tls/server.key"
echo "$proxy_pid" >"$out/proxy.pid"

# The health cache fills in the background: wait until GetHealthStatus answers 200.
for i in $(seq 1 50); do
  "$py" "$root/bench/presign.py" --dir "$demo" --port "$proxy_port" --scenario health --count 1 \
    --out "$raw/health-probe.lua" --check >/dev/null 2>&1 && break
  [ "$i" = 50 ] && die "GetHealthStatus never answered 200 (log: $proxy_log)"
  sleep 0.2
done

# hsm_run NAME SCENARIO: the HSM's own ceiling for the key operation of SCENARIO
# (bench/hsm_ceiling, same token, sessions and worker count as the proxy); none for health.
hsm_run() {
  local name=$1 op size=32
  case "$2" in
    enc32) op=encrypt ;; enc32cdiv) op=cdiv ;; decrypt) op=decrypt ;;
    enc4300) op=encrypt size=4300 ;; enc4300cdiv) op=cdiv size=4300 ;;
    *) return 0 ;;
  esac
  "$ceiling_bin" --config "$demo/xks-proxy.yaml" --op "$op" --size "$size" --warmup "$WARM" \
    --seconds "$DUR" --json >"$raw/$name.json" 2>"$raw/$name.err" \
    || { cat "$raw/$name.err" >&2; die "hsm_ceiling failed for $2"; }
  "$py" - "$raw/$name.json" "$name" "$op" >&2 <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); o = j["ops"][sys.argv[3]]
print(f"  {sys.argv[2]:<22} {o['ops_per_s']:>10.0f} ops/s {o['cpu_us_per_op']:6.1f} us CPU/op  ({j['threads']} threads, {j['sessions']} sessions)")
EOF
}

log "keep-alive scenarios: wrk -t$THREADS -c$CONNS, ${WARM} s warm-up + ${DUR} s each, $ROUNDS alternating rounds of proxy, nginx, HSM ceiling"
for s in $SCENARIOS; do
  for r in $(seq 1 "$ROUNDS"); do
    # Signed right before use: SigV4 signatures are accepted for 5 minutes.
    "$py" "$root/bench/presign.py" --dir "$demo" --port "$proxy_port" --scenario "$s" --count 64 \
      --out "$raw/$s.lua" --check >&2
    if [ "$PERF" = 1 ] && [ "$s" = enc32 ] && [ "$r" = 1 ]; then
      (sleep "$WARM"; exec perf record -g -e task-clock -F 999 -p "$proxy_pid" -o "$out/perf.data" \
         -- sleep "$DUR") >"$out/perf-record.log" 2>&1 &
      perf_pid=$!
    fi
    BENCH_REQUESTS=$raw/$s.lua wrk_run "proxy-$s.r$r" "https://127.0.0.1:$proxy_port/"
    trim_log
    if [ -n "$perf_pid" ]; then
      wait "$perf_pid" || true
      perf_pid=""
      perf report -i "$out/perf.data" --no-children --percent-limit 0.5 --stdio 2>/dev/null \
        | head -n 400 >"$out/perf-report.txt" || true
    fi
    CPU_OF=nginx BENCH_REQUESTS=$raw/$s.lua wrk_run "nginx-$s.r$r" "https://127.0.0.1:$nginx_port/"
    hsm_run "hsm-$s.r$r" "$s"
  done
done

# --- new TLS connections per second ---------------------------------------------------
log "new TLS connections/s (ECDSA P-256): full handshakes (openssl s_time -new x$STIME_PROCS), resumptions (wrk, Connection: close)"
tls_full proxy-conn-ecdsa "$proxy_port"
CPU_OF=nginx tls_full nginx-conn-ecdsa "$nginx_port"
wrk_run proxy-resume-ecdsa "https://127.0.0.1:$proxy_port/ping" -H "Connection: close"
trim_log
CPU_OF=nginx wrk_run nginx-resume-ecdsa "https://127.0.0.1:$nginx_port/ping" -H "Connection: close"

log "memory baseline: nginx (2 workers) with $IDLE idle keep-alive TLS connections"
"$py" "$root/bench/memory.py" --pid "$(pgrep -P "$nginx_pid" | paste -sd,)" --port "$nginx_port" \
  --cafile "$demo/tls/ca.pem" -n "$IDLE" >"$raw/memory-nginx.json" || true
cat "$raw/memory-nginx.json" >&2

# --- open loop ---------------------------------------------------------------------------
# xksctl bench: requests at fixed intended times, latency from the intended send time. The
# same generator drives nginx first (it answers any POST with its fixed JSON): the latency
# this machine gives a server that does no work, to read the proxy's figures against.
openloop=("$xksctl" bench --config "$demo/xks-proxy.yaml" --cacert "$demo/tls/ca.pem" --json
          --api encrypt --rate "$OPEN_RATE" --duration "$OPEN_SECONDS" --connections "$OPEN_CONNS")
log "open loop: encrypt at $OPEN_RATE req/s for $OPEN_SECONDS s over $OPEN_CONNS connections (xksctl bench), nginx then proxy"
show_openloop() {
  "$py" - "$1" >&2 <<'EOF' || die "open loop produced no JSON: $(head -c 500 "$1")"
import json, sys
j = json.load(open(sys.argv[1])); l = j["latency_ms"]
print(f"  {j['requests_per_second']:.0f} req/s  p50 {l['p50']:.2f} ms  p99 {l['p99']:.2f} ms  p99.9 {l['p99.9']:.2f} ms"
      f"  max {l['max']:.2f} ms  errors {j['errors']} transport {j.get('transport_errors', 0)}")
r = j.get("latency_ms_refused")
if r and r["count"]:
    print(f"  {j['ok_per_second']:.0f} ok/s; refused (429/503) {r['count']}: p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms max {r['max']:.2f} ms")
EOF
}
"${openloop[@]}" --endpoint "https://127.0.0.1:$nginx_port" >"$raw/openloop-nginx.json" || true
show_openloop "$raw/openloop-nginx.json"
stop_pid "$nginx_pid"; nginx_pid=""   # nothing else on the cores during the proxy's latency runs
"${openloop[@]}" --endpoint "https://127.0.0.1:$proxy_port" >"$raw/openloop.json" || true
show_openloop "$raw/openloop.json"
trim_log

# --- overload: open loop at BENCH_OVERLOAD_FACTOR x the proxy's maximum ------------------
# The maximum is the same generator's closed-loop rate (xksctl bench, $CONNS connections),
# so both sides of the comparison pay the same generator CPU per request. Then the open
# loop offers FACTOR x that for OVL_SECONDS over OVL_CONNS connections (more than the HSM
# queue holds, so the proxy, not the generator, decides what waits), and right after a
# short run at OPEN_RATE shows whether the proxy serves normally once the load drops.
if [ "$OVERLOAD" = 1 ]; then
  log "overload: closed-loop maximum, then ${OVL_FACTOR}x open loop for $OVL_SECONDS s over $OVL_CONNS connections, then $OPEN_RATE req/s"
  ovl=("$xksctl" bench --config "$demo/xks-proxy.yaml" --cacert "$demo/tls/ca.pem" --json
       --endpoint "https://127.0.0.1:$proxy_port" --api encrypt)
  "${ovl[@]}" --connections "$CONNS" --duration "$DUR" >"$raw/overload-max.json" || true
  show_openloop "$raw/overload-max.json"
  max_rate=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['ok_per_second'])" "$raw/overload-max.json")
  offered=$("$py" -c "print(round(float('$max_rate') * float('$OVL_FACTOR')))")
  "${ovl[@]}" --connections "$OVL_CONNS" --rate "$offered" --duration "$OVL_SECONDS" \
    >"$raw/overload.json" || true
  show_openloop "$raw/overload.json"
  "${ovl[@]}" --connections "$OPEN_CONNS" --rate "$OPEN_RATE" --duration "$OPEN_SECONDS" \
    >"$raw/overload-after.json" || true
  show_openloop "$raw/overload-after.json"
  trim_log
fi

# --- soak: mixed open-loop load, RSS every 5 s -----------------------------------------
log "soak: mixed load at $SOAK_RATE req/s for $SOAK s, RSS every 5 s"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status"; }
"$xksctl" bench --config "$demo/xks-proxy.yaml" --cacert "$demo/tls/ca.pem" --json \
  --endpoint "https://127.0.0.1:$proxy_port" --api mix --rate "$SOAK_RATE" --duration "$SOAK" \
  --connections "$OPEN_CONNS" >"$raw/soak-load.json" &
soak_pid=$!
t0=$(date +%s)
: >"$raw/soak-rss.txt"
while kill -0 "$soak_pid" 2>/dev/null; do
  echo "$(( $(date +%s) - t0 )) $(rss)" >>"$raw/soak-rss.txt"
  for i in 1 2 3 4 5; do if kill -0 "$soak_pid" 2>/dev/null; then sleep 1; fi; done
  # Keep the disk small on 10-minute runs.
  [ "$(stat -c %s "$proxy_log")" -lt 200000000 ] || trim_log
done
wait "$soak_pid" || true
soak_pid=""
echo "$(( $(date +%s) - t0 )) $(rss)" >>"$raw/soak-rss.txt"
trim_log

# --- RSS with idle keep-alive connections -----------------------------------------------
log "memory: $IDLE idle keep-alive TLS connections"
"$py" "$root/bench/memory.py" --pid "$proxy_pid" --port "$proxy_port" --cafile "$demo/tls/ca.pem" \
  -n "$IDLE" >"$raw/memory.json"
cat "$raw/memory.json" >&2
trim_log

# --- RSA-2048 handshakes ---------------------------------------------------------------------
if [ "$RSA" = 1 ]; then
  log "new TLS connections/s with an RSA-2048 certificate (proxy restarted on it)"
  stop_pid "$proxy_pid"; proxy_pid=""
  sed -e 's|certificate: tls/server.pem|certificate: tls/bench-rsa.pem|' \
      -e 's|private_key: tls/server.key|private_key: tls/bench-rsa.key|' \
      "$demo/xks-proxy.yaml" >"$demo/xks-proxy-rsa.yaml"
  chmod 0600 "$demo/xks-proxy-rsa.yaml"
  grep -q bench-rsa.pem "$demo/xks-proxy-rsa.yaml" || die "cannot derive the RSA config"
  start_proxy "$demo/xks-proxy-rsa.yaml" "$proxy_port" "$proxy_log"
  tls_full proxy-conn-rsa "$proxy_port"
  wrk_run proxy-resume-rsa "https://127.0.0.1:$proxy_port/ping" -H "Connection: close"
  stop_pid "$proxy_pid"; proxy_pid=""
  trim_log
  start_nginx nginx-rsa "$nginx_port" "$demo/tls/bench-rsa.pem" "$demo/tls/bench-rsa.key"
  CPU_OF=nginx tls_full nginx-conn-rsa "$nginx_port"
  CPU_OF=nginx wrk_run nginx-resume-rsa "https://127.0.0.1:$nginx_port/ping" -H "Connection: close"
fi
cleanup
proxy_pid=""; nginx_pid=""

# --- report ------------------------------------------------------------------------------------
log "results"
BENCH_PARAMS="rounds=$ROUNDS overload_factor=$OVL_FACTOR overload_seconds=$OVL_SECONDS overload_connections=$OVL_CONNS threads=$THREADS connections=$CONNS warmup_s=$WARM duration_s=$DUR open_rate=$OPEN_RATE open_seconds=$OPEN_SECONDS open_connections=$OPEN_CONNS soak_seconds=$SOAK soak_rate=$SOAK_RATE idle_connections=$IDLE" \
"$py" - "$raw" "$out/results.json" "$root" <<'EOF'
import json, os, platform, subprocess, sys

raw, dest, root = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    p = os.path.join(raw, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""

meta = load("meta") or {}
cpu = sh("lscpu | sed -n 's/^Model name:[ \\t]*//p' | head -1")
machine = {
    "nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
    "mem_total_kib": int(sh("awk '/MemTotal/ {print $2}' /proc/meminfo") or 0),
    "loadavg_start": meta.get("loadavg_start"), "loadavg_end": open("/proc/loadavg").read().split()[:3],
    "openssl": sh("openssl version"), "nginx": sh("nginx -v 2>&1"), "wrk": sh("wrk --version 2>&1 | head -1"),
    "proxy_commit": sh(f"git -C {root} rev-parse --short HEAD") +
                    (" (dirty tree)" if sh(f"git -C {root} status --porcelain -- src include") else ""),
}
params = dict(kv.split("=") for kv in os.environ.get("BENCH_PARAMS", "").split())

labels = {"health": "GetHealthStatus", "enc32": "Encrypt 32 B", "enc32cdiv": "Encrypt 32 B + CDIV",
          "enc4300": "Encrypt 4300 B", "enc4300cdiv": "Encrypt 4300 B + CDIV", "decrypt": "Decrypt 32 B",
          "conn-ecdsa": "Full TLS handshakes/s ECDSA", "conn-rsa": "Full TLS handshakes/s RSA-2048",
          "resume-ecdsa": "Resumed TLS conns/s ECDSA", "resume-rsa": "Resumed TLS conns/s RSA-2048"}
def brief(r):
    if r is None:
        return None
    l = r.get("latency_us")
    return {"rps": round(r["rps"], 1), "requests": r["requests"], "errors": r["errors"],
            "errors_total": sum(r["errors"].values()),
            "cpu_us_per_request": round(r.get("cpu_us_per_request", 0), 1),
            "generator": r.get("generator", "wrk"),
            "latency_ms": {k: round(l[k] / 1000, 3) for k in ("mean", "p50", "p90", "p99", "p999", "max")} if l else None,
            "loadavg_before": r.get("loadavg_before"), "loadavg_after": r.get("loadavg_after")}
def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
def rounds_of(prefix, key):
    """The rounds of one side of a scenario: NAME.rN files, or the one NAME file."""
    one = load(f"{prefix}-{key}")
    if one is not None:
        return [one]
    out, r = [], 1
    while (x := load(f"{prefix}-{key}.r{r}")) is not None:
        out.append(x); r += 1
    return out
hsm_op = {"enc32": "encrypt", "enc32cdiv": "cdiv", "decrypt": "decrypt", "enc4300": "encrypt",
          "enc4300cdiv": "cdiv"}
scen = {}
for key in labels:
    pr, nr, hr = rounds_of("proxy", key), rounds_of("nginx", key), rounds_of("hsm", key)
    if not pr and not nr:
        continue
    per_round = []
    for i in range(max(len(pr), len(nr))):
        p = pr[i] if i < len(pr) else None
        n = nr[i] if i < len(nr) else None
        h = hr[i]["ops"][hsm_op[key]] if i < len(hr) and key in hsm_op else None
        rd = {"proxy_rps": p and p["rps"], "nginx_rps": n and n["rps"],
              "proxy_cpu_us": p and p["cpu_us_per_request"], "nginx_cpu_us": n and n["cpu_us_per_request"],
              "hsm_ops_per_s": h and h["ops_per_s"], "hsm_cpu_us": h and h["cpu_us_per_op"]}
        rd["ratio"] = p["rps"] / n["rps"] if p and n and n["rps"] else None
        rd["cpu_ratio"] = (n["cpu_us_per_request"] / p["cpu_us_per_request"]
                           if p and n and p["cpu_us_per_request"] else None)
        if h and n and h["ops_per_s"] and n["rps"]:
            # What a proxy that added nothing of its own would reach: the generator, TLS and
            # the HSM's work on the same cores, one after the other per request.
            rd["ceiling_rps"] = 1 / (1 / n["rps"] + 1 / h["ops_per_s"])
            rd["ceiling_ratio"] = p["rps"] / rd["ceiling_rps"] if p else None
            rd["proxy_own_cpu_us"] = (p["cpu_us_per_request"] - n["cpu_us_per_request"] - h["cpu_us_per_op"]
                                      if p else None)
        per_round.append(rd)
    # The round whose proxy rate is the median stands for the scenario in the table.
    order = sorted(range(len(pr)), key=lambda i: pr[i]["rps"])
    mid = order[len(order) // 2] if order else None
    p = brief(pr[mid]) if mid is not None else None
    n = brief(nr[mid] if mid is not None and mid < len(nr) else (nr[0] if nr else None))
    med = lambda k: median(rd.get(k) for rd in per_round)
    rnd = lambda v, d=3: round(v, d) if v is not None else None
    scen[key] = {"label": labels[key], "proxy": p, "nginx": n, "rounds": len(per_round),
                 "per_round": per_round,
                 "proxy_rps_median": rnd(med("proxy_rps"), 1), "nginx_rps_median": rnd(med("nginx_rps"), 1),
                 "proxy_cpu_us_median": rnd(med("proxy_cpu_us"), 1),
                 "nginx_cpu_us_median": rnd(med("nginx_cpu_us"), 1),
                 "ratio": rnd(med("ratio")), "cpu_ratio": rnd(med("cpu_ratio"))}
    # Sizing: what one core of the proxy serves (HSM included when it runs in-process).
    cpu_med = scen[key]["proxy_cpu_us_median"]
    scen[key]["proxy_rps_per_core"] = round(1e6 / cpu_med) if cpu_med else None
    if key in hsm_op and hr:
        scen[key].update({"hsm_ops_per_s_median": rnd(med("hsm_ops_per_s"), 1),
                          "hsm_cpu_us_median": rnd(med("hsm_cpu_us"), 1),
                          "ceiling_rps_median": rnd(med("ceiling_rps"), 1),
                          "ceiling_ratio": rnd(med("ceiling_ratio")),
                          "proxy_own_cpu_us_median": rnd(med("proxy_own_cpu_us"), 1)})

overload = None
if load("overload") is not None:
    mx, ov, after = load("overload-max"), load("overload"), load("overload-after")
    max_rate = mx["ok_per_second"] if mx else None
    ref = ov.get("latency_ms_refused", {})
    overload = {"max": mx, "overload": ov, "after": after, "max_rate": max_rate,
                "offered_rate": ov.get("rate"),
                "ok_per_second": ov.get("ok_per_second"),
                "ok_fraction_of_max": round(ov["ok_per_second"] / max_rate, 3) if max_rate else None,
                "refused": ref.get("count", 0), "refused_p99_ms": ref.get("p99"),
                "max_latency_ms": ov["latency_ms"]["max"],
                "errors": ov.get("errors"), "transport_errors": ov.get("transport_errors", 0),
                "after_errors": (sum(after.get("errors", {}).values()) + after.get("transport_errors", 0))
                                if after else None,
                "after_p99_ms": after["latency_ms"]["p99"] if after else None,
                # Open loop holds only while every request gets a connection on time: with
                # all connections waiting on slow answers the generator falls behind its
                # schedule, and its lag (counted as latency) is the server's slowness, not
                # excess offered load refused.
                "generator_elapsed_s": ov.get("elapsed_s"),
                "generator_kept_up": ov.get("elapsed_s", 0) <= 1.2 * float(params.get("overload_seconds", 0) or 0) + 1}

openloop = load("openloop")
openloop_nginx = load("openloop-nginx")
if openloop is not None:
    openloop["generator"] = "xksctl bench"
    if openloop_nginx is not None:
        openloop["nginx_same_generator"] = openloop_nginx
soak_load = load("soak-load")
samples = []
for line in open(os.path.join(raw, "soak-rss.txt")) if os.path.exists(os.path.join(raw, "soak-rss.txt")) else []:
    t, _, v = line.partition(" ")
    if v.strip():
        samples.append((int(t), int(v)))
steady = [v for t, v in samples if t >= 10] or [v for _, v in samples]
soak = None
if steady:
    mean = sum(steady) / len(steady)
    soak = {"samples_s_kib": samples, "load": soak_load,
            "rss_mib_min": round(min(steady) / 1024, 1), "rss_mib_max": round(max(steady) / 1024, 1),
            "rss_mib_mean": round(mean / 1024, 1),
            "max_deviation_pct": round(100 * max(abs(v - mean) for v in steady) / mean, 2),
            "growth_first_to_last_pct": round(100 * (steady[-1] - steady[0]) / steady[0], 2),
            "note": "samples from t >= 10 s; deviation = max |sample - mean| / mean"}
memory = load("memory")
memory_nginx = load("memory-nginx")

def ratio(k):
    return scen.get(k, {}).get("ratio")
def tgt(name, value, op, limit, extra_ok=True):
    ok = value is not None and extra_ok and (value >= limit if op == ">=" else value <= limit)
    return {"target": name, "value": value, "limit": f"{op} {limit}", "pass": bool(ok)}
ol_err = None
if openloop:
    ol_err = sum(openloop.get("errors", {}).values()) + openloop.get("transport_errors", 0)
targets = [
    tgt("GetHealthStatus rate / nginx (first targets)", ratio("health"), ">=", 0.70),
    tgt("Encrypt 32 B (no CDIV) rate / nginx (first targets)", ratio("enc32"), ">=", 0.40),
    tgt("Encrypt 32 B + CDIV rate / nginx (first targets)", ratio("enc32cdiv"), ">=", 0.25),
    tgt("New TLS connections/s / nginx (ECDSA, full handshakes)", ratio("conn-ecdsa"), ">=", 0.80),
]
if "conn-rsa" in scen:
    targets.append(tgt("New TLS connections/s / nginx (RSA-2048, full handshakes)", ratio("conn-rsa"), ">=", 0.80))
def cratio(k):
    return scen.get(k, {}).get("ceiling_ratio")
nginx_p99 = openloop_nginx["latency_ms"]["p99"] if openloop_nginx else None
targets += [
    tgt("GetHealthStatus rate / nginx (ceiling targets)", ratio("health"), ">=", 0.85),
    tgt("Encrypt 32 B rate / ceiling (ceiling targets)", cratio("enc32"), ">=", 0.90),
    tgt("Decrypt 32 B rate / ceiling (ceiling targets)", cratio("decrypt"), ">=", 0.90),
    tgt("Encrypt 32 B + CDIV rate / ceiling (ceiling targets)", cratio("enc32cdiv"), ">=", 0.90),
    tgt(f"Open loop {params.get('open_rate')} req/s: p99 / nginx's p99, same generator ("
        f"zero errors: {ol_err})",
        round(openloop["latency_ms"]["p99"] / nginx_p99, 2) if openloop and nginx_p99 else None,
        "<=", 1.25, ol_err == 0),
]
if overload:
    ov = overload
    targets += [
        tgt(f"Overload {params.get('overload_factor')}x max ({ov['offered_rate']} req/s offered, max "
            f"{ov['max_rate']:.0f}/s): successful / max (ceiling targets)", ov["ok_fraction_of_max"], ">=", 0.90),
        tgt(f"Overload: p99 ms of the {ov['refused']} 429/503 answers",
            ov["refused_p99_ms"] if ov["refused"] else None, "<=", 10.0),
        tgt(f"Overload: max latency ms of any answer (transport errors {ov['transport_errors']})",
            ov["max_latency_ms"], "<=", 250.0, ov["transport_errors"] == 0),
        tgt(f"Right after the overload, {params.get('open_rate')} req/s: errors (p99 {ov['after_p99_ms']} ms)",
            ov["after_errors"], "<=", 0),
    ]
targets += [
    tgt(f"Open loop {params.get('open_rate')} req/s: p99 ms (and zero errors: {ol_err}; nginx with the same "
        f"generator: p99 {openloop_nginx['latency_ms']['p99'] if openloop_nginx else 'n/a'} ms)",
        openloop and openloop["latency_ms"]["p99"], "<=", 2.0, ol_err == 0),
    tgt(f"RSS MiB with {params.get('idle_connections')} idle keep-alive connections",
        memory and memory["rss_mib_with_connections"], "<=", 64,
        bool(memory) and memory["connections_alive_after_settle"] == memory["connections_requested"]),
    tgt(f"RSS flat over the {params.get('soak_seconds')} s mixed run: max deviation %",
        soak and soak["max_deviation_pct"], "<=", 5.0),
]
results = {"machine": machine, "params": params, "scenarios": scen, "open_loop": openloop,
           "overload": overload,
           "memory_idle": memory, "memory_idle_nginx": memory_nginx, "soak": soak, "targets": targets,
           "targets_met": sum(t["pass"] for t in targets), "targets_total": len(targets),
           "started": meta.get("started")}
json.dump(results, open(dest, "w"), indent=2)

print(f"machine: {machine['nproc']} cores, {cpu}, load average at start {machine['loadavg_start']}, "
      f"at end {' '.join(machine['loadavg_end'])} (shared machine: other builds running)")
print(f"wrk -t{params.get('threads')} -c{params.get('connections')}, {params.get('warmup_s')} s warm-up + "
      f"{params.get('duration_s')} s measured per scenario, keep-alive unless stated\n")
hdr = (f"{'scenario':<31}{'proxy/s':>8}{'nginx/s':>8}{'ratio':>6}  {'CPU us p/n':>12}{'cpu-ratio':>10}  "
       f"{'proxy p50/p99/p99.9 ms':<23}{'nginx p50/p99/p99.9 ms':<23}{'err p/n':>8}")
print(hdr); print("-" * len(hdr))
def pct(r):
    if not r or not r["latency_ms"]: return "-"
    l = r["latency_ms"]; return f"{l['p50']:.2f}/{l['p99']:.2f}/{l['p999']:.2f}"
for k, s in scen.items():
    p, n = s["proxy"], s["nginx"]
    cpu = f"{(s['proxy_cpu_us_median'] or 0):.0f}/{(s['nginx_cpu_us_median'] or 0):.0f}"
    print(f"{s['label']:<31}{(s['proxy_rps_median'] or 0):>8.0f}{(s['nginx_rps_median'] or 0):>8.0f}"
          f"{(s['ratio'] or 0):>6.2f}  {cpu:>12}{(s['cpu_ratio'] or 0):>10.2f}  {pct(p):<23}{pct(n):<23}"
          f"{(p['errors_total'] if p else '-')!s:>4}/{(n['errors_total'] if n else '-')!s:<3}")
print("(ratio = proxy rate / nginx rate; cpu-ratio = nginx CPU per request / proxy CPU per request,\n"
      " i.e. the rate ratio both would reach with the same CPU; full handshakes: openssl s_time -new,\n"
      " resumed: wrk with Connection: close, which resumes with TLS 1.3 tickets)")
print(f"(keep-alive scenarios: medians of {params.get('rounds')} alternating rounds; latencies from the round "
      "with the median proxy rate)")
print("requests/s per core of proxy CPU (1e6 / CPU us per request, sizing): " +
      ", ".join(f"{s['label']} {s['proxy_rps_per_core']}" for s in scen.values() if s.get("proxy_rps_per_core")))
ceil = {k: s for k, s in scen.items() if s.get("ceiling_ratio") is not None}
if ceil:
    hdr2 = (f"\n{'HSM ceiling (same run)':<31}{'hsm op/s':>9}{'hsm CPU us':>11}{'ceiling/s':>10}"
            f"{'proxy/ceiling':>14}{'proxy/nginx':>12}{'own CPU us':>11}")
    print(hdr2); print("-" * (len(hdr2) - 1))
    for k, s in ceil.items():
        print(f"{s['label']:<31}{s['hsm_ops_per_s_median']:>9.0f}{s['hsm_cpu_us_median']:>11.1f}"
              f"{s['ceiling_rps_median']:>10.0f}{s['ceiling_ratio']:>14.2f}{(s['ratio'] or 0):>12.2f}"
              f"{(s['proxy_own_cpu_us_median'] or 0):>11.1f}")
    print("(bench/hsm_ceiling: the proxy's PKCS#11 calls only, its sessions and worker threads; ceiling =\n"
          " 1/(1/nginx rate + 1/hsm rate); own CPU = proxy CPU - nginx CPU - HSM CPU per request)")
if openloop:
    l = openloop["latency_ms"]
    print(f"\nopen loop ({openloop.get('generator')}): encrypt 32 B at {params.get('open_rate')} req/s for "
          f"{params.get('open_seconds')} s, {params.get('open_connections')} connections: "
          f"{openloop['requests_per_second']:.0f} req/s, p50 {l['p50']:.2f} ms p90 {l['p90']:.2f} ms "
          f"p99 {l['p99']:.2f} ms p99.9 {l['p99.9']:.2f} ms max {l['max']:.2f} ms, errors {openloop.get('errors')}, "
          f"transport errors {openloop.get('transport_errors', 0)}")
    if openloop_nginx:
        l = openloop_nginx["latency_ms"]
        print(f"  nginx, same generator and rate: p50 {l['p50']:.2f} ms p90 {l['p90']:.2f} ms p99 {l['p99']:.2f} ms "
              f"p99.9 {l['p99.9']:.2f} ms max {l['max']:.2f} ms (what this machine gives a server that does no work)")
if overload:
    ov = overload; l = ov["overload"]["latency_ms"]; lo = ov["overload"].get("latency_ms_ok", {})
    print(f"\noverload ({params.get('overload_factor')}x the closed-loop maximum of {ov['max_rate']:.0f} req/s, "
          f"xksctl bench, {params.get('overload_seconds')} s over {params.get('overload_connections')} connections): "
          f"offered {ov['offered_rate']} req/s, {ov['ok_per_second']:.0f} ok/s ({100 * (ov['ok_fraction_of_max'] or 0):.0f} % "
          f"of max, ok p99 {lo.get('p99', 0):.2f} ms), refused {ov['refused']} (p99 {ov['refused_p99_ms'] or 0:.2f} ms), "
          f"max {l['max']:.2f} ms, errors {ov['errors']}, transport errors {ov['transport_errors']}")
    if not ov["generator_kept_up"]:
        print(f"  the generator fell behind its schedule (last answer after {ov['generator_elapsed_s']:.1f} s of a "
              f"{params.get('overload_seconds')} s run): answers were slow, not refused")
    if ov["after"]:
        la = ov["after"]["latency_ms"]
        print(f"  right after, {params.get('open_rate')} req/s: p50 {la['p50']:.2f} ms p99 {la['p99']:.2f} ms "
              f"max {la['max']:.2f} ms, errors {ov['after_errors']}")
if memory:
    print(f"memory: RSS {memory['rss_kib_before']/1024:.1f} MiB before, {memory['rss_mib_with_connections']} MiB with "
          f"{memory['connections_opened']} idle keep-alive TLS connections ({memory['kib_per_connection']} KiB each, "
          f"{memory['connections_alive_after_settle']} still open), {memory['rss_kib_after_close']/1024:.1f} MiB after closing")
if memory_nginx:
    print(f"        nginx baseline (2 workers): {memory_nginx['rss_kib_before']/1024:.1f} MiB before, "
          f"{memory_nginx['rss_mib_with_connections']} MiB with {memory_nginx['connections_opened']} "
          f"({memory_nginx['kib_per_connection']} KiB each)")
if soak:
    curve = " ".join(f"{t}s:{v/1024:.1f}" for t, v in samples)
    sl = soak_load or {}
    print(f"soak ({params.get('soak_seconds')} s mixed at {params.get('soak_rate')} req/s, "
          f"{sl.get('requests', '?')} requests, errors {sl.get('errors', '?')}): RSS MiB {curve}")
    print(f"      min {soak['rss_mib_min']} max {soak['rss_mib_max']} MiB, max deviation {soak['max_deviation_pct']} %, "
          f"growth {soak['growth_first_to_last_pct']} %")
print("\ntargets:")
for t in targets:
    v = t["value"]
    print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {v if v is not None else 'n/a'} (target {t['limit']})")
print(f"\n{results['targets_met']}/{results['targets_total']} targets met; full figures in {dest}")
EOF
