# Shared by up.sh, down.sh and e2e.sh: where the node lives, its addresses, and helpers.
# shellcheck shell=bash
dir=${RUNNER_OPERATOR_NODE_DIR:-/var/tmp/runner-operator-node}
node=runner-operator-node
bridge=ron0
pod_cidr=10.244.77.0/24
gateway=10.244.77.1
service_cidr=10.96.0.0/16
service_ip=10.96.0.1
gitlab_token=glpat-emulator-root
# What the kubelet, the bridge plugin and kube-proxy may change; recorded once, restored by down.sh.
host_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.ipv4.conf.all.forwarding net.bridge.bridge-nf-call-iptables
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_tcp_be_liberal)

# Debian's containerd, runc, CNI plugins, busybox-static, iptables: installed when one is missing
# (a fresh machine), never upgraded.
install_node_packages() {
  local missing=() c
  for c in containerd runc ctr iptables ip /usr/lib/cni/bridge /bin/busybox openssl curl; do
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing containerd, runc, CNI plugins, busybox-static, iptables (missing: ${missing[*]})" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq containerd runc containernetworking-plugins busybox-static iptables iproute2 openssl curl; } >&2
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a daemon that outlives the script (its own session, no terminal, logs in $dir/logs).
spawn() {
  local name=$1; shift
  setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >> "$dir/pids"
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds; fails when a daemon died.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [ -f "$dir/pids" ]; then
      while read -r name pid; do
        kill -0 "$pid" 2>/dev/null || { echo "$name exited; its log:" >&2; tail -n 30 "$dir/logs/$name.log" >&2; return 1; }
      done < "$dir/pids"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out after $secs s waiting for $what" >&2; return 1; }
    sleep 0.25
  done
}

save_host() {
  local h=$dir/host
  [ -f "$h/sysctl" ] && return 0
  : > "$h/sysctl.tmp"
  for k in "${host_sysctls[@]}"; do
    local f=/proc/sys/${k//.//}
    [ -r "$f" ] && echo "$k=$(cat "$f")" >> "$h/sysctl.tmp"
  done
  iptables-save > "$h/iptables" 2>/dev/null || true
  command -v ip6tables-save >/dev/null && { ip6tables-save > "$h/ip6tables" 2>/dev/null || true; }
  ls /var/run/netns 2>/dev/null > "$h/netns" || : > "$h/netns"
  [ -e /var/lib/cni ] && touch "$h/cni-existed"
  mv "$h/sysctl.tmp" "$h/sysctl"
}

# install_operator IMAGE_REF CHART [helm args...]: helm install (or upgrade) the operator from
# CHART with IMAGE_REF (registry/repository:tag, already imported) and wait until it is Ready.
install_operator() {
  local ref=$1 chart=$2; shift 2
  local registry=${ref%%/*} rest=${ref#*/}
  "$helm" upgrade --install runner-operator "$chart" -n runner-operator \
    --set image.registry="$registry" --set image.repository="${rest%:*}" --set image.tag="${rest##*:}" \
    --set image.pullPolicy=Never --set 'consumerRestarts.namespaces={*}' \
    --set resyncInterval=1m --set logFormat=text "$@" --wait --timeout 180s >&2
}

# What up.sh may change on the host, in a form to compare before and after (e2e.sh does).
host_snapshot() (
  set +e +o pipefail   # an empty part is no error
  local k f
  for k in "${host_sysctls[@]}"; do
    f=/proc/sys/${k//.//}; [ -r "$f" ] && echo "sysctl $k=$(cat "$f")"
  done
  for fam in iptables ip6tables; do
    command -v "$fam-save" >/dev/null || continue
    "$fam-save" 2>/dev/null | grep -E '^-A|^:' | grep -Ev '^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ' \
      | sed "s/ \[[0-9]*:[0-9]*\]//; s/^/$fam /" | sort
  done
  ip -o link show | awk -F': ' '{print "link " $2}' | sed 's/@.*//' | sort
  ls /var/run/netns 2>/dev/null | sed 's/^/netns /'
  awk '{print "mount " $2}' /proc/mounts | sort
  ls -d /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods* 2>/dev/null | sed 's/^/cgroup /'
  pgrep -f "$dir/" | sed 's/^/process /'
  [ -e /var/lib/cni ] && echo "path /var/lib/cni"
  [ -e "$dir" ] && echo "path $dir"
  return 0
)
