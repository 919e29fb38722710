#!/usr/bin/env bash
# Resident memory of `portcullis serve` with 10,000 AccessPolicies and 100,000 Users loaded
# (issue 8 target: under 50 MB), how long the first load takes, and how long reloads take:
# a touched file, a small policy file added beside the rest and then edited (a reload reads
# again only the files that changed), one policy edited in the file of 10,000, and one User
# edited, one appended and one removed in the file of 100,000 (a file read again parses
# only its pieces that changed).
#
#   ./scripts/bench-memory.sh [POLICIES] [USERS] [KINDS]
#   PORTCULLIS=/path/to/portcullis ./scripts/bench-memory.sh   # another build, side by side
#
# Defaults 10000 100000 matcho,json-schema,complex: policies cycle through KINDS, so
# `3334 0 matcho` measures one kind alone. `regex` is matcho with a pattern that needs a
# real regex (`#^/r1/[0-9]+$`) instead of an anchored literal (`#^/r1/`).
set -euo pipefail
cd "$(dirname "$0")/.."
POLICIES=${1:-10000}
USERS=${2:-100000}
KINDS=${3:-matcho,json-schema,complex}
if [ -z "${PORTCULLIS:-}" ]; then
  cargo build --release --locked --bin portcullis
  PORTCULLIS=${CARGO_TARGET_DIR:-target}/release/portcullis
fi

WORK=$(mktemp -d)
LOG=$(mktemp)   # outside the watched directory
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK" "$LOG"; }
trap cleanup EXIT

python3 - "$WORK" "$POLICIES" "$USERS" "$KINDS" <<'PY'
import sys
work, n_policies, n_users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kinds = sys.argv[4].split(",")
with open(f"{work}/introspector.yaml", "w") as f:
    f.write("resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n")
with open(f"{work}/policies.yaml", "w") as f:
    for i in range(n_policies):
        kind = kinds[i % len(kinds)]
        if kind == "matcho":
            f.write(f"---\nresourceType: AccessPolicy\nid: p{i}\nengine: matcho\nmatcho: {{uri: '#^/r{i}/', jwt: {{scope: '#read'}}}}\n")
        elif kind == "regex":  # a pattern that needs a real regex, not a literal
            f.write(f"---\nresourceType: AccessPolicy\nid: p{i}\nengine: matcho\nmatcho: {{uri: '#^/r{i}/[0-9]+$', jwt: {{scope: '#read'}}}}\n")
        elif kind == "json-schema":
            f.write(f"---\nresourceType: AccessPolicy\nid: p{i}\nengine: json-schema\nschema: {{required: [jwt], properties: {{jwt: {{properties: {{iss: {{constant: x{i}}}}}}}}}}}\n")
        elif kind == "complex":
            f.write(f"---\nresourceType: AccessPolicy\nid: p{i}\nengine: complex\nor: [{{engine: matcho, matcho: {{uri: /a{i}}}}}, {{engine: allow}}]\nlink: [{{reference: User/u{i}}}]\n")
        else:
            sys.exit(f"unknown policy kind {kind!r}: matcho, regex, json-schema, complex")
with open(f"{work}/users.yaml", "w") as f:
    for i in range(n_users):
        f.write(f"---\nresourceType: User\nid: u{i}\ndata: {{email: user{i}@example.com, name: User {i}}}\nidentifier: [{{system: keycloak, value: 74ae9aaf-5681-4231-{i:012d}}}]\n")
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port)
start=$(date +%s.%N)
"$PORTCULLIS" serve --config "$WORK" --grpc-addr 127.0.0.1:$(free_port) --http-addr 127.0.0.1:$HTTP \
  --log-format json >"$LOG" 2>&1 &
PID=$!
until curl -sf "127.0.0.1:$HTTP/readyz" >/dev/null; do sleep 0.05; kill -0 $PID || { cat "$LOG"; exit 1; }; done
ready=$(date +%s.%N)
# jemalloc hands freed pages back over a decay of about ten seconds: print resident
# memory soon after (what the load left behind) and once settled (what stays). In MiB
# (/proc gives KiB); RssAnon is the heap and stacks, RssFile mostly the binary's code pages.
rss() { awk '/VmRSS|VmHWM|RssAnon|RssFile/ {printf "%s %.1f MiB  ", $1, $2/1024}' /proc/$PID/status; }
settle() {
  sleep 2
  echo "  after 2 s:  $(rss)"
  sleep 18
  echo "  after 20 s: $(rss)"
}
took_ms() { grep 'configuration loaded' "$LOG" | tail -1 | grep -o '"took_ms":[0-9]*' | cut -d: -f2 || true; }
echo "loaded $POLICIES policies and $USERS users; ready after $(python3 -c "print(f'{$ready-$start:.2f}')") s" \
  "($(took_ms) ms to read, parse and compile every file)"
settle

# A reload: change the files with "$@", wait for the next "configuration loaded".
reload() {
  local what=$1; shift
  local loads; loads=$(grep -c 'configuration loaded' "$LOG")
  "$@"
  local t0; t0=$(date +%s.%N)
  until [ "$(grep -c 'configuration loaded' "$LOG")" -gt "$loads" ]; do sleep 0.01; done
  local t1; t1=$(date +%s.%N)
  echo "$what: $(python3 -c "print(f'{$t1-$t0:.2f}')") s from the change to serving" \
    "($(took_ms) ms to read, parse and compile; the rest is the watcher's 200 ms settle and the swap)"
}
add_policy() {
  printf 'resourceType: AccessPolicy\nid: extra\nengine: matcho\nmatcho: {uri: %s}\n' "$1" >"$WORK/extra.yaml"
}
edit_user() { sed -i "s/user$((USERS / 2))@example.com/user$((USERS / 2))@example.org/" "$WORK/users.yaml"; }
append_user() { printf -- '---\nresourceType: User\nid: extra\n' >>"$WORK/users.yaml"; }
# Each User is five lines: this one is the fifth's.
remove_user() { local at=$((USERS / 5 * 5 + 1)); sed -i "${at},$((at + 4))d" "$WORK/users.yaml"; }
edit_policy() { sed -i "s/^id: p$((POLICIES / 2))\$/id: p$((POLICIES / 2))-renamed/" "$WORK/policies.yaml"; }

reload "touch introspector.yaml" touch "$WORK/introspector.yaml"
settle
reload "a one-policy file added beside them" add_policy /extra
reload "that file edited" add_policy /edited
if [ "$POLICIES" -gt 0 ]; then
  reload "one policy renamed in policies.yaml" edit_policy
fi
if [ "$USERS" -gt 0 ]; then
  reload "one User edited in users.yaml" edit_user
  reload "one User appended to users.yaml" append_user
  reload "one User removed from users.yaml" remove_user
fi
echo "  now: $(rss)"
