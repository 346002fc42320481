#!/usr/bin/env bash
# What up.sh, verify.sh and down.sh share: tool checks, the per-cluster values, manifest
# rendering, the substitution of deploy/meshfed.yaml, the root's ConfigMap for workloads,
# MetalLB address ranges and remote secrets.
# Sourced, never run; tests/kind_static.rs calls these functions too.
set -euo pipefail

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "error: bash 4.4 or later is needed (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 1
fi

KIND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$KIND_DIR/.." && pwd)
# Generated state (the root and intermediate CA keys, kubeconfigs): outside the repository, so
# it never lands in a docker build context. Workload keys are never here: each pod's agent makes
# its own and gets the certificate from its cluster's federation.
WORK=${MESHFED_KIND_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-kind}
# The image up.sh builds and loads into every cluster.
IMAGE=${MESHFED_IMAGE:-meshfed:kind}
# Placeholders the Envoy sidecars fill in themselves when they start (from the downward API).
POD_PLACEHOLDERS=("\${POD_IP}" "\${POD_NAME}" "\${APP}")

die() {
  echo "error: $*" >&2
  exit 1
}

log() { echo "==> $*" >&2; }

# retry TRIES DELAY CMD...: runs CMD until it succeeds, at most TRIES times, DELAY seconds apart.
retry() {
  local tries=$1 delay=$2 k
  shift 2
  for ((k = 1; k <= tries; k++)); do
    if "$@"; then
      return 0
    fi
    [ "$k" -eq "$tries" ] || sleep "$delay"
  done
  return 1
}

# need_tools CMD...: fail up front, naming every missing tool.
need_tools() {
  local missing=() t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing tools: ${missing[*]} (docker: https://docs.docker.com/engine/install/, kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation, kubectl: https://kubernetes.io/docs/tasks/tools/)"
  fi
  if [[ " $* " == *" docker "* ]] && ! docker info >/dev/null 2>&1; then
    die "docker is installed but its engine is not reachable (is the daemon running, may this user use it?)"
  fi
}

# find_meshfed: sets MESHFED to a meshfed binary: $MESHFED if set, else one built from this
# repository with cargo, else the one on PATH.
find_meshfed() {
  if [ -n "${MESHFED:-}" ]; then
    [ -x "$MESHFED" ] || die "MESHFED=$MESHFED is not an executable"
  elif command -v cargo >/dev/null 2>&1; then
    log "building meshfed (cargo build --release)"
    (cd "$REPO" && cargo build --release --locked --bin meshfed >&2)
    MESHFED=$REPO/target/release/meshfed
  elif command -v meshfed >/dev/null 2>&1; then
    MESHFED=$(command -v meshfed)
  else
    die "need cargo (to build meshfed from $REPO) or a meshfed binary (on PATH, or set MESHFED=/path/to/meshfed)"
  fi
}

# cluster_vars I: the placeholder values of cluster I, one KEY=VALUE a line.
cluster_vars() {
  local i=$1
  printf '%s\n' \
    "CLUSTER=cluster$i" \
    "NETWORK=network$i" \
    "REGION=region$i" \
    "ZONE=zone$i" \
    "VERSION=v$i" \
    "MESHFED_IMAGE=$IMAGE" \
    "POD_SUBNET=10.$((10 + i)).0.0/16" \
    "SERVICE_SUBNET=10.$((110 + i)).0.0/16"
}

# sed_escape VALUE: VALUE safe as the replacement of an s|...|...| expression.
sed_escape() {
  printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}

# render FILE KEY=VALUE...: FILE with every ${KEY} replaced by VALUE. Fails if any other
# placeholder is left, except the ones the sidecars fill in at start (POD_PLACEHOLDERS).
render() {
  local file=$1 kv key value out left p
  shift
  local script=()
  for kv in "$@"; do
    key=${kv%%=*}
    value=$(sed_escape "${kv#*=}")
    script+=(-e "s|[$]{$key}|$value|g")
  done
  if [ ${#script[@]} -gt 0 ]; then
    out=$(sed "${script[@]}" "$file")
  else
    out=$(cat "$file")
  fi
  left=$(grep -o '[$]{[A-Za-z_][A-Za-z0-9_]*}' <<<"$out" | sort -u || true)
  for p in "${POD_PLACEHOLDERS[@]}"; do
    left=$(grep -vxF -e "$p" <<<"$left" || true)
  done
  [ -z "$left" ] || die "$file: no value for $(tr '\n' ' ' <<<"$left")"
  printf '%s\n' "$out"
}

# render_meshfed I [IMAGE]: deploy/meshfed.yaml for cluster I. Only the lines marked
# "# CLUSTER" change: cluster1 -> clusterI, network1 -> networkI, the image -> IMAGE.
render_meshfed() {
  local i=$1 image
  image=$(sed_escape "${2:-$IMAGE}")
  sed -e "/# CLUSTER\$/{
s/cluster1/cluster$i/g
s/network1/network$i/g
s|ghcr\\.io/meshfed/meshfed:latest|$image|g
}" "$REPO/deploy/meshfed.yaml"
}

# root_cert_configmap NAMESPACE ROOT_PEM: the ConfigMap istio-ca-root-cert (key root-cert.pem)
# holding the shared root, as istiod publishes it in every namespace: workloads check the CA's
# certificate against it (meshfed agent's --ca-root).
root_cert_configmap() {
  kubectl create configmap istio-ca-root-cert --namespace "$1" \
    --from-file=root-cert.pem="$2" --dry-run=client -o yaml
}

# ip_to_int A.B.C.D / int_to_ip N
ip_to_int() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

int_to_ip() {
  local n=$1
  echo "$(((n >> 24) & 255)).$(((n >> 16) & 255)).$(((n >> 8) & 255)).$((n & 255))"
}

# lb_range SUBNET I: cluster I's MetalLB range, ten addresses carved from the last /24 of the
# docker network SUBNET (kind gives nodes the lowest addresses): .10i-.10i+9 in a network
# wider than /24, .100+10i-.109+10i in a /24.
lb_range() {
  local subnet=$1 i=$2 prefix net last base first
  prefix=${subnet#*/}
  [[ $subnet == */* && $prefix =~ ^[0-9]+$ ]] || die "not an IPv4 CIDR: $subnet"
  [ "$prefix" -le 24 ] || die "the kind network $subnet is smaller than a /24"
  net=$(($(ip_to_int "${subnet%/*}") & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))
  last=$((net | (0xFFFFFFFF >> prefix)))
  base=$((last & ~255))
  if [ "$prefix" -eq 24 ]; then
    [ "$i" -le 14 ] || die "a /24 kind network has room for 14 clusters' address pools"
    first=$((base + 100 + 10 * i))
  else
    [ "$i" -le 24 ] || die "at most 24 clusters"
    first=$((base + 10 * i))
  fi
  echo "$(int_to_ip "$first")-$(int_to_ip $((first + 9)))"
}

# kind_subnet: the first IPv4 subnet of docker's "kind" network.
kind_subnet() {
  local s
  for s in $(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'); do
    if [[ $s == *.*/* ]]; then
      echo "$s"
      return 0
    fi
  done
  die "docker network kind has no IPv4 subnet"
}

# control_plane_ip I: cluster I's control-plane container address on the kind network, the
# API server address the other clusters use.
control_plane_ip() {
  local ip
  ip=$(docker inspect -f '{{with index .NetworkSettings.Networks "kind"}}{{.IPAddress}}{{end}}' "cluster$1-control-plane")
  [ -n "$ip" ] || die "cluster$1-control-plane has no address on the kind network"
  echo "$ip"
}

# remote_secret I J: let cluster I's federation read cluster J (Istio's remote secret format).
remote_secret() {
  local i=$1 j=$2 ip
  ip=$(control_plane_ip "$j")
  "$MESHFED" create-remote-secret --kubeconfig "$WORK/cluster$j/kubeconfig" \
    --context "kind-cluster$j" --name "cluster$j" --server "https://$ip:6443" |
    kubectl --context "kind-cluster$i" apply -f -
}

# kind_clusters: the indexes I of the existing kind clusters named clusterI, ascending.
kind_clusters() {
  kind get clusters 2>/dev/null | sed -n 's/^cluster\([0-9][0-9]*\)$/\1/p' | sort -n
}
