#!/usr/bin/env bash
# up.sh [N]: the seed's multi-primary, multi-network scenario on N kind clusters (default 2),
# cluster1..N on network1..N, nodes in region<I>/zone<I>, with meshfed in place of istiod:
#   1. kind clusters with distinct pod and service subnets and labelled nodes;
#   2. MetalLB (L2) with an address pool per cluster carved from docker's kind network;
#   3. one shared root CA and an intermediate per cluster (the cacerts Secret: each cluster's
#      federation is its CA); no workload certificates, the pods' agents ask the CA;
#   4. the meshfed image (Dockerfile at the repository root), loaded into every cluster;
#   5. deploy/meshfed.yaml per cluster (the "# CLUSTER" lines substituted) and the
#      DestinationRule CRD meshfed watches;
#   6. remote secrets between every pair of clusters (meshfed create-remote-secret);
#   7. helloworld v<I> and sleep in namespace sample, with Envoy sidecars on meshfed's xDS
#      (the federation's secure port, 15012) and meshfed agent getting their certificates from
#      the federation's CA with the pods' ServiceAccount tokens; the shared root published in
#      the namespace as istiod does (ConfigMap istio-ca-root-cert).
# Re-running is safe: existing clusters, CA material and objects are kept or updated.
# Environment: MESHFED (a meshfed binary instead of building one), MESHFED_IMAGE (default
# meshfed:kind), MESHFED_SKIP_BUILD=1 (use MESHFED_IMAGE as it is), KIND_NODE_IMAGE,
# MESHFED_KIND_WORK (generated state; default ~/.cache/meshfed-kind).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned: MetalLB's manifest.
METALLB_MANIFEST=https://raw.githubusercontent.com/metallb/metallb/v0.14.9/config/manifests/metallb-native.yaml

usage() {
  echo "usage: $0 [N]    create kind clusters cluster1..N (default 2, at most 24) running meshfed" >&2
  exit 2
}

[ $# -le 1 ] || usage
N=${1:-2}
if ! [[ $N =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ] || [ "$N" -gt 24 ]; then
  usage
fi

need_tools docker kind kubectl
find_meshfed
mkdir -p "$WORK"

# k I ARGS...: kubectl against cluster I.
k() {
  local i=$1
  shift
  kubectl --context "kind-cluster$i" "$@"
}

# apply_rendered I FILE: kind/manifests/FILE rendered with cluster I's values (and any extra
# KEY=VALUE arguments), applied to cluster I.
apply_rendered() {
  local i=$1 file=$2 vars
  shift 2
  mapfile -t vars < <(cluster_vars "$i")
  render "$KIND_DIR/manifests/$file" "${vars[@]}" "$@" | k "$i" apply -f -
}

create_cluster() {
  local i=$1 dir=$WORK/cluster$1 vars image_args=()
  mkdir -p "$dir"
  if kind get clusters 2>/dev/null | grep -qx "cluster$i"; then
    log "cluster$i exists: reusing it"
  else
    log "creating kind cluster cluster$i"
    mapfile -t vars < <(cluster_vars "$i")
    render "$KIND_DIR/manifests/kind-cluster.yaml" "${vars[@]}" >"$dir/kind.yaml"
    if [ -n "${KIND_NODE_IMAGE:-}" ]; then
      image_args=(--image "$KIND_NODE_IMAGE")
    fi
    kind create cluster --name "cluster$i" --config "$dir/kind.yaml" --wait 180s "${image_args[@]}"
  fi
  # The host-side kubeconfig: create-remote-secret uses it to make the reader account.
  kind get kubeconfig --name "cluster$i" >"$dir/kubeconfig"
  # The locality meshfed reads (kind's config sets it; this keeps reused clusters right too).
  k "$i" label nodes --all --overwrite \
    "topology.kubernetes.io/region=region$i" "topology.kubernetes.io/zone=zone$i"
  # kind's control-plane node is excluded from load balancers: MetalLB would announce the
  # gateway's address from no node at all.
  local exclude=node.kubernetes.io/exclude-from-external-load-balancers
  if [ -n "$(k "$i" get nodes -l "$exclude" -o name)" ]; then
    k "$i" label nodes -l "$exclude" "$exclude-"
  fi
}

install_metallb() {
  local i=$1 subnet range
  log "cluster$i: MetalLB"
  k "$i" apply -f "$METALLB_MANIFEST"
  k "$i" -n metallb-system rollout status deployment/controller --timeout=300s
  k "$i" -n metallb-system rollout status daemonset/speaker --timeout=300s
  subnet=$(kind_subnet)
  range=$(lb_range "$subnet" "$i")
  log "cluster$i: LoadBalancer addresses $range (of $subnet)"
  # MetalLB's webhook may refuse the pool for a few seconds after the controller is ready.
  retry 30 2 apply_rendered "$i" metallb-pool.yaml "LB_RANGE=$range" ||
    die "cluster$i: MetalLB did not accept the address pool"
}

make_certs() {
  local i ca
  if [ ! -f "$WORK/certs/root/root-cert.pem" ]; then
    log "shared root CA"
    "$MESHFED" certs root-ca --out "$WORK/certs/root"
  fi
  for i in $(seq "$N"); do
    ca=$WORK/certs/cluster$i
    if [ ! -f "$ca/ca-cert.pem" ]; then
      log "cluster$i: intermediate CA"
      "$MESHFED" certs intermediate --root "$WORK/certs/root" --cluster "cluster$i" --out "$ca"
    fi
    # Everything chains to the one root (catches a root re-made under older intermediates).
    "$MESHFED" certs verify "$WORK/certs/root" "$ca" >/dev/null ||
      die "the CA material in $WORK/certs does not chain to one root: remove $WORK/certs and re-run"
  done
}

build_image() {
  local i
  if [ -n "${MESHFED_SKIP_BUILD:-}" ]; then
    log "MESHFED_SKIP_BUILD is set: loading $IMAGE as it is"
  else
    log "building $IMAGE"
    docker build -t "$IMAGE" "$REPO"
  fi
  for i in $(seq "$N"); do
    kind load docker-image "$IMAGE" --name "cluster$i"
  done
}

install_meshfed() {
  local i=$1
  log "cluster$i: meshfed (cluster$i, network$i, $IMAGE)"
  k "$i" apply -f "$KIND_DIR/manifests/destinationrule-crd.yaml" \
    -f "$KIND_DIR/manifests/virtualservice-crd.yaml"
  k "$i" wait --for=condition=established --timeout=60s \
    crd/destinationrules.networking.istio.io crd/virtualservices.networking.istio.io
  # The federation reads its CA material (the cacerts Secret) once, when it starts: the
  # Secret comes first, in the namespace deploy/meshfed.yaml then labels.
  k "$i" create namespace istio-system --dry-run=client -o yaml | k "$i" apply -f -
  "$MESHFED" certs cacerts-secret --ca "$WORK/certs/cluster$i" | k "$i" apply -f -
  render_meshfed "$i" "$IMAGE" | k "$i" apply -f -
}

remote_secrets() {
  local i j
  for i in $(seq "$N"); do
    for j in $(seq "$N"); do
      if [ "$i" -ne "$j" ]; then
        log "cluster$i reads cluster$j"
        remote_secret "$i" "$j"
      fi
    done
  done
}

gateway_address() {
  k "$1" -n istio-system get service istio-eastwestgateway \
    -o jsonpath='{.status.loadBalancer.ingress[0].ip}'
}

has_gateway_address() {
  [ -n "$(gateway_address "$1")" ]
}

wait_meshfed() {
  local i=$1 d
  for d in meshfed-federation istio-eastwestgateway meshfed-dns; do
    k "$i" -n istio-system rollout status "deployment/$d" --timeout=300s
  done
  retry 60 2 has_gateway_address "$i" ||
    die "cluster$i: the east-west gateway got no LoadBalancer address (is MetalLB announcing?)"
}

install_samples() {
  local i=$1
  log "cluster$i: helloworld-v$i and sleep"
  k "$i" apply -f "$KIND_DIR/manifests/sample-namespace.yaml"
  # The root the pods' agents check the CA's certificate against (their --ca-root).
  root_cert_configmap sample "$WORK/certs/root/root-cert.pem" | k "$i" apply -f -
  apply_rendered "$i" envoy-bootstrap.yaml
  apply_rendered "$i" helloworld.yaml
  apply_rendered "$i" sleep.yaml
}

wait_samples() {
  local i=$1
  k "$i" -n sample rollout status "deployment/helloworld-v$i" --timeout=300s
  k "$i" -n sample rollout status deployment/sleep --timeout=300s
}

for i in $(seq "$N"); do create_cluster "$i"; done
for i in $(seq "$N"); do install_metallb "$i"; done
make_certs
build_image
for i in $(seq "$N"); do install_meshfed "$i"; done
remote_secrets
for i in $(seq "$N"); do wait_meshfed "$i"; done
for i in $(seq "$N"); do install_samples "$i"; done
for i in $(seq "$N"); do wait_samples "$i"; done

echo
for i in $(seq "$N"); do
  echo "cluster$i: context kind-cluster$i, network$i, region$i/zone$i, east-west gateway $(gateway_address "$i"):15443"
done
echo "generated state (root and intermediate CA keys, kubeconfigs): $WORK"
echo "next: $KIND_DIR/verify.sh; tear down with $KIND_DIR/down.sh"
