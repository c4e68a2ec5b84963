# Pinned versions for hack/cluster (sourced).
K8S_VERSION="${WAND_K8S_VERSION:-v1.34.4}"   # newest 1.34.x on the Go module proxy when pinned (2026-11)
