#!/usr/bin/env bash
# Stops the cluster tests/node/up.sh started and puts the host back as it was: processes and
# containers gone, mounts and network namespaces removed, the bridge deleted, iptables and the
# sysctls the kubelet, CNI and kube-proxy changed restored, cgroups removed, $dir deleted.
# Idempotent: safe to run when nothing is up, or twice.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/node/lib.sh
. "$here/lib.sh"
[ -d "$dir" ] || { echo "down: nothing to stop ($dir does not exist)"; exit 0; }

pid_of() { awk -v n="$1" '$1 == n {print $2}' "$dir/pids" 2>/dev/null; }
# The kubelet first, so it restarts nothing; then every container and shim; then the rest.
for name in kubelet kube-proxy; do
  p=$(pid_of "$name"); [ -n "$p" ] && kill -9 "$p" 2>/dev/null
done
for _ in 1 2 3; do
  pkill -9 -f "containerd-shim-runc-v2 .*-address $dir/containerd/containerd.sock" 2>/dev/null
  for procs in /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs \
    /sys/fs/cgroup/kubepods*/cgroup.procs; do
    [ -r "$procs" ] && xargs -r kill -9 < "$procs" 2>/dev/null
  done
  sleep 0.3
done
if [ -f "$dir/pids" ]; then
  while read -r _ pid; do kill -9 "$pid" 2>/dev/null; done < "$dir/pids"
  while read -r _ pid; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done < "$dir/pids"
fi

# Mounts under $dir (volumes, overlay snapshots, shm), deepest first.
for _ in 1 2 3; do
  awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
done
# Network namespaces the CRI created (those not there before up.sh).
if [ -f "$dir/host/netns" ]; then
  for ns in $(ls /var/run/netns 2>/dev/null); do
    grep -qx "$ns" "$dir/host/netns" && continue
    umount "/var/run/netns/$ns" 2>/dev/null || umount -l "/var/run/netns/$ns" 2>/dev/null
    rm -f "/var/run/netns/$ns"
  done
fi
ip link del "$bridge" 2>/dev/null
# Pod cgroups.
for root in /sys/fs/cgroup/* /sys/fs/cgroup; do
  [ -d "$root/kubepods" ] || [ -d "$root/kubepods.slice" ] || continue
  find "$root/kubepods" "$root/kubepods.slice" -depth -type d -exec rmdir {} + 2>/dev/null
done
if [ -f "$dir/host/sysctl" ]; then
  # Only what the kubelet and kube-proxy added (KUBE-* chains and the jumps to them), so rules
  # others added meanwhile stay.
  for fam in iptables ip6tables; do
    command -v "$fam-save" >/dev/null || continue
    rules=$("$fam-save" 2>/dev/null) || continue
    if grep -q KUBE <<<"$rules"; then grep -v KUBE <<<"$rules" | "$fam-restore"; fi
  done
  while IFS='=' read -r k v; do
    f=/proc/sys/${k//.//}
    [ "$(cat "$f" 2>/dev/null)" = "$v" ] || echo "$v" > "$f" 2>/dev/null || echo "down: could not restore $k=$v" >&2
  done < "$dir/host/sysctl"
  [ -f "$dir/host/cni-existed" ] || rm -rf /var/lib/cni
fi
rm -rf "$dir" || { echo "down: $dir could not be removed (a mount left?)" >&2; exit 1; }
echo "down: stopped; host settings restored"
