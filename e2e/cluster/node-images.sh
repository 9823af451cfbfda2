#!/usr/bin/env bash
# Imports image tarballs into every node of the local cluster.
#
#   e2e/cluster/node-images.sh <tarball>...
#
# A tarball is a docker-archive (`docker save`, `podman save`, `buildah push
# ... docker-archive:`, e2e/images/lib-archive.sh) or an OCI archive. After
# this a pod on any node can use the image with imagePullPolicy IfNotPresent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
# shellcheck source=e2e/cluster/lib-images.sh
source "$here/lib-images.sh"

(($#)) || die "usage: node-images.sh <tarball>..."
images_import_all "$@"
log "imported into ${ROAM_NODES[*]}: $*"
