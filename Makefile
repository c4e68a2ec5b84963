.PHONY: test demo bench krew cluster-up cluster-down

# The test command from the README: real Python 3.14 processes and a real single-node cluster.
test:
	hack/test

# The main job: bring up the cluster, deploy the demo workload and run kubectl wand against it.
demo:
	hack/demo

bench:
	hack/bench

cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down

# The krew release archive (dist/kubectl-wand-v<version>.tar.gz); writes its sha256 into plugins.yaml.
krew:
	krew/build
