#!/usr/bin/env bash
# Load benchmark: real Envoy three ways on this machine, driven by wrk in interleaved rounds.
#   A  Envoy's native jwt_authn (local RS256 JWKS) + rbac on the issuer
#   B  Envoy's gRPC ext_authz to portcullis (same key, a matcho policy on jwt.iss)
#   C  Envoy with no auth
#   D  A with jwt_authn's jwt_cache on (verified tokens cached, as portcullis caches them)
#   E  B over the HTTP flavour of ext_authz (http_service, HTTP/1.1) instead of gRPC
# then portcullis's gRPC Check alone against its own empty grpc.health.v1 call
# (examples/grpc_load.rs --against-health, then h2load with the same bodies).
#
#   ./scripts/bench-envoy.sh [ROUNDS] [SECONDS] [CONNECTIONS]     (defaults 3 5 32)
#   MODES="B E" PORTCULLIS=/path/to/build ./scripts/bench-envoy.sh   # some modes, another build
#
# Prints req/s and p50/p99 per round, with the CPU each request cost Envoy, portcullis and
# the whole machine (wrk included); then the medians, the ratios B/A, B/D and E/A, and the
# p99 that each kind of auth adds over no auth. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-5}
CONNECTIONS=${3:-32}

./scripts/install-test-deps.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
cargo build --release --locked --bin portcullis --example grpc_load
ENVOY=.tools/bin/envoy
MODES=${MODES:-A B C D E}
LOAD=${CARGO_TARGET_DIR:-target}/release/examples/grpc_load
PORTCULLIS=${PORTCULLIS:-${CARGO_TARGET_DIR:-target}/release/portcullis}

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# One RS256 key: PEM for portcullis, JWKS for Envoy, and a token signed with it.
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
python3 - "$WORK" <<'PY'
import base64, json, subprocess, sys, time
work = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
modulus = subprocess.check_output(["openssl", "rsa", "-in", f"{work}/key.pem", "-noout", "-modulus"]).decode().strip().split("=")[1]
jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "bench", "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}]}
open(f"{work}/jwks.json", "w").write(json.dumps(jwks))
head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
body = b64(json.dumps({"iss": "https://bench.example.com", "sub": "bench-user", "exp": int(time.time()) + 7200}).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/key.pem"], input=f"{head}.{body}".encode(), capture_output=True, check=True).stdout
open(f"{work}/token", "w").write(f"{head}.{body}.{b64(sig)}")
PY
TOKEN=$(cat "$WORK/token")

mkdir -p "$WORK/config"
{
  echo "resourceType: TokenIntrospector"; echo "id: bench"; echo "type: jwt"
  echo "jwt:"; echo "  iss: https://bench.example.com"; echo "  keys:"
  echo "  - kty: RSA"; echo "    alg: RS256"; echo "    format: PEM"; echo "    pub: |"
  sed 's/^/      /' "$WORK/pub.pem"
  echo "---"
  echo "resourceType: AccessPolicy"; echo "id: bench-issuer"; echo "engine: matcho"
  echo "matcho: {jwt: {iss: https://bench.example.com}}"
} > "$WORK/config/bench.yaml"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(free_port); HTTP=$(free_port)
RUST_LOG=warn "$PORTCULLIS" serve --config "$WORK/config" --grpc-addr 127.0.0.1:$GRPC --http-addr 127.0.0.1:$HTTP \
  --decision-log-allow-sample 0 >"$WORK/portcullis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$HTTP/readyz" >/dev/null && break; sleep 0.1; done

JWKS_INLINE=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$WORK/jwks.json")
envoy_config() { # mode listener admin
  local filters
  case $1 in
    A|D) filters=$(cat <<YAML
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        bench:
                          issuer: https://bench.example.com
                          local_jwks: { inline_string: $JWKS_INLINE }
                          payload_in_metadata: jwt_payload
$([ "$1" = D ] && echo "                          jwt_cache_config: { jwt_cache_size: 1000 }" || true)
                      rules:
                        - match: { prefix: / }
                          requires: { provider_name: bench }
                  - name: envoy.filters.http.rbac
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
                      rules:
                        action: ALLOW
                        policies:
                          issuer:
                            permissions: [{ any: true }]
                            principals:
                              - metadata:
                                  filter: envoy.filters.http.jwt_authn
                                  path: [{ key: jwt_payload }, { key: iss }]
                                  value: { string_match: { exact: https://bench.example.com } }
YAML
);;
    B|E) filters=$(cat <<YAML
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
$(if [ "$1" = B ]; then cat <<SERVICE
                      grpc_service: { envoy_grpc: { cluster_name: portcullis }, timeout: 1s }
SERVICE
else cat <<SERVICE
                      allowed_headers: { patterns: [{ exact: authorization }] }
                      http_service:
                        server_uri: { uri: "http://127.0.0.1:$HTTP", cluster: portcullis-http, timeout: 1s }
                        path_prefix: /ext-authz
                        authorization_response:
                          allowed_upstream_headers: { patterns: [{ prefix: x-portcullis- }] }
SERVICE
fi)
YAML
);;
    C) filters="";;
  esac
  cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $3 } } }
static_resources:
  listeners:
    - address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{ match: { prefix: / }, direct_response: { status: 200, body: { inline_string: ok } } }]
                http_filters:
$filters
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: portcullis
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: portcullis
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $GRPC } } } }] }]
    - name: portcullis-http
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: portcullis-http
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $HTTP } } } }] }]
YAML
}

declare -A PORT ENVOY_PID
for mode in $MODES; do
  PORT[$mode]=$(free_port); admin=$(free_port)
  envoy_config $mode "${PORT[$mode]}" "$admin" > "$WORK/envoy-$mode.yaml"
  "$ENVOY" -c "$WORK/envoy-$mode.yaml" --concurrency 1 --use-dynamic-base-id --disable-hot-restart -l error \
    >"$WORK/envoy-$mode.log" 2>&1 &
  PIDS+=($!); ENVOY_PID[$mode]=$!
  for _ in $(seq 100); do [ "$(curl -s "127.0.0.1:$admin/ready")" = LIVE ] && break; sleep 0.1; done
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" "127.0.0.1:${PORT[$mode]}/fhir/Patient")
  [ "$code" = 200 ] || { echo "mode $mode answered $code, not 200"; cat "$WORK/envoy-$mode.log"; exit 1; }
  if [ $mode != C ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:${PORT[$mode]}/fhir/Patient")
    [ "$code" = 401 ] || { echo "mode $mode let an anonymous request through ($code)"; exit 1; }
  fi
done

to_ms() { python3 -c 'import re,sys; v,u=re.match(r"([\d.]+)(\w+)",sys.argv[1]).groups(); print(float(v)*{"us":0.001,"ms":1,"s":1000}[u])' "$1"; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }  # utime+stime of a process, in ticks
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }  # the machine's non-idle ticks
echo "round mode req/s p50_ms p99_ms" > "$WORK/results"
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    p0=$(ticks "${PIDS[0]}"); e0=$(ticks "${ENVOY_PID[$mode]}"); m0=$(busy)
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:${PORT[$mode]}/fhir/Patient")
    p1=$(ticks "${PIDS[0]}"); e1=$(ticks "${ENVOY_PID[$mode]}"); m1=$(busy)
    if echo "$out" | grep -q "Non-2xx"; then echo "mode $mode: non-2xx answers under load"; echo "$out"; exit 1; fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
    echo "$round $mode $rps $p50 $p99" | tee -a "$WORK/results"
    # CPU per request: where the two cores go (wrk and the rest of the host are in "machine").
    python3 -c "import sys; hz, n = float(sys.argv[1]), float(sys.argv[2]) * float(sys.argv[3]); f = lambda t: float(t) / hz / n * 1e6; print(f'  CPU per request: envoy {f(sys.argv[4]):.1f} us, portcullis {f(sys.argv[5]):.1f} us, machine {f(sys.argv[6]):.1f} us ({float(sys.argv[6]) / hz / float(sys.argv[3]):.2f} cores busy)')" \
      "$(getconf CLK_TCK)" "$rps" "$SECONDS_PER_RUN" "$((e1 - e0))" "$((p1 - p0))" "$((m1 - m0))"
  done
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
modes = sorted({r[1] for r in rows})
med = {m: [statistics.median(float(r[i]) for r in rows if r[1] == m) for i in (2, 3, 4)] for m in modes}
names = {"A": "jwt_authn + rbac", "B": "ext_authz -> portcullis", "C": "no auth",
         "D": "jwt_authn (jwt_cache) + rbac", "E": "ext_authz HTTP -> portcullis"}
print("\nmedians over rounds")
for m in modes:
    print(f"  {m} {names[m]:<28} {med[m][0]:>9.0f} req/s   p50 {med[m][1]:.3f} ms   p99 {med[m][2]:.3f} ms")
ratios = [f"{x}/{y} throughput {med[x][0] / med[y][0]:.2f}" for x, y in (("B", "A"), ("B", "D"), ("E", "A")) if x in med and y in med]
print("  " + "   ".join(ratios))
if "C" in med:
    print("  p99 added over no auth: " + "   ".join(f"{m} {med[m][2] - med['C'][2]:+.3f} ms" for m in modes if m != "C"))
PY

echo
echo "portcullis gRPC Check against its empty health call (grpc_load, 4 connections, 64 in flight):"
"$LOAD" --addr 127.0.0.1:$GRPC --token "$TOKEN" --connections 4 --concurrency 64 --seconds "$SECONDS_PER_RUN" \
  --rounds "$ROUNDS" --against-health --server-pid "${PIDS[0]}"

# The same two calls from another client, h2load, with the bodies grpc_load sends: over one
# connection carrying CONNECTIONS streams (what one Envoy worker sends portcullis when wrk
# keeps CONNECTIONS requests in flight) and over CONNECTIONS connections of one stream each.
"$LOAD" --token "$TOKEN" --write-bodies "$WORK"
h2() { # connections streams body path
  local t0 t1 out
  t0=$(ticks "${PIDS[0]}")
  out=$(h2load -D "$SECONDS_PER_RUN" -t1 -c"$1" -m"$2" -d "$WORK/$3" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$GRPC$4")
  t1=$(ticks "${PIDS[0]}")
  echo "$out" | grep -q "status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" || { echo "h2load: not every answer a 200"; echo "$out"; exit 1; }
  echo "$out" | awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$SECONDS_PER_RUN" \
    '/^finished in/ {r=$4+0; printf "%.0f req/s, server CPU %.1f us per request\n", r, t / hz / (r * s) * 1e6}'
}
for shape in "1 $CONNECTIONS" "$CONNECTIONS 1"; do
  set -- $shape
  echo
  echo "h2load, $1 connection(s) x $2 stream(s):"
  : >"$WORK/h2"
  for _ in $(seq "$ROUNDS"); do
    health=$(h2 "$1" "$2" health.bin /grpc.health.v1.Health/Check); echo "  health $health"
    check=$(h2 "$1" "$2" check.bin /envoy.service.auth.v3.Authorization/Check); echo "  check  $check"
    echo "${check%% *} ${health%% *}" >>"$WORK/h2"
  done
  python3 -c 'import statistics, sys; rows = [l.split() for l in open(sys.argv[1])]; c, h = (statistics.median(float(r[i]) for r in rows) for i in (0, 1)); print(f"  medians: check {c:.0f} req/s, health {h:.0f} req/s; check/health {c / h:.2f}")' "$WORK/h2"
done
