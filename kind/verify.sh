#!/usr/bin/env bash
# verify.sh: the seed's demo steps against the clusters up.sh made (cluster1 and cluster2;
# further clusters are left alone). One line per step, PASS or FAIL with what was seen; exits
# 1 if any step failed. Steps:
#   isolation              cluster1 cannot reach a cluster2 pod IP directly (cluster2 can)
#   cross_network          sleep in each cluster reaches helloworld v1 and v2
#   mtls_identity          helloworld-v2's sidecar saw cluster1's sleep as
#                          spiffe://cluster.local/ns/sample/sa/sleep, issued by cluster1's
#                          intermediate, with the serial of the certificate sleep's Envoy holds:
#                          the one its meshfed-agent got from cluster1's federation (its CA)
#                          and served over SDS (up.sh makes no workload certificates)
#   dns                    helloworld-v<J>, a Service only cluster J has, resolves through
#                          meshfed-dns in the other cluster (to a 240.240.0.0/16 VIP), and
#                          not through kube-dns
#   distribute             with samples/locality-lb-weight.yaml, 80/20 between regions (±10)
#   failover               with samples/locality-lb-failover.yaml and helloworld-v1 scaled to
#                          0, all of cluster1's traffic goes to v2
#   traffic_shift          with samples/vs-traffic-shift.yaml (VirtualService weights over the
#                          subsets of samples/vs-subsets-dr.yaml), 50/50 between v1 in cluster1
#                          and v2 in cluster2 from each cluster (±15: Envoy picks at random)
#   header_route           with samples/vs-header-route.yaml, 'end-user: jason' goes to v2
#                          across the network and everyone else to v1
#   fault                  with samples/vs-fault.yaml, jason gets 500 "fault filter abort" and
#                          no request leaves sleep's Envoy for helloworld (its upstream request
#                          counters do not move); tester is delayed 1s; others are not
#   timeout                with samples/vs-timeout.yaml and v2's app stopped (SIGSTOP from its
#                          kind node: it takes connections but answers nothing), cluster1 gets
#                          504 "upstream request timeout" after 0.5s; without the rule's timeout
#                          the request waits until v2 is resumed 1.5s later and gets its answer
#   remote_secret_removal  deleting cluster1's remote secret for cluster2 drops cluster2 from
#                          cluster1's federation and its names from meshfed-dns (restored after)
# Every step restores what it changed (rules deleted, v1 scaled back, v2 resumed, the secret
# re-made).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 0 ] || {
  echo "usage: $0    (runs against kind clusters cluster1 and cluster2 made by up.sh)" >&2
  exit 2
}

need_tools docker kind kubectl
find_meshfed
if ! kind_clusters | grep -qx 1 || ! kind_clusters | grep -qx 2; then
  die "kind clusters cluster1 and cluster2 are needed: run $KIND_DIR/up.sh first"
fi
[ -f "$WORK/cluster2/kubeconfig" ] || die "no $WORK/cluster2/kubeconfig: run $KIND_DIR/up.sh first"

HOST=helloworld.sample.svc.cluster.local

k() {
  local i=$1
  shift
  kubectl --context "kind-cluster$i" "$@"
}

# note TEXT: detail for the current step's line.
NOTES=()
note() { NOTES+=("$*"); }

# hello I COUNT [CURL_ARG...]: COUNT requests from cluster I's sleep through its sidecar (with
# extra curl arguments, such as -H 'end-user: jason'), one line each: the body with its
# newlines folded, then " |CODE SECONDS".
hello() {
  local i=$1 n=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by sh in the sleep container
  k "$i" -n sample exec deploy/sleep -c sleep -- sh -c '
    n=$1 host=$2
    shift 2
    for _ in $(seq "$n"); do
      curl -s -m 5 -w " |%{http_code} %{time_total}" -H "Host: $host:5000" "$@" \
        http://127.0.0.1:15001/hello | tr "\n" " "
      echo
    done' sh "$n" "$HOST" "$@"
}

# count VERSION TEXT: how many responses came from VERSION.
count() {
  grep -c "version: $1," <<<"$2" || true
}

# apply_rule FILE: the DestinationRule in every cluster (each federation reads its own).
apply_rule() {
  local i
  for i in 1 2; do
    k "$i" apply -f "$1" >/dev/null || return 1
  done
  # A push, then Envoy warms each changed cluster (its mTLS secrets from meshfed-agent) before
  # using it; nothing tells verify.sh when that is done.
  sleep 20
}

delete_rules() {
  local i
  for i in 1 2; do
    k "$i" -n sample delete destinationrule helloworld --ignore-not-found >/dev/null
  done
}

# federation_admin I PATH: a page of cluster I's federation admin port (15014), through the
# API server's pod proxy (the port is in no Service: debug pages are not for the cluster at
# large).
federation_admin() {
  local pod
  pod=$(k "$1" -n istio-system get pods -l app=meshfed-federation \
    -o jsonpath='{.items[0].metadata.name}') && [ -n "$pod" ] || return 1
  k "$1" get --raw "/api/v1/namespaces/istio-system/pods/$pod:15014/proxy$2"
}

clusterz() { federation_admin "$1" /debug/clusterz; }

# cluster_status I ID: the status of cluster ID in cluster I's federation ("" if it is not
# listed); fails if the federation's admin port cannot be read.
cluster_status() {
  local json
  json=$(clusterz "$1") || return 1
  tr '{' '\n' <<<"$json" | grep "\"id\":\"$2\"" | grep -o '"status":"[a-z]*"' | cut -d'"' -f4 || true
}

listed() {
  local s
  s=$(cluster_status "$1" "$2") && [ -n "$s" ]
}

# shellcheck disable=SC2317 # run through retry
not_listed() {
  local s
  s=$(cluster_status "$1" "$2") && [ -z "$s" ]
}

# shellcheck disable=SC2317 # run through retry
synced() {
  local s
  s=$(cluster_status "$1" "$2") && [ "$s" = synced ]
}

# resolve I NAME [SERVER]: nslookup from cluster I's sleep; its output.
resolve() {
  k "$1" -n sample exec deploy/sleep -c sleep -- nslookup "${@:2}" 2>&1 || true
}

# answered I NAME [SERVER]: the lookup got an address (busybox prints the server first, then
# "Name:" and the answers).
answered() {
  resolve "$@" | awk '/^Name:/ { n = 1 } n && /^Address/ { found = 1 } END { exit !found }'
}

dns_ip() {
  k "$1" -n istio-system get service meshfed-dns -o jsonpath='{.spec.clusterIP}'
}

has_vip() { resolve "$1" "$2" "$(dns_ip "$1")" | grep -q '240\.240\.'; }
# shellcheck disable=SC2317 # run through retry
no_vip() { ! has_vip "$1" "$2"; }

step_isolation() {
  local ip
  ip=$(k 2 -n sample get pod -l app=helloworld,version=v2 -o jsonpath='{.items[0].status.podIP}') || return 1
  [ -n "$ip" ] || {
    note "no helloworld-v2 pod in cluster2"
    return 1
  }
  if ! k 2 -n sample exec deploy/sleep -c sleep -- curl -s -m 5 "http://$ip:5000/hello" >/dev/null; then
    note "cluster2's own sleep cannot reach $ip:5000 either: the pod does not serve"
    return 1
  fi
  if k 1 -n sample exec deploy/sleep -c sleep -- curl -s -m 5 "http://$ip:5000/hello" >/dev/null; then
    note "cluster1 reached cluster2's pod $ip:5000 directly: the pod networks are not isolated"
    return 1
  fi
  note "cluster2 pod $ip:5000: reachable from cluster2, not from cluster1"
}

step_cross_network() {
  local i out v1 v2 ok=0
  delete_rules || return 1
  for i in 1 2; do
    out=$(hello "$i" 20) || return 1
    v1=$(count v1 "$out")
    v2=$(count v2 "$out")
    note "from cluster$i: v1=$v1 v2=$v2 of 20"
    ((v1 > 0 && v2 > 0)) || ok=1
  done
  return "$ok"
}

# sleep_serials_seen: the certificate serials helloworld-v2's sidecar (cluster2) logged for
# mTLS peers that are sleep with a certificate from cluster1's intermediate, one a line (none:
# fails). Envoy flushes stdout logs every 10 s.
sleep_serials_seen() {
  k 2 -n sample logs deploy/helloworld-v2 -c envoy --tail=5000 |
    grep -F 'inbound_mtls peer=spiffe://cluster.local/ns/sample/sa/sleep ' |
    grep -F 'Intermediate CA cluster1' |
    sed -n 's/.* serial=\([0-9A-Fa-f][0-9A-Fa-f]*\) .*/\1/p' | sort -u | grep .
}

# shellcheck disable=SC2317 # run through retry
sleep_from_cluster1() { sleep_serials_seen >/dev/null; }

# held_serials I: the serials of the certificates cluster I's sleep sidecar holds (Envoy's
# /certs: what its SDS secrets, from meshfed-agent, hold).
held_serials() {
  k "$1" -n sample exec deploy/sleep -c sleep -- curl -s -m 5 http://127.0.0.1:15000/certs |
    grep -o '"serial_number": *"[0-9A-Fa-f]*"' | cut -d'"' -f4 | sort -u
}

# ca_issued I: certificates cluster I's CA has issued since the federation started.
ca_issued() {
  local page
  page=$(federation_admin "$1" /metrics) || return 1
  awk '$1 == "meshfed_ca_requests_total{outcome=\"issued\"}" { n = $2 } END { print n + 0 }' <<<"$page"
}

step_mtls_identity() {
  local seen held serial issued
  hello 1 10 >/dev/null || return 1
  if ! retry 15 2 sleep_from_cluster1; then
    note "helloworld-v2's sidecar logged no mTLS peer sleep with a cluster1 certificate"
    return 1
  fi
  seen=$(sleep_serials_seen) || return 1
  held=$(held_serials 1) || {
    note "no certificate in cluster1's sleep sidecar (its admin /certs)"
    return 1
  }
  serial=$(grep -xFf <(printf '%s\n' "$held") <<<"$seen" | head -1 || true)
  if [ -z "$serial" ]; then
    note "helloworld-v2 saw sleep with serial(s) $(tr '\n' ' ' <<<"$seen")but cluster1's sleep sidecar holds $(tr '\n' ' ' <<<"$held")"
    return 1
  fi
  note "helloworld-v2 saw spiffe://cluster.local/ns/sample/sa/sleep issued by Intermediate CA cluster1, serial $serial, the certificate cluster1's sleep sidecar holds"
  # The agent is ready only while it holds a certificate from the CA (its only source).
  if ! k 1 -n sample exec deploy/sleep -c sleep -- curl -sf -m 5 http://127.0.0.1:15020/healthz/ready >/dev/null; then
    note "cluster1's sleep agent holds no certificate from the CA"
    return 1
  fi
  issued=$(ca_issued 1) || issued='?'
  note "cluster1's CA issued $issued certificates since it started"
}

step_dns() {
  local i j name ok=0
  for i in 1 2; do
    j=$((3 - i))
    name=helloworld-v$j.sample.svc.cluster.local
    if k "$i" -n sample get service "helloworld-v$j" >/dev/null 2>&1; then
      note "cluster$i has a helloworld-v$j Service: not a remote-only name"
      ok=1
    elif answered "$i" "$name"; then
      note "kube-dns in cluster$i resolves $name: not a remote-only name"
      ok=1
    elif has_vip "$i" "$name"; then
      note "cluster$i: $name -> $(resolve "$i" "$name" "$(dns_ip "$i")" | grep -o '240\.240\.[0-9.]*' | head -1)"
    else
      note "cluster$i: meshfed-dns has no 240.240.0.0/16 address for $name"
      ok=1
    fi
  done
  return "$ok"
}

step_distribute() {
  local i out mine other ok=0
  apply_rule "$REPO/samples/locality-lb-weight.yaml" || return 1
  for i in 1 2; do
    out=$(hello "$i" 100) || ok=1
    mine=$(count "v$i" "$out")
    other=$(count "v$((3 - i))" "$out")
    note "from cluster$i: own region $mine, other region $other of 100 (want 80/20 ±10)"
    ((mine >= 70 && mine <= 90 && other >= 10 && other <= 30)) || ok=1
  done
  delete_rules || ok=1
  return "$ok"
}

step_failover() {
  local out v2 ok=0
  if ! apply_rule "$REPO/samples/locality-lb-failover.yaml" ||
    ! k 1 -n sample scale deployment/helloworld-v1 --replicas=0 >/dev/null; then
    ok=1
  elif ! k 1 -n sample wait --for=delete pod -l app=helloworld,version=v1 --timeout=120s >/dev/null; then
    note "helloworld-v1 pods did not go away"
    ok=1
  elif sleep 5 && out=$(hello 1 20); then
    v2=$(count v2 "$out")
    note "helloworld-v1 at 0 replicas: v2=$v2 of 20 from cluster1"
    ((v2 == 20)) || ok=1
  else
    ok=1
  fi
  k 1 -n sample scale deployment/helloworld-v1 --replicas=1 >/dev/null || ok=1
  k 1 -n sample rollout status deployment/helloworld-v1 --timeout=180s >/dev/null || ok=1
  delete_rules || ok=1
  return "$ok"
}

# with_status CODE TEXT: how many of hello's lines have status CODE.
with_status() {
  grep -c " |$1 " <<<"$2" || true
}

# within LOW HIGH TEXT: every request took at least LOW and less than HIGH seconds.
within() {
  awk -v lo="$1" -v hi="$2" '{ t = $NF + 0; if (t < lo || t >= hi) bad = 1 } END { exit bad }' <<<"$3"
}

# took TEXT: the fastest and slowest request, as "MIN-MAX s".
took() {
  awk '{ t = $NF + 0; if (NR == 1 || t < lo) lo = t; if (t > hi) hi = t } END { printf "%.3f-%.3f s", lo, hi }' <<<"$1"
}

# apply_vs FILE [SED]: helloworld's subsets and the VirtualService in FILE (edited by the sed
# script SED, if given) in every cluster, as apply_rule does.
apply_vs() {
  local i
  for i in 1 2; do
    k "$i" apply -f "$REPO/samples/vs-subsets-dr.yaml" >/dev/null || return 1
    sed -e "${2:-}" "$1" | k "$i" apply -f - >/dev/null || return 1
  done
  # As in apply_rule: a push, then Envoy warms the new subset clusters before routing to them.
  sleep 20
}

delete_vs() {
  local i
  for i in 1 2; do
    k "$i" -n sample delete virtualservice helloworld --ignore-not-found >/dev/null || return 1
  done
  delete_rules
}

# upstream_requests I: requests cluster I's sleep sidecar has sent to any helloworld cluster
# (Envoy's upstream_rq_total counters, read from its admin port).
upstream_requests() {
  k "$1" -n sample exec deploy/sleep -c sleep -- curl -s -m 5 http://127.0.0.1:15000/stats |
    awk -F': ' -v h="$HOST" 'index($1, "cluster.outbound|5000|") == 1 && index($1, "|" h ".upstream_rq_total") { n += $2 } END { print n + 0 }'
}

# signal_app I SIGNAL: sends SIGNAL (STOP or CONT) to helloworld's app in cluster I and its child
# processes, from the kind node: in the pod it is PID 1 of its namespace, which ignores
# signals sent from inside. A stopped app still takes connections but never answers.
signal_app() {
  local node=cluster$1-control-plane cid pid
  cid=$(docker exec "$node" crictl ps -q --name '^helloworld$' --label io.kubernetes.pod.namespace=sample | head -1)
  [ -n "$cid" ] || {
    note "no helloworld container on $node"
    return 1
  }
  pid=$(docker exec "$node" crictl inspect -o go-template --template '{{.info.pid}}' "$cid") || return 1
  # shellcheck disable=SC2016 # expanded by sh on the kind node
  docker exec "$node" sh -c 'kill -"$1" "$2" $(cat /proc/"$2"/task/*/children 2>/dev/null)' sh "$2" "$pid"
}

step_traffic_shift() {
  local i out v1 v2 ok=0
  apply_vs "$REPO/samples/vs-traffic-shift.yaml" || ok=1
  for i in 1 2; do
    out=$(hello "$i" 100) || ok=1
    v1=$(count v1 "$out")
    v2=$(count v2 "$out")
    note "from cluster$i: v1=$v1 v2=$v2 of 100 (want 50/50 ±15)"
    ((v1 >= 35 && v1 <= 65 && v2 >= 35 && v2 <= 65 && v1 + v2 == 100)) || ok=1
  done
  delete_vs || ok=1
  return "$ok"
}

step_header_route() {
  local i jason others v1 v2 ok=0
  apply_vs "$REPO/samples/vs-header-route.yaml" || ok=1
  for i in 1 2; do
    jason=$(hello "$i" 20 -H 'end-user: jason') || ok=1
    others=$(hello "$i" 20) || ok=1
    v2=$(count v2 "$jason")
    v1=$(count v1 "$others")
    note "from cluster$i: end-user jason -> v2=$v2 of 20, others -> v1=$v1 of 20"
    ((v2 == 20 && v1 == 20)) || ok=1
  done
  delete_vs || ok=1
  return "$ok"
}

step_fault() {
  local before after jason tester others aborted ok=0
  apply_vs "$REPO/samples/vs-fault.yaml" || ok=1
  before=$(upstream_requests 1) || ok=1
  jason=$(hello 1 20 -H 'end-user: jason') || ok=1
  after=$(upstream_requests 1) || ok=1
  aborted=$(grep -c '^fault filter abort |500 ' <<<"$jason" || true)
  note "end-user jason: $aborted of 20 answered 500 \"fault filter abort\"; sleep's Envoy sent $((after - before)) request(s) to helloworld meanwhile"
  ((aborted == 20 && after == before)) || ok=1
  tester=$(hello 1 5 -H 'end-user: tester') || ok=1
  note "end-user tester: $(with_status 200 "$tester") of 5 answered in $(took "$tester") (want >= 1 s)"
  if [ "$(with_status 200 "$tester")" -ne 5 ] || ! within 1.0 5 "$tester"; then ok=1; fi
  others=$(hello 1 10) || ok=1
  note "others: $(with_status 200 "$others") of 10 answered in $(took "$others") (want < 0.5 s)"
  if [ "$(with_status 200 "$others")" -ne 10 ] || ! within 0 0.5 "$others"; then ok=1; fi
  delete_vs || ok=1
  return "$ok"
}

step_timeout() {
  local cut waited timed_out ok=0
  apply_vs "$REPO/samples/vs-timeout.yaml" || ok=1
  if signal_app 2 STOP; then
    cut=$(hello 1 5) || ok=1
    signal_app 2 CONT || ok=1
    timed_out=$(grep -c '^upstream request timeout |504 ' <<<"$cut" || true)
    note "v2 stopped, timeout 0.5s: $timed_out of 5 answered 504 \"upstream request timeout\" in $(took "$cut") (want 0.5-1 s)"
    if ((timed_out != 5)) || ! within 0.5 1.0 "$cut"; then ok=1; fi
  else
    note "could not stop helloworld-v2's app"
    ok=1
  fi
  apply_vs "$REPO/samples/vs-timeout.yaml" '/timeout:/d' || ok=1
  if signal_app 2 STOP; then
    (
      sleep 1.5
      signal_app 2 CONT
    ) &
    waited=$(hello 1 1) || ok=1
    wait $! || ok=1
    note "without the timeout, v2 resumed after 1.5s: $(count v2 "$waited") of 1 answered by v2 in $(took "$waited") (want >= 1.5 s)"
    if [ "$(count v2 "$waited")" -ne 1 ] || ! within 1.5 5 "$waited"; then ok=1; fi
  else
    note "could not stop helloworld-v2's app"
    ok=1
  fi
  # Whatever happened above, v2 answers again.
  signal_app 2 CONT || ok=1
  delete_vs || ok=1
  return "$ok"
}

step_remote_secret_removal() {
  local secret=istio-remote-secret-cluster2 out v1 v2 ok=0
  k 1 -n istio-system get secret "$secret" >/dev/null || {
    note "cluster1 has no $secret"
    return 1
  }
  listed 1 cluster2 || {
    note "cluster1's federation does not list cluster2 before the removal"
    return 1
  }
  k 1 -n istio-system delete secret "$secret" >/dev/null || return 1
  if retry 30 2 not_listed 1 cluster2; then
    note "cluster2 gone from cluster1's /debug/clusterz"
  else
    note "cluster1's federation still lists cluster2 60s after its secret was deleted"
    ok=1
  fi
  if retry 15 2 no_vip 1 helloworld-v2.sample.svc.cluster.local; then
    note "helloworld-v2 no longer resolves in cluster1"
  else
    note "meshfed-dns in cluster1 still resolves helloworld-v2"
    ok=1
  fi
  if out=$(hello 1 20); then
    v1=$(count v1 "$out")
    v2=$(count v2 "$out")
    note "from cluster1: v1=$v1 v2=$v2 of 20"
    ((v2 == 0 && v1 > 0)) || ok=1
  else
    ok=1
  fi
  # Restore: the same secret up.sh made.
  if remote_secret 1 2 >/dev/null && retry 45 2 synced 1 cluster2; then
    note "restored (cluster2 synced again)"
  else
    note "could not restore: re-run $KIND_DIR/up.sh"
    ok=1
  fi
  return "$ok"
}

failed=0
# report STEP STATUS: the step's line (with its notes); a non-zero STATUS fails the run.
report() {
  local result=PASS detail
  if [ "$2" -ne 0 ]; then
    result=FAIL
    failed=1
  fi
  detail=$(printf '%s; ' "${NOTES[@]}")
  printf '%-22s %s  %s\n' "$1" "$result" "${detail%; }"
  NOTES=()
}

r=0
step_isolation || r=$?
report isolation "$r"
r=0
step_cross_network || r=$?
report cross_network "$r"
r=0
step_mtls_identity || r=$?
report mtls_identity "$r"
r=0
step_dns || r=$?
report dns "$r"
r=0
step_distribute || r=$?
report distribute "$r"
r=0
step_failover || r=$?
report failover "$r"
r=0
step_traffic_shift || r=$?
report traffic_shift "$r"
r=0
step_header_route || r=$?
report header_route "$r"
r=0
step_fault || r=$?
report fault "$r"
r=0
step_timeout || r=$?
report timeout "$r"
r=0
step_remote_secret_removal || r=$?
report remote_secret_removal "$r"
exit "$failed"
