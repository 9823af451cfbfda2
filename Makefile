# Roam: every entry point a developer or CI uses.
#
#   make up       tools, build, local three-data-center cluster, Roam, examples
#   make test     every test tier (what .ci/run runs)
#   make down     stop the local cluster and leave nothing behind
#   make e2e      end-to-end suite against $KUBECONFIG (local or kind)
#   make sanity   csi-sanity against roam-csi
#   make bench    benchmarks -> bench/results/ and docs/benchmarks.md
#   make faults   seeded fault campaign (FAULT_TRIALS=N, FAULT_SEED=S replays one)
#   make fuzz     fuzz targets from their corpus (FUZZ_SECONDS per target)
#   make repeat-teardown  every teardown test 50 times in a row under load (REPEAT=N)
#   make install-plugin  `kubectl roam` into ~/.local/bin (or PLUGIN_DIR=...)
#   make kind-up  a kind cluster through podman, node image built here, Roam installed
#   make kind-down  delete it and leave nothing behind
#   make test-kind  kind-up, the end-to-end suite on it, kind-down

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Pinned upstream tools are built once per version into the cache and linked
# into .tools/ (ignored); see e2e/tools/versions.env.
export ROAM_CACHE ?= $(HOME)/.cache/roam
export ROAM_TOOLS := $(CURDIR)/.tools
export ROAM_CLUSTER_DIR ?= $(CURDIR)/.cluster
export PATH := $(ROAM_TOOLS)/bin:$(PATH)
# Two cores: keep cargo and go from oversubscribing them.
export CARGO_BUILD_JOBS ?= 2

.PHONY: help tools build images up down kind-up kind-down test-kind test test-unit test-dataplane test-control-plane test-cluster e2e sanity bench fmt lint crds faults repeat-teardown fuzz test-fuzz install-plugin

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

tools:
	bash e2e/tools/install.sh

build:
	cargo build --workspace --bins

# Writes crds/*.yaml and the chart's copy from the Rust types.
crds:
	cargo run -q -p roam-crds --bin crdgen

up: tools build
	bash e2e/cluster/up.sh
	bash e2e/cluster/install-roam.sh

down:
	bash e2e/cluster/down.sh

# Tier 1: unit and property tests (no root, no cluster).
test-unit:
	cargo test --workspace --lib --bins
	cargo test -p roam-engine --tests
	cargo test -p roam-crds --test crd_drift

# Tier 2: storage systems as separate processes, in network namespaces, with
# a delay proxy and partitions; FUSE, loop devices and ext4 (root).
test-dataplane:
	cargo test -p roam-csi --test storage_local --test storage_restart --test dataplane --test dataplane_frontend --test csi_node_unstage_retry --test csi_node_health -- --test-threads=1
	# The short fault campaign: 50 trials over every fault kind, then the
	# replayed findings and the lease scenarios (docs/faults.md).
	FAULT_TRIALS=50 FAULT_PROFILE=short cargo test -p roam-csi --test fault_campaign -- --nocapture --test-threads=1

# A failed cluster tier stops what it started (the nodes' logs are kept in
# $(ROAM_CLUSTER_DIR)/logs/), so that the next run starts clean;
# ROAM_KEEP_CLUSTER=1 leaves it up to look at.
ROAM_KEEP_CLUSTER ?=
on_failure_stop = rc=$$?; if [ $$rc -ne 0 ]; then \
		if [ -n "$(ROAM_KEEP_CLUSTER)" ]; then echo "left the cluster up (ROAM_KEEP_CLUSTER); make down stops it"; \
		else ROAM_DOWN_KEEP_LOGS=1 bash e2e/cluster/down.sh; fi; fi; exit $$rc

# Tier 3: a real control plane (etcd, kube-apiserver, controller-manager,
# scheduler), the operator and storage systems as processes.
test-control-plane:
	bash e2e/cluster/control-plane.sh start && \
	cargo test -p roam-e2e --lib --test control_plane && \
	cargo test -p roam-crds --test api_validation && \
	cargo test -p roam-operator --tests -- --test-threads=2 && \
	cargo test -p roam-csi --test csi_node_validation --test csi_login --test csi_stage_across_dcs --test storage_directory -- --test-threads=1 && \
	cargo build -p roam-operator -p roam-csi --bins && \
	cargo test -p kubectl-roam --test control_plane -- --test-threads=2 && \
	bash charts/roam/ci/test-chart.sh; \
	$(on_failure_stop)

# Tier 5: real kubelets and containerd; Roam installed with its chart as
# pods, the examples applied until Ready, then the end-to-end suite: pods
# mounting Roam PVCs, moved between data centers.
# datacenter_loss runs last: it stops a data center's node (and starts it again).
test-cluster: build
	bash e2e/cluster/up.sh && \
	cargo test -p roam-e2e --test nodes && \
	bash e2e/cluster/install-roam.sh && \
	bash charts/roam/ci/test-monitoring.sh && \
	KUBECONFIG=$(ROAM_CLUSTER_DIR)/kubeconfig $(MAKE) e2e && \
	KUBECONFIG=$(ROAM_CLUSTER_DIR)/kubeconfig cargo test -p roam-e2e --test datacenter_loss -- --nocapture; \
	$(on_failure_stop)
	bash e2e/cluster/down.sh

test: tools test-unit test-fuzz test-dataplane test-control-plane sanity test-cluster
	@echo "make test: all tiers passed"

# The end-to-end suite against whatever cluster KUBECONFIG points at (the
# local one by default), with Roam installed.
e2e:
	KUBECONFIG=$${KUBECONFIG:-$(ROAM_CLUSTER_DIR)/kubeconfig} cargo test -p roam-e2e --test roam -- --test-threads=1

# The kind path (e2e/kind, docs/cluster.md): kind's podman provider, a node
# image built from the pinned tools (no registry, no Docker engine), local
# images of the pinned CSI sidecars. The kubeconfig is
# $(ROAM_CLUSTER_DIR)/kind.kubeconfig. Machines with Docker and a registry
# use e2e/kind/run.sh directly.
kind-up:
	bash e2e/kind/up.sh

kind-down:
	bash e2e/kind/down.sh

# The end-to-end suite on kind; the cluster is deleted whatever the result.
test-kind:
	bash e2e/kind/up.sh && KUBECONFIG=$(ROAM_CLUSTER_DIR)/kind.kubeconfig $(MAKE) e2e; \
		rc=$$?; bash e2e/kind/down.sh; exit $$rc

# Tier 4: the upstream csi-sanity against roam-csi, mount and block mode.
sanity: build
	bash e2e/sanity/run.sh

bench:
	bash e2e/tools/install.sh apt bench-apt
	bash bench/run.sh

# Every frontend and data-plane teardown test REPEAT times (default 50) in a
# row while busy loops load every core (LOAD, default one per core); stops at
# the first failure. Finds flaky teardowns before CI does.
repeat-teardown:
	bash e2e/tools/repeat-tests.sh roam-engine:frontend_teardown roam-engine:frontend_resize \
		roam-csi:dataplane_frontend roam-csi:csi_node_unstage_retry

# The seeded fault campaign, every fault kind (docs/faults.md).
# FAULT_TRIALS=N (default 50) from FAULT_FIRST_SEED (default 1);
# FAULT_SEED=S replays one trial; FAULT_KINDS=a,b only these kinds.
faults:
	cargo test -p roam-csi --test fault_campaign -- --nocapture --test-threads=1

# Fuzz targets (csi-driver/fuzz): corpus and regressions as tests, then each
# target under libFuzzer for FUZZ_SECONDS (default 20: about 60 s in all).
fuzz test-fuzz: tools
	bash csi-driver/fuzz/run.sh

# kubectl finds plugins on PATH by name: kubectl-roam becomes `kubectl roam`.
PLUGIN_DIR ?= $(HOME)/.local/bin
install-plugin:
	cargo build --release -p kubectl-roam
	install -D -m 0755 target/release/kubectl-roam $(PLUGIN_DIR)/kubectl-roam
	@echo "installed $(PLUGIN_DIR)/kubectl-roam; run: kubectl roam --help"

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
