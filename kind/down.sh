#!/usr/bin/env bash
# down.sh: deletes the kind clusters up.sh made (every cluster named cluster<I>). With --purge,
# also removes the generated state (root and intermediate CA keys, kubeconfigs) in
# $MESHFED_KIND_WORK (default ~/.cache/meshfed-kind).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case "${1:-}" in
  "") ;;
  --purge) purge=1 ;;
  *)
    echo "usage: $0 [--purge]" >&2
    exit 2
    ;;
esac

need_tools docker kind

clusters=$(kind_clusters)
if [ -z "$clusters" ]; then
  log "no kind clusters named cluster<N>"
fi
for i in $clusters; do
  log "deleting cluster$i"
  kind delete cluster --name "cluster$i"
  rm -rf "${WORK:?}/cluster$i"
done
if [ "$purge" -eq 1 ]; then
  log "removing $WORK"
  rm -rf "${WORK:?}"
fi
