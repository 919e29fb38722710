#!/usr/bin/env bash
# What a gRPC Check costs beyond the transport, counted in instructions (repeatable on a
# busy machine, unlike time): portcullis serve runs under valgrind's callgrind, and the
# same client sends N empty grpc.health.v1 calls, then N Checks, for each kind of token:
#   static  an RS256 JWT verified by jwt.keys, a matcho policy on jwt.iss
#   jwks    an RS256 JWT verified by a JWKS (a local stub), same policy
#   opaque  an opaque token introspected by a local stub, a matcho policy on token.active
# Every token is verified once, then served from the cache of verified tokens, as in
# production. Prints instructions per health call, per Check, and the difference.
#
#   ./scripts/callgrind-check.sh [REQUESTS]          (default 2000)
#   PORTCULLIS=/path/to/build ./scripts/callgrind-check.sh   # another build
#   KEEP=1 ...                                               # keep the dumps (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --release --locked --bin portcullis --example grpc_load
LOAD=${CARGO_TARGET_DIR:-target}/release/examples/grpc_load
PORTCULLIS=${PORTCULLIS:-${CARGO_TARGET_DIR:-target}/release/portcullis}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "${KEEP:-}" ]]; then echo "dumps kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(free_port); HTTP=$(free_port); IDP=$(free_port)

# One RS256 key; two JWTs signed with it (one per issuer); a JWKS of it.
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
python3 - "$WORK" <<'PY'
import base64, json, subprocess, sys, time
work = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
modulus = subprocess.check_output(["openssl", "rsa", "-in", f"{work}/key.pem", "-noout", "-modulus"]).decode().strip().split("=")[1]
jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "bench", "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}]}
open(f"{work}/jwks.json", "w").write(json.dumps(jwks))
for name, iss in [("static", "https://bench.example.com"), ("jwks", "https://jwks.example.com")]:
    head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
    body = b64(json.dumps({"iss": iss, "sub": "bench-user", "exp": int(time.time()) + 7200}).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/key.pem"], input=f"{head}.{body}".encode(), capture_output=True, check=True).stdout
    open(f"{work}/token-{name}", "w").write(f"{head}.{body}.{b64(sig)}")
open(f"{work}/token-opaque", "w").write("opaque-bench-token-0123456789abcdef")
PY

# The identity provider stub: the JWKS, and introspection that says active.
python3 - "$WORK" "$IDP" <<'PY' &
import http.server, json, sys, time
work, port = sys.argv[1], int(sys.argv[2])
jwks = open(f"{work}/jwks.json", "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, body):
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self): self.answer(jwks)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.answer(json.dumps({"active": True, "sub": "bench-user", "exp": int(time.time()) + 7200}).encode())
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
PIDS+=($!)

mkdir -p "$WORK/config"
{
  echo "resourceType: TokenIntrospector"; echo "id: static"; echo "type: jwt"
  echo "jwt:"; echo "  iss: https://bench.example.com"; echo "  keys:"
  echo "  - kty: RSA"; echo "    alg: RS256"; echo "    format: PEM"; echo "    pub: |"
  sed 's/^/      /' "$WORK/pub.pem"
  echo "---"
  echo "resourceType: TokenIntrospector"; echo "id: jwks"; echo "type: jwt"
  echo "jwt: {iss: https://jwks.example.com}"; echo "jwks_uri: http://127.0.0.1:$IDP/jwks.json"
  echo "---"
  echo "resourceType: TokenIntrospector"; echo "id: opaque"; echo "type: opaque"
  echo "introspection_endpoint: {url: http://127.0.0.1:$IDP/introspect}"
  echo "---"
  echo "resourceType: AccessPolicy"; echo "id: static-issuer"; echo "engine: matcho"
  echo "matcho: {jwt: {iss: https://bench.example.com}}"
  echo "---"
  echo "resourceType: AccessPolicy"; echo "id: jwks-issuer"; echo "engine: matcho"
  echo "matcho: {jwt: {iss: https://jwks.example.com}}"
  echo "---"
  echo "resourceType: AccessPolicy"; echo "id: opaque-active"; echo "engine: matcho"
  echo "matcho: {token: {active: true}}"
} > "$WORK/config/bench.yaml"

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out" \
  "$PORTCULLIS" serve --config "$WORK/config" --grpc-addr "127.0.0.1:$GRPC" \
  --http-addr "127.0.0.1:$HTTP" --outbound-allow-host 127.0.0.1 --decision-timeout-ms 60000 \
  --log-format json >"$WORK/serve.log" 2>&1 &
SERVE=$!
PIDS+=($SERVE)
for _ in $(seq 1 600); do
  curl -fs "127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "127.0.0.1:$HTTP/readyz" >/dev/null || { cat "$WORK/serve.log"; exit 1; }
callgrind_control -i on "$SERVE" >/dev/null

# The instructions of the interval just ended (the dump resets the counters).
dump() {
  callgrind_control -d "$1" "$SERVE" >/dev/null
  local file
  file=$(ls -t "$WORK"/cg.out.* | head -1)
  awk '/^(summary|totals):/ {print $2; exit}' "$file"
}
# load REQUESTS ARGS...
load() { local n=$1; shift; "$LOAD" --addr "127.0.0.1:$GRPC" --connections 1 --concurrency 8 --requests "$n" "$@" >/dev/null; }

printf '%-8s %14s %14s %14s\n' token "health/call" "Check/call" "Check-health"
for kind in static jwks opaque; do
  TOKEN=$(cat "$WORK/token-$kind")
  # One Check first: the token verified and cached, outside the count.
  load 1 --token "$TOKEN"
  dump "warm-$kind" >/dev/null
  load "$N" --token "$TOKEN" --only-health
  health=$(dump "health-$kind")
  load "$N" --token "$TOKEN"
  check=$(dump "check-$kind")
  printf '%-8s %14d %14d %14d\n' "$kind" $((health / N)) $((check / N)) $(((check - health) / N))
done
