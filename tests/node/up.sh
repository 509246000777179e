#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on this machine and installs the operator into it as
# users do (helm install of charts/runner-operator, the image deploy/image/build.sh built), in a
# namespace that enforces the restricted Pod Security level. Then prints shell lines to eval:
#
#   eval "$(tests/node/up.sh)"     # KUBECONFIG, GITLAB_URL, GITLAB_HOST_URL, GITLAB_TOKEN,
#                                  # CONSUMER_IMAGE, BUSYBOX_IMAGE, NODE_DIR
#   tests/node/down.sh             # stops everything, restores the host
#
# What runs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (tests/control-plane's
# pinned build), containerd + runc (Debian), kubelet and kube-proxy (iptables mode) from the same
# module, Debian's CNI bridge + host-local on the project's own bridge (ron0, 10.244.77.0/24),
# and the GitLab emulator on the bridge's address, where pods reach it. Pods reach the API
# server through its Service (10.96.0.1), as in any cluster. Nothing listens beyond 127.0.0.1
# and the bridge; pods get no nameserver (no lookup leaves the machine).
#
# Idempotent: a run finding an earlier cluster (crashed or not) tears it down first. The host
# settings it changes (sysctls the kubelet and CNI set, iptables, the bridge, network namespaces,
# cgroups, mounts) are recorded before the first change and restored by down.sh.
# Needs root, Go, gcc, cargo, python3, openssl, curl and the packages below (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/node/lib.sh
. "$here/lib.sh"
log() { echo "up: $*" >&2; }
began=$(date +%s)
fail() { log "$*"; log "logs in $dir"; exit 1; }

[ "$(id -u)" = 0 ] || { log "needs root (containerd, kubelet, iptables)"; exit 3; }
install_node_packages
if [ -e "$dir" ]; then
  log "an earlier cluster is in $dir: tearing it down first"
  "$here/down.sh" >&2
fi

read -r binv imagesv < <("$here/build.sh" | tail -n 1)
bin=${binv#bin=} images=${imagesv#images=}
( cd "$repo" && cargo build --quiet --locked -p gitlab-emulator --bin gitlab-emulator >&2 )
kubectl=$repo/.tools/bin/kubectl-1.35 helm=$repo/.tools/bin/helm
[ -x "$kubectl" ] && [ -x "$helm" ] || "$repo/.ci/install-tools" >&2

mkdir -p "$dir/host" "$dir/logs"
save_host
trap 'log "failed; run tests/node/down.sh to restore the host (logs: $dir/logs)"' ERR

# The bridge the pods live on; its address is the node's, the API server's and GitLab's.
ip link add "$bridge" type bridge
ip addr add "$gateway/24" dev "$bridge"
ip link set "$bridge" up

# Certificates: CA, API server (reachable as the Service address too), its client certificate
# towards the kubelet, the kubelet's own client certificate, the service-account key.
cd "$dir"
ssl() { openssl "$@" 2>/dev/null; }
key() { ssl ecparam -name prime256v1 -genkey -noout -out "$1"; }
cert() { # name subject ext
  key "$1.key"; ssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$3" > "$1.ext"
  ssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile "$1.ext" -out "$1.crt"
}
key ca.key; ssl req -x509 -new -key ca.key -subj /CN=runner-operator-node-ca -days 365 -out ca.crt
cert apiserver /CN=kube-apiserver "subjectAltName=IP:127.0.0.1,IP:$gateway,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth\n"
cert kubelet-client "/O=system:nodes/CN=system:node:$node" "extendedKeyUsage=clientAuth\n"
key sa.key; ssl ec -in sa.key -pubout -out sa.pub
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token,admin,admin,system:masters" > tokens.csv

etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port) kubelet_port=$(free_port)
gitlab_port=$(free_port)
server=https://$gateway:$api_port
kubeconfig() { # file user-yaml
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster: {server: "$server", certificate-authority: "$dir/ca.crt"}
users:
- name: user
  user: $2
contexts:
- name: node
  context: {cluster: node, user: user, namespace: default}
current-context: node
EOF
}
kubeconfig admin.kubeconfig "{token: $token}"
kubeconfig kubelet.kubeconfig "{client-certificate: $dir/kubelet-client.crt, client-key: $dir/kubelet-client.key}"

spawn etcd "$bin/etcd" --name node --data-dir "$dir/etcd" --log-level warn --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "node=http://127.0.0.1:$peer_port"
issuer=https://kubernetes.default.svc.cluster.local
spawn kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address "$gateway" --advertise-address "$gateway" --secure-port "$api_port" \
  --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key --client-ca-file ca.crt \
  --token-auth-file tokens.csv --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,OwnerReferencesPermissionEnforcement \
  --kubelet-client-certificate apiserver-kubelet-client.crt --kubelet-client-key apiserver-kubelet-client.key \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer "$issuer" --api-audiences "$issuer" \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --service-cluster-ip-range "$service_cidr" --profiling=false --cert-dir "$dir/certs"
export KUBECONFIG=$dir/admin.kubeconfig
wait_for 60 "kube-apiserver /readyz" curl -sf --cacert ca.crt -H "Authorization: Bearer $token" "$server/readyz"

spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig admin.kubeconfig \
  --leader-elect=false --secure-port 0 \
  --controllers garbage-collector-controller,deployment-controller,replicaset-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller,node-lifecycle-controller,root-ca-certificate-publisher-controller,endpointslice-controller,pod-garbage-collector-controller,taint-eviction-controller,validatingadmissionpolicy-status-controller \
  --service-account-private-key-file sa.key --root-ca-file ca.crt --concurrent-gc-syncs 5
spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig admin.kubeconfig --leader-elect=false --secure-port 0

# containerd with everything under $dir (root, state, socket, runc's state).
mkdir -p containerd cni/net.d cni/ipam runc kubelet pod-logs
sock=$dir/containerd/containerd.sock
cat > containerd/config.toml <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "runner-operator.test/pause:1"
  # runc cannot lower oom_score_adj here (no CAP_SYS_RESOURCE): "can't get final child's PID".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
cat > cni/net.d/10-runner-operator.conflist <<EOF
{"cniVersion": "0.4.0", "name": "runner-operator-node", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/cni/ipam",
            "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gateway"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
spawn containerd containerd --config containerd/config.toml
wait_for 30 "containerd" ctr -a "$sock" version
for image in pause busybox operator "$(basename "$(ls "$images"/consumer-*.tar)" .tar)"; do
  ctr -a "$sock" -n k8s.io images import --no-unpack=false "$images/$image.tar" >/dev/null
done

# Pods get this resolv.conf: no nameserver, so nothing they do can look a name up outside.
echo "options ndots:0" > resolv.conf
cat > kubelet.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gateway
port: $kubelet_port
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $dir/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
resolvConf: $dir/resolv.conf
podLogsDir: $dir/pod-logs
# The kubelet would raise vm.overcommit_memory and kernel.panic*: recorded and restored, and
# protectKernelDefaults (refuse instead) stops it from starting on this machine.
protectKernelDefaults: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
maxPods: 110
EOF
spawn kubelet "$bin/kubelet" --config kubelet.yaml --kubeconfig kubelet.kubeconfig \
  --root-dir "$dir/kubelet" --hostname-override "$node" --node-ip "$gateway" --v 1
cat > kube-proxy.yaml <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/admin.kubeconfig}
mode: iptables
hostnameOverride: $node
clusterCIDR: $pod_cidr
healthzBindAddress: 127.0.0.1:$(free_port)
metricsBindAddress: 127.0.0.1:$(free_port)
# Without br_netfilter a reply between two pods on the bridge skips conntrack: masquerading
# every Service connection sends replies back through the host, where it is undone.
iptables: {masqueradeAll: true}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
spawn kube-proxy "$bin/kube-proxy" --config kube-proxy.yaml

spawn gitlab-emulator "$repo/target/debug/gitlab-emulator" --listen "$gateway:$gitlab_port"

kc() { "$kubectl" "$@"; }
wait_for 90 "node $node Ready" sh -c "'$kubectl' get node '$node' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' 2>/dev/null | grep -qx True"
wait_for 60 "the default ServiceAccount" kc get serviceaccount default
wait_for 60 "the kubernetes Service's endpoints" sh -c "'$kubectl' get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o name | grep -q ."
wait_for 30 "GitLab emulator" curl -sf "http://$gateway:$gitlab_port/api/v4/version" -H "PRIVATE-TOKEN: $gitlab_token"

# The operator as users install it, in a namespace enforcing the restricted level.
kc create namespace runner-operator >/dev/null
kc label namespace runner-operator pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
install_operator "$(cat "$images/operator.ref")" "$repo/charts/runner-operator" || fail "the operator did not get Ready"
trap - ERR

cat > "$dir/env" <<EOF
export KUBECONFIG=$dir/admin.kubeconfig
export GITLAB_URL=http://$gateway:$gitlab_port
export GITLAB_HOST_URL=http://$gateway:$gitlab_port
export GITLAB_TOKEN=$gitlab_token
export CONSUMER_IMAGE=$(cat "$images/consumer.ref")
export BUSYBOX_IMAGE=runner-operator.test/busybox:1
export OPERATOR_IMAGE=$(cat "$images/operator.ref")
export NODE_DIR=$dir
EOF
log "cluster up in $(( $(date +%s) - began )) s (builds included): node $node, API $server, GitLab http://$gateway:$gitlab_port, operator in namespace runner-operator"
cat "$dir/env"
