#!/usr/bin/env bash
# Development-only TLS material and API token for the dev overlay, made with openssl.
#   deploy/dev-secrets.sh OUT_DIR NODE [NODE...]
# NODE: the Kubernetes node names of the hypervisor nodes (`kubectl get nodes`); each agent's
# certificate carries its node name as the only DNS SAN (SPEC 7). Writes into OUT_DIR a private
# CA, the engine and agent key pairs, `admin-token` (the bearer token for the CLI/SDK) and
# `secrets.yaml` with the Secrets disksnap-engine-tls, disksnap-engine-auth and
# disksnap-agent-tls; then: kubectl apply -f OUT_DIR/secrets.yaml
# Keep OUT_DIR out of version control: it holds private keys.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUT_DIR NODE [NODE...]" >&2
    exit 64
fi
out=$1
shift
namespace=${NAMESPACE:-disksnap}
mkdir -p "$out"
chmod 700 "$out"
cd "$out"

days=365
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME CN SAN-LIST: NAME.key + NAME.crt signed by the CA, server and client auth.
sign() {
    local name=$1 cn=$2 sans=$3
    new_key "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' \
        "$sans" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

new_key ca.key
openssl req -new -x509 -key ca.key -subj "/CN=disksnap-dev-ca" -days "$days" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
sign engine disksnap-engine \
    "DNS:disksnap-engine,DNS:disksnap-engine.$namespace.svc,DNS:disksnap-engine.$namespace.svc.cluster.local"
for node in "$@"; do
    sign "agent-$node" "$node" "DNS:$node"
done

token=$(openssl rand -hex 32)
printf '%s' "$token" >admin-token
chmod 600 admin-token ./*.key
printf '%s admin\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" >tokens

b64() { base64 -w0 <"$1"; }
{
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: disksnap-engine-tls\n  namespace: %s\ntype: Opaque\ndata:\n' "$namespace"
    printf '  tls.crt: %s\n  tls.key: %s\n  ca.crt: %s\n' "$(b64 engine.crt)" "$(b64 engine.key)" "$(b64 ca.crt)"
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: disksnap-engine-auth\n  namespace: %s\ntype: Opaque\ndata:\n' "$namespace"
    printf '  tokens: %s\n' "$(b64 tokens)"
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: disksnap-agent-tls\n  namespace: %s\ntype: Opaque\ndata:\n' "$namespace"
    printf '  ca.crt: %s\n' "$(b64 ca.crt)"
    for node in "$@"; do
        printf '  %s.crt: %s\n  %s.key: %s\n' "$node" "$(b64 "agent-$node.crt")" "$node" "$(b64 "agent-$node.key")"
    done
} >secrets.yaml
chmod 600 secrets.yaml
echo "wrote $out/secrets.yaml (apply with: kubectl apply -f $out/secrets.yaml); admin token in $out/admin-token" >&2
