#!/usr/bin/env bash
# The scenarios on the real node (tests/node/up.sh): the operator running from its image as the
# chart deploys it, and runner processes (the consumer image) using the tokens it manages.
#
#   tests/node/e2e.sh [SCENARIO...]   # default: all of upgrade install rotation killed
#
# Brings the node up when none is (and takes it down again at the end), else uses the one
# whose env file is in $RUNNER_OPERATOR_NODE_DIR. Prints each scenario's figures and a closing
# "N passed, N failed" line; exits non-zero when one failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/node/lib.sh
. "$here/lib.sh"
kubectl=$repo/.tools/bin/kubectl-1.35 helm=$repo/.tools/bin/helm
# upgrade first: it counts every GitLab write, so no other scenario's Runners may be at work.
scenarios=("$@"); [ ${#scenarios[@]} -gt 0 ] || scenarios=(upgrade install rotation killed)

brought_up=0
if [ -f "$dir/env" ] && . "$dir/env" && "$kubectl" get --raw /readyz >/dev/null 2>&1; then
  echo "e2e: using the node in $dir"
else
  host_snapshot > /tmp/runner-operator-node.before
  brought_up=1
  trap '[ -z "${KEEP_NODE:-}" ] && "$here/down.sh"' EXIT
  "$here/up.sh" > /tmp/runner-operator-node.env
  . /tmp/runner-operator-node.env
fi

k() { "$kubectl" "$@"; }
say() { echo "e2e[$current]: $*"; }
# Scenarios run in a subshell: a failure ends the scenario, not the script.
die() { say "FAILED: $*"; exit 1; }
now_ms() { date +%s%3N; }
# until_ok SECONDS WHAT COMMAND...
until_ok() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after $secs s: $what"
    sleep 0.5
  done
}
gl() { # METHOD PATH [curl args]: the GitLab API as the host reaches it, as admin
  local m=$1 p=$2; shift 2
  curl -sS -X "$m" -H "PRIVATE-TOKEN: $GITLAB_TOKEN" "$GITLAB_HOST_URL/api/v4$p" "$@"
}
# The consumer's token is refused (403) or accepted (204) by GitLab, as its poll sees it.
poll_status() { curl -s -o /dev/null -w '%{http_code}' -X POST "$GITLAB_HOST_URL/api/v4/jobs/request" -d "token=$1"; }
secret_token() { k get secret -n "$1" "$2" -o jsonpath='{.data.runner-token}' | base64 -d; }
runner_ready() { k get glrunner -n "$1" "$2" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
restricted_ns() {
  k create namespace "$1" >/dev/null 2>&1 || true
  k label namespace "$1" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
}
# A namespace's connection to the emulator (the admin token, so any seeded project works).
connection() { # NAMESPACE [requests per second]
  local rps=${2:-50}
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: gitlab-token, namespace: $1}
stringData: {token: $GITLAB_TOKEN}
---
apiVersion: gitlab.runner-operator.dev/v1alpha1
kind: GitLabConnection
metadata: {name: gitlab, namespace: $1}
spec:
  url: $GITLAB_URL
  allowInsecureHTTP: true
  tokenSecretRef: {name: gitlab-token, key: token}
  rateLimit: {requestsPerSecond: $rps, burst: $rps}
EOF
}
seed_project() { # PATH [token lifetime seconds]
  local interval=${2:-null}
  curl -sf -X POST "$GITLAB_HOST_URL/-/emulator/seed" -H 'content-type: application/json' \
    -d "{\"projects\":[{\"path\":\"$1\",\"members\":{},\"runner_token_expiration_interval\":$interval}]}" >/dev/null
}
restricted_security='securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}'
container_security='securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}'

# ---------------------------------------------------------------------------------------------
scenario_install() {
  local pod pid
  pod=$(k get pod -n runner-operator -l app.kubernetes.io/name=runner-operator -o jsonpath='{.items[0].metadata.name}')
  k wait -n runner-operator pod/"$pod" --for=condition=Ready --timeout=120s >/dev/null || die "operator pod not Ready"
  say "operator pod $pod Ready through its probes (image $(k get pod -n runner-operator "$pod" -o jsonpath='{.spec.containers[0].image}'))"
  # What the process really runs as, seen from the host.
  pid=$(pgrep -f '^/usr/local/bin/runner-operator run' | head -n 1)
  [ -n "$pid" ] || die "no operator process on the node"
  local uid ro caps nnp
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
  caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
  nnp=$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$pid/status")
  ro=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | head -n 1)
  say "operator process: uid $uid, CapEff $caps, NoNewPrivs $nnp, root mount $ro"
  [ "$uid" = 65532 ] || die "operator runs as uid $uid"
  [ "$caps" = 0000000000000000 ] || die "operator has capabilities $caps"
  [ "$nnp" = 1 ] || die "operator may gain privileges"
  case ",$ro," in *,ro,*) ;; *) die "root filesystem not read-only ($ro)";; esac
  k get ns runner-operator -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}' | grep -qx restricted \
    || die "namespace does not enforce restricted"

  restricted_ns install; connection install
  k apply -f - >/dev/null <<EOF
apiVersion: gitlab.runner-operator.dev/v1alpha1
kind: Runner
metadata: {name: first, namespace: install}
spec:
  connectionRef: {kind: GitLabConnection, name: gitlab}
  runnerType: project_type
  project: platform/api
  description: first runner on a real node
  tokenSecret: {name: first-token}
EOF
  local t0; t0=$(now_ms)
  until_ok 60 "Runner install/first Ready" runner_ready install first
  say "Runner Ready in $(( $(now_ms) - t0 )) ms; GitLab runner $(k get glrunner -n install first -o jsonpath='{.status.runnerId}')"
  [ "$(poll_status "$(secret_token install first-token)")" = 204 ] || die "the Secret's token is not accepted by GitLab"

  # /metrics from another pod, through the chart's Service (its ClusterIP: no DNS here).
  local ip port
  ip=$(k get svc -n runner-operator runner-operator -o jsonpath='{.spec.clusterIP}')
  port=$(k get svc -n runner-operator runner-operator -o jsonpath='{.spec.ports[0].port}')
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: scrape, namespace: install}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: 60
  $restricted_security
  containers:
  - name: scrape
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    $container_security
    command: [/bin/sh, -c, "wget -q -O - http://$ip:$port/metrics | grep -E '^runner_operator_(build_info|runners)'"]
EOF
  until_ok 60 "the scrape pod finished" sh -c "'$kubectl' get pod -n install scrape -o jsonpath='{.status.phase}' | grep -Eqx 'Succeeded|Failed'"
  [ "$(k get pod -n install scrape -o jsonpath='{.status.phase}')" = Succeeded ] || { k logs -n install scrape || true; die "scraping $ip:$port failed"; }
  say "scraped http://$ip:$port/metrics from a pod: $(k logs -n install scrape | wc -l) matching series, e.g. $(k logs -n install scrape | head -n 1)"
}

# ---------------------------------------------------------------------------------------------
consumer_deployment() { # NAMESPACE NAME SECRET [REPLICAS] [POLL SECONDS]
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $2, namespace: $1}
spec:
  replicas: ${4:-2}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  selector: {matchLabels: {app: $2}}
  template:
    metadata: {labels: {app: $2}}
    spec:
      $restricted_security
      terminationGracePeriodSeconds: 5
      containers:
      - name: runner
        image: $CONSUMER_IMAGE
        imagePullPolicy: Never
        $container_security
        # As the gitlab-runner chart does: the Secret mounted, the agent reading runner-token.
        env:
        - {name: GITLAB_URL, value: "$GITLAB_URL"}
        - {name: RUNNER_TOKEN_FILE, value: /secrets/runner-token}
        - {name: POLL_INTERVAL_SECONDS, value: "${5:-1}"}
        # As the operator asks of every consumer: the Secret's token is the only one.
        - {name: FF_DISABLE_AUTOMATIC_TOKEN_ROTATION, value: "true"}
        volumeMounts: [{name: token, mountPath: /secrets, readOnly: true}, {name: tmp, mountPath: /tmp}]
        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1, failureThreshold: 1}
      volumes:
      - {name: token, secret: {secretName: $3}}
      - {name: tmp, emptyDir: {}}
EOF
}
rolled_out() { # NAMESPACE DEPLOYMENT: every pod of the newest template Ready, no old pod left
  local d; d=$(k get deploy -n "$1" "$2" -o json)
  python3 -c '
import json, sys
d = json.loads(sys.argv[1]); s = d["status"]
ok = (s.get("observedGeneration") == d["metadata"]["generation"] and s.get("updatedReplicas") == 2
      and s.get("readyReplicas") == 2 and s.get("replicas") == 2 and s.get("unavailableReplicas", 0) == 0)
sys.exit(0 if ok else 1)' "$d"
}
# First "poll accepted" (ms) among the pods of the Deployment's current template.
first_new_poll_ms() { # NAMESPACE APP
  local hash first=""
  hash=$(k get rs -n "$1" -l app="$2" -o json | python3 -c '
import json, sys
rs = [r for r in json.load(sys.stdin)["items"] if r["status"].get("replicas", 0) > 0]
rs.sort(key=lambda r: int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
print(rs[-1]["metadata"]["labels"]["pod-template-hash"])')
  for p in $(k get pod -n "$1" -l "app=$2,pod-template-hash=$hash" -o name); do
    local t; t=$(k logs -n "$1" "$p" | awk '/poll accepted/ {print $1; exit}')
    [ -n "$t" ] && { [ -z "$first" ] || [ "$t" -lt "$first" ]; } && first=$t
  done
  echo "$first"
}
has_new_poll() { [ -n "$(first_new_poll_ms "$@")" ]; }
no_restarts() { # NAMESPACE APP
  local r; r=$(k get pod -n "$1" -l app="$2" -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort -u)
  [ -z "$r" ] || [ "$r" = 0 ]
}
# When GitLab reset the token, in ms: status.tokenIssuedAt has whole seconds, but the expiry
# GitLab returned with the token is exact, and the project's tokens live LIFETIME seconds.
issued_ms() { # NAMESPACE RUNNER LIFETIME
  echo $(( $(date -d "$(k get glrunner -n "$1" "$2" -o jsonpath='{.status.tokenExpiresAt}')" +%s%3N) - $3 * 1000 ))
}

scenario_rotation() {
  local ns=rotation old new window t0 issued first
  restricted_ns $ns; connection $ns
  # Tokens of this project live 120 s, so the operator also rotates on schedule (a third of the
  # lifetime before expiry, 80 s after the requested rotation) while the test watches.
  seed_project platform/rotating 120
  k apply -f - >/dev/null <<EOF
apiVersion: gitlab.runner-operator.dev/v1alpha1
kind: Runner
metadata: {name: builders, namespace: $ns}
spec:
  connectionRef: {kind: GitLabConnection, name: gitlab}
  runnerType: project_type
  project: platform/rotating
  description: rotation on a real node
  tokenSecret:
    name: builders-token
    consumers: [{kind: Deployment, name: builders-runner}]
EOF
  until_ok 60 "Runner Ready" runner_ready $ns builders
  consumer_deployment $ns builders-runner builders-token
  until_ok 120 "consumers rolled out and polling" rolled_out $ns builders-runner
  old=$(secret_token $ns builders-token)
  [ "$(poll_status "$old")" = 204 ] || die "the first token is not accepted"
  local managers
  managers=$(gl GET "/runners/$(k get glrunner -n $ns builders -o jsonpath='{.status.runnerId}')/managers" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  say "2 consumer pods verified and poll with the first token; GitLab lists $managers runner managers"

  local round
  for round in Requested Expiry; do
    t0=$(now_ms)
    if [ $round = Requested ]; then
      k annotate glrunner -n $ns builders --overwrite gitlab.runner-operator.dev/rotate-token="$t0" >/dev/null
    fi
    until_ok 120 "a $round rotation" sh -c "[ \"\$('$kubectl' get glrunner -n $ns builders -o jsonpath='{.status.lastRotationReason}')\" = $round ] && [ \"\$('$kubectl' get secret -n $ns builders-token -o jsonpath='{.data.runner-token}' | base64 -d)\" != '$old' ]"
    new=$(secret_token $ns builders-token)
    issued=$(issued_ms $ns builders 120)
    until_ok 120 "consumers rolled onto the $round token" rolled_out $ns builders-runner
    until_ok 30 "a new pod polling" has_new_poll $ns builders-runner
    first=$(first_new_poll_ms $ns builders-runner)
    [ -n "$first" ] || die "no pod of the new template polled"
    [ "$(poll_status "$old")" = 403 ] || die "the old token is still accepted"
    [ "$(poll_status "$new")" = 204 ] || die "the new token is refused"
    no_restarts $ns builders-runner || die "a consumer container restarted"
    window=$(( first - issued ))
    say "$round rotation: reset at $(k get glrunner -n $ns builders -o jsonpath='{.status.tokenIssuedAt}'), first new pod polling $window ms later; old token 403, new token 204, 0 container restarts"
    echo "$round $window" >> "$dir/rotation-windows"
    old=$new
  done
}

# ---------------------------------------------------------------------------------------------
# N project Runners r1..rN in NAMESPACE owned by PROJECT; "with-consumers": each names the
# Deployment rI-runner as its token consumer.
apply_runners() { # NAMESPACE N PROJECT [with-consumers]
  local i consumers=""
  for i in $(seq 1 "$2"); do
    [ "${4:-}" = with-consumers ] && consumers=", consumers: [{kind: Deployment, name: r$i-runner}]"
    cat <<EOF
---
apiVersion: gitlab.runner-operator.dev/v1alpha1
kind: Runner
metadata: {name: r$i, namespace: $1}
spec:
  connectionRef: {kind: GitLabConnection, name: gitlab}
  runnerType: project_type
  project: $3
  description: ${3##*/}-$i
  tokenSecret: {name: r$i-token$consumers}
EOF
  done | k apply -f - >/dev/null
}
created_count() { k get glrunner -n "$1" -o jsonpath='{range .items[*]}{.status.runnerId}{"\n"}{end}' | grep -c . || true; }
created_at_least() { [ "$(created_count "$1")" -ge "$2" ]; }

scenario_killed() {
  local ns=killed n=20 pod ids gitlab_ids
  # 2 GitLab requests per second: creating 20 (2 requests each) takes about 20 s, so the kill
  # lands in the middle.
  restricted_ns $ns; connection $ns 2
  seed_project platform/killed
  pod=$(k get pod -n runner-operator -l app.kubernetes.io/name=runner-operator -o jsonpath='{.items[0].metadata.name}')
  apply_runners $ns $n platform/killed
  # Kill the pod once creation is under way (some runners exist in GitLab, not all).
  until_ok 60 "creation under way" created_at_least $ns 3
  local created; created=$(created_count $ns)
  k delete pod -n runner-operator "$pod" --grace-period=0 --force >/dev/null 2>&1
  say "operator pod $pod force-deleted with $created of $n Runners created"
  local t0; t0=$(now_ms)
  until_ok 180 "all $n Runners Ready" all_ready $ns $n
  local newpod; newpod=$(k get pod -n runner-operator -l app.kubernetes.io/name=runner-operator -o jsonpath='{.items[0].metadata.name}')
  [ "$newpod" != "$pod" ] || die "the operator pod was not replaced"
  [ "$created" -lt $n ] || die "all $n were created before the kill: nothing was interrupted"
  say "replacement pod $newpod finished them: all $n Ready $(( $(now_ms) - t0 )) ms after the kill"
  ids=$(k get glrunner -n $ns -o jsonpath='{range .items[*]}{.status.runnerId}{"\n"}{end}' | sort -n)
  local project; project=$(gl GET "/projects/platform%2Fkilled" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  gitlab_ids=$(gl GET "/projects/$project/runners?per_page=100&type=project_type" | python3 -c 'import json,sys; print("\n".join(str(r["id"]) for r in json.load(sys.stdin)))' | sort -n)
  [ "$(echo "$ids" | sort -u | grep -c .)" = $n ] || die "Runners do not hold $n distinct ids: $ids"
  [ "$ids" = "$gitlab_ids" ] || die "GitLab holds other runners than the Runners: GitLab [$(echo $gitlab_ids)] vs Runners [$(echo $ids)]"
  say "GitLab holds exactly the $n runners the Runners name: no duplicate, no orphan"
}

# ---------------------------------------------------------------------------------------------
# GitLab writes: every request but reads and the runner processes' own (verify, job requests).
gitlab_writes() {
  curl -sf "$GITLAB_HOST_URL/-/emulator/counts" | python3 -c '
import json, sys
c = json.load(sys.stdin)
own = {"POST /runners/verify", "POST /jobs/request"}
w = {k: v for k, v in c.items() if not k.startswith("GET ") and k not in own}
print(sum(w.values()), sum(v for k, v in w.items() if "reset_authentication_token" in k), json.dumps(w, sort_keys=True, separators=(",", ":")))'
}
consumer_pods() { # NAMESPACE: every consumer pod's uid and restart count
  k get pod -n "$1" -o jsonpath='{range .items[*]}{.metadata.uid} {.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort
}
all_ready() { # NAMESPACE N
  [ "$(k get glrunner -n "$1" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -cx True)" = "$2" ]
}
deployments_ready() { # NAMESPACE N
  [ "$(k get deploy -n "$1" -o jsonpath='{range .items[*]}{.status.readyReplicas}{"\n"}{end}' | grep -cx 1)" = "$2" ]
}
operator_pods() { k get pod -n runner-operator -l app.kubernetes.io/name=runner-operator -o jsonpath='{range .items[*]}{.metadata.name} {.spec.containers[0].image} {.status.conditions[?(@.type=="Ready")].status} {.status.podIP}{"\n"}{end}'; }
old_pod_gone() { ! k get pod -n runner-operator "$1" -o name >/dev/null 2>&1; }
helm_failed() { [ -s "$NODE_DIR/helm.rc" ] && [ "$(cat "$NODE_DIR/helm.rc")" != 0 ]; }
old_pod_gone_or_helm_failed() { # POD
  if helm_failed; then say "helm failed:"; cat "$NODE_DIR/helm.log"; die "helm failed"; fi
  old_pod_gone "$1"
}
leading() { operator_pods | awk -v i="$1" '$2 == i && $3 == "True"' | grep -q .; }
# The Lease's holder is a pod running IMAGE (leading, whatever its readiness probe says yet).
holds_lease() {
  local holder; holder=$(k get lease -n runner-operator runner-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)
  [ -n "$holder" ] && operator_pods | awk -v i="$1" -v h="$holder" '$1 == h && $2 == i' | grep -q .
}
# The operator on IMAGE leads and has counted every one of the N Runners Ready.
checked_all() { # IMAGE N
  local ip
  ip=$(operator_pods | awk -v i="$1" '$2 == i && $3 == "True" {print $4}' | head -n 1)
  [ -n "$ip" ] || return 1
  curl -sf "http://$ip:8080/metrics" | python3 -c '
import sys
n = int(sys.argv[1]); total = 0
for line in sys.stdin:
    if line.startswith("runner_operator_runners{") and "/upgrade/" in line and "ready=\"true\"" in line:
        total += float(line.rsplit(" ", 1)[1])
sys.exit(0 if total >= n else 1)' "$2"
}
# helm upgrade/rollback to IMAGE: the new pod leads within one lease duration (15 s) of the
# old one's end, and touches nothing in GitLab or the consumers.
transition() { # WHAT IMAGE helm-args...
  local what=$1 image=$2; shift 2
  local before_pods after_pods before_w before_r after_w after_r detail old t_old lead_ms
  before_pods=$(consumer_pods upgrade)
  read -r before_w before_r _ < <(gitlab_writes)
  old=$(operator_pods | awk '{print $1}' | head -n 1)
  rm -f "$NODE_DIR/helm.rc"
  ( "$helm" "$@" >"$NODE_DIR/helm.log" 2>&1; echo $? > "$NODE_DIR/helm.rc" ) &
  local helm_pid=$!
  until_ok 120 "the old operator pod to be gone" old_pod_gone_or_helm_failed "$old"
  t_old=$(now_ms)
  until_ok 60 "the $what operator holding the Lease" holds_lease "$image"
  lead_ms=$(( $(now_ms) - t_old ))
  until_ok 60 "the $what operator Ready" leading "$image"
  wait $helm_pid
  if helm_failed; then cat "$NODE_DIR/helm.log"; die "helm $* failed"; fi
  until_ok 120 "the $what operator to count all 50 Runners Ready" checked_all "$image" 50
  read -r after_w after_r detail < <(gitlab_writes)
  after_pods=$(consumer_pods upgrade)
  say "$what to $image: new pod holding the Lease $lead_ms ms after the old one was gone (lease 15 s); GitLab writes $(( after_w - before_w )), token resets $(( after_r - before_r )); consumer pods unchanged: $([ "$before_pods" = "$after_pods" ] && echo yes || echo NO)"
  [ "$lead_ms" -le 15000 ] || die "the new operator took $lead_ms ms to lead"
  [ "$after_w" = "$before_w" ] || die "GitLab writes during the $what: $detail"
  [ "$after_r" = "$before_r" ] || die "token resets during the $what"
  [ "$before_pods" = "$after_pods" ] || die "consumer pods were restarted or replaced"
  all_ready upgrade 50 || die "not every Runner is Ready after the $what"
}

scenario_upgrade() {
  local ns=upgrade n=50 prev prev_image prev_tar prev_chart
  prev=$("$here/build-previous.sh" | tail -n 1)
  prev_image=$(sed 's/.*image=\([^ ]*\).*/\1/' <<<"$prev")
  prev_tar=$(sed 's/.*tar=\([^ ]*\).*/\1/' <<<"$prev")
  prev_chart=$(sed 's/.*chart=\([^ ]*\).*/\1/' <<<"$prev")
  ctr -a "$NODE_DIR/containerd/containerd.sock" -n k8s.io images import "$prev_tar" >/dev/null
  # Start from the previous release, with leader election (what HA users run).
  "$helm" uninstall runner-operator -n runner-operator --wait >/dev/null
  install_operator "$prev_image" "$prev_chart" --set leaderElection.enabled=true
  restricted_ns $ns; connection $ns
  seed_project platform/upgrade
  apply_runners $ns $n platform/upgrade with-consumers
  until_ok 180 "$n Runners Ready" all_ready $ns $n
  for i in $(seq 1 $n); do consumer_deployment $ns "r$i-runner" "r$i-token" 1 3; done
  until_ok 300 "$n consumer pods polling" deployments_ready $ns $n
  until_ok 120 "the previous operator counting all $n Ready" checked_all "$prev_image" $n
  say "$n Runners Ready under $prev_image, $n consumer pods polling"
  transition upgrade "$OPERATOR_IMAGE" upgrade runner-operator "$repo/charts/runner-operator" -n runner-operator \
    --reuse-values --set image.tag="${OPERATOR_IMAGE##*:}" --wait --timeout 180s
  transition rollback "$prev_image" rollback runner-operator 1 -n runner-operator --wait --timeout 180s
  # The current release again, for the scenarios after this one.
  transition "upgrade again" "$OPERATOR_IMAGE" upgrade runner-operator "$repo/charts/runner-operator" -n runner-operator \
    --reuse-values --set image.tag="${OPERATOR_IMAGE##*:}" --wait --timeout 180s
}

passed=0 failed=0
for current in "${scenarios[@]}"; do
  declare -F "scenario_$current" >/dev/null || { echo "unknown scenario $current" >&2; exit 2; }
  start=$(date +%s)
  # Not inside an `if`: there bash would ignore set -e in the scenario.
  set +e; ( set -e; "scenario_$current" ); rc=$?; set -e
  if [ $rc = 0 ]; then
    passed=$((passed + 1)); echo "e2e[$current]: ok in $(( $(date +%s) - start )) s"
  else
    failed=$((failed + 1)); echo "e2e[$current]: FAILED after $(( $(date +%s) - start )) s (logs: $dir/logs, kubectl logs -n runner-operator deploy/runner-operator)"
    k logs -n runner-operator deploy/runner-operator --tail 30 2>/dev/null || true
  fi
done
if [ "$brought_up" = 1 ] && [ -z "${KEEP_NODE:-}" ]; then
  trap - EXIT
  current=down
  "$here/down.sh"
  if diff /tmp/runner-operator-node.before <(host_snapshot) >/tmp/runner-operator-node.diff; then
    passed=$((passed + 1)); say "the host is as it was before up.sh (sysctls, iptables, links, namespaces, mounts, cgroups, processes)"
  else
    failed=$((failed + 1)); say "FAILED: down.sh left the host changed:"; cat /tmp/runner-operator-node.diff
  fi
fi
echo "node e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
