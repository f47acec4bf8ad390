#!/bin/sh
# Prepares the simulated HSM cluster of the compose stack, in two steps that compose runs as
# one-shot containers (deploy/compose.yaml); test/deploy-topology.test.ts runs the same steps.
#   setup.sh init      create the cluster files for 3 HSMs (certificates, stores, cluster.json)
#   setup.sh activate  once the HSMs serve: activate the crypto officer, create the crypto user
#                      "hsmproxy", make the dev CA and localhost certificates with keys in the
#                      HSMs (`hsmproxy demo-pki`), issue the proxy's client bundle into BUNDLE_DIR
#                      (`hsmproxy cluster client-cert`) and write the crypto user's credentials
#                      there (0600)
# Both steps do nothing when their work is already done, so restarting the stack is safe.
# Passwords are generated here and kept only in 0600 files: the officer's and the sync user's in
# the cluster volume, the crypto user's in the proxy's bundle, which is all the proxy mounts.
# Environment: CLUSTER_DIR (/app/data/cluster), CERT_DIR (/app/certs), BUNDLE_DIR (/app/hsm-client),
# PROXY_NAME (hsmproxy: the client certificate's name), HSMS (3), BASE_PORT (2225),
# PROFILE (hsm2m.medium), HOSTS (where the HSMs listen: one address, or one per HSM separated by
# commas; default 127.0.0.1), HSMPROXY (the CLI command, default: node /app/dist/src/cli/main.js).
set -eu
umask 077

DIR=${CLUSTER_DIR:-/app/data/cluster}
CERTS=${CERT_DIR:-/app/certs}
BUNDLE=${BUNDLE_DIR:-/app/hsm-client}
HSMPROXY=${HSMPROXY:-node /app/dist/src/cli/main.js}
export HSMPROXY_DIR="$DIR"

cli() { $HSMPROXY "$@"; }
secret() { node -e 'process.stdout.write(require("node:crypto").randomBytes(18).toString("base64url"))'; }
say() { echo "setup: $*"; }

init() {
  if [ -f "$DIR/cluster.json" ]; then say "cluster already initialised in $DIR"; return; fi
  mkdir -p "$DIR"
  out=$(cli cluster init --dir "$DIR" --hsms "${HSMS:-3}" --profile "${PROFILE:-hsm2m.medium}" --base-port "${BASE_PORT:-2225}" --host "${HOSTS:-127.0.0.1}" --json)
  # The pre-crypto-officer's one-time password, for the activate step only (deleted there).
  printf '%s' "$out" | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>{const o=JSON.parse(s);process.stdout.write(`${o.precoUser}:${o.precoPassword}`)})' > "$DIR/preco.pin"
  say "cluster created in $DIR"
}

activate() {
  if [ -f "$BUNDLE/crypto-user.pin" ]; then say "cluster already activated"; return; fi
  # Activated by an earlier version of this script, which kept the credentials in the cluster
  # volume: they move to the bundle below.
  if [ -f "$DIR/crypto-user.pin" ]; then mv "$DIR/crypto-user.pin" "$DIR/crypto-user.pin.new"; fi
  # Wait for every HSM of the manifest to answer (their containers start in parallel).
  tries=0
  until cli cluster status --dir "$DIR" --json | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>process.exit(JSON.parse(s).hsms.every((h)=>h.up)?0:1))'; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { say "the HSMs did not come up within 60 s" >&2; exit 1; }
    sleep 1
  done
  if [ -f "$DIR/preco.pin" ]; then
    co=$(secret)
    HSMPROXY_PIN=$(cat "$DIR/preco.pin") HSMPROXY_NEW_PASSWORD=$co cli cluster activate --dir "$DIR"
    printf 'admin:%s' "$co" > "$DIR/crypto-officer.pin"
    rm -f "$DIR/preco.pin"
  fi
  # crypto-user.pin.new survives a failure below, so a rerun does not create the user twice.
  if [ ! -f "$DIR/crypto-user.pin.new" ]; then
    cu=$(secret)
    HSMPROXY_PIN=$(cat "$DIR/crypto-officer.pin") HSMPROXY_NEW_PASSWORD=$cu cli user create --dir "$DIR" --name hsmproxy
    printf 'hsmproxy:%s' "$cu" > "$DIR/crypto-user.pin.new"
  fi
  HSMPROXY_PIN=$(cat "$DIR/crypto-user.pin.new")
  export HSMPROXY_PIN

  # The dev CA and the localhost certificates (ECDSA and RSA), keys generated in the HSMs.
  cli demo-pki --dir "$DIR" --out "$CERTS"
  # The proxy's own client certificate, in its bundle with the CA certificate and the HSMs'
  # addresses: what the proxy mounts instead of the cluster volume. cluster.json comes last.
  if [ ! -f "$BUNDLE/cluster.json" ]; then
    cli cluster client-cert --dir "$DIR" --name "${PROXY_NAME:-hsmproxy}" --out-dir "$BUNDLE"
  fi
  # Last: the credentials in the bundle mean the stack is ready for hsmproxy (and this step is done).
  cp "$DIR/crypto-user.pin.new" "$BUNDLE/crypto-user.pin.tmp"
  mv "$BUNDLE/crypto-user.pin.tmp" "$BUNDLE/crypto-user.pin"
  rm -f "$DIR/crypto-user.pin.new"
  say "cluster activated; crypto user hsmproxy; client bundle of ${PROXY_NAME:-hsmproxy} in $BUNDLE; certificates in $CERTS (trust $CERTS/dev-ca.crt)"
}

case "${1:-}" in
  init) init ;;
  activate) activate ;;
  *) echo "usage: setup.sh init|activate" >&2; exit 2 ;;
esac
