#!/usr/bin/env bash
# Starts a real Kubernetes control plane on 127.0.0.1 (random free ports): etcd,
# kube-apiserver (RBAC, TokenRequest with a service-account signing key, generated certificates,
# the OwnerReferencesPermissionEnforcement admission plugin on as on OpenShift)
# and, unless --no-controller-manager, kube-controller-manager (garbage collection, Deployments,
# ReplicaSets, namespaces, service accounts, role aggregation). No kubelet or scheduler: pods
# stay Pending.
#
#   tests/control-plane/up.sh [--dir DIR] [--no-controller-manager] [--watch-pid PID]
#
# Writes DIR/kubeconfig (cluster admin, a static token in group system:masters),
# DIR/operator.kubeconfig (the same rights as user runner-operator), DIR/pids (etcd's and
# kube-apiserver's) and the audit log DIR/audit.log (every request, metadata level), prints
# "ready <kubeconfig>" once /readyz answers, and runs until interrupted, or until PID exits
# (the test harness passes its own). Logs: DIR/*.log. Binaries come from build.sh's cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir="" kcm=1 watch=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --no-controller-manager) kcm=0; shift ;;
    --watch-pid) watch=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
bin=$("$here/build.sh" | tail -n 1)
[ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/control-plane.XXXXXX")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pids=()
cleanup() {
  trap - EXIT INT TERM
  # Throwaway state: no graceful shutdown needed, and nothing may outlive the script.
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Certificates: a CA, the API server's serving certificate for 127.0.0.1/localhost, and the
# service-account signing key (EC P-256: fast to generate).
cd "$dir"
ssl() { openssl "$@" 2>/dev/null; }
ssl ecparam -name prime256v1 -genkey -noout -out ca.key
ssl req -x509 -new -key ca.key -subj /CN=runner-operator-test-ca -days 3650 -out ca.crt
ssl ecparam -name prime256v1 -genkey -noout -out apiserver.key
ssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > apiserver.ext
ssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile apiserver.ext -out apiserver.crt
ssl ecparam -name prime256v1 -genkey -noout -out sa.key
ssl ec -in sa.key -pubout -out sa.pub
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# A second cluster admin for a process under test (the bench's operator): the audit log tells
# its requests apart by user.
op_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s,admin,admin,system:masters\n%s,runner-operator,runner-operator,system:masters\n' "$token" "$op_token" > tokens.csv
# Every request at Metadata level (who, verb, resource, answer): the RBAC tests read it.
cat > audit-policy.yaml <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOF

etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)
"$bin/etcd" --name cp --data-dir "$dir/etcd" --log-level warn --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "cp=http://127.0.0.1:$peer_port" >etcd.log 2>&1 &
pids+=($!)

issuer=https://kubernetes.default.svc.cluster.local
"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key --client-ca-file ca.crt \
  --token-auth-file tokens.csv --authorization-mode RBAC \
  --enable-admission-plugins OwnerReferencesPermissionEnforcement \
  --service-account-issuer "$issuer" --api-audiences "$issuer" \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
  --audit-policy-file audit-policy.yaml --audit-log-path "$dir/audit.log" \
  --profiling=false --cert-dir "$dir/certs" >apiserver.log 2>&1 &
pids+=($!)

cat > kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: control-plane
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 < ca.crt)
users:
- name: admin
  user:
    token: $token
contexts:
- name: admin
  context: {cluster: control-plane, user: admin, namespace: default}
current-context: admin
EOF

sed -e "s/$token/$op_token/" -e 's/name: admin$/name: runner-operator/' -e 's/user: admin,/user: runner-operator,/' -e 's/current-context: admin/current-context: runner-operator/' kubeconfig > operator.kubeconfig
printf 'etcd %s\nkube-apiserver %s\n' "${pids[0]}" "${pids[1]}" > pids

for _ in $(seq 1 600); do
  if curl -sf --cacert ca.crt -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
    break
  fi
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a control-plane process exited; logs in $dir:" >&2; tail -n 20 "$dir"/*.log >&2; exit 1; }
  done
  sleep 0.1
done
curl -sf --cacert ca.crt -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null \
  || { echo "kube-apiserver not ready after 60 s; logs in $dir" >&2; exit 1; }

if [ "$kcm" = 1 ]; then
  "$bin/kube-controller-manager" --kubeconfig kubeconfig --leader-elect=false --secure-port 0 \
    --controllers garbage-collector-controller,deployment-controller,replicaset-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller,validatingadmissionpolicy-status-controller \
    --service-account-private-key-file sa.key --root-ca-file ca.crt \
    --concurrent-gc-syncs 5 >controller-manager.log 2>&1 &
  pids+=($!)
fi

echo "ready $dir/kubeconfig"
if [ -n "$watch" ]; then
  while kill -0 "$watch" 2>/dev/null; do sleep 1; done
else
  wait -n "${pids[@]}" || true
  echo "a control-plane process exited; logs in $dir" >&2
fi
