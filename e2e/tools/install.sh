#!/usr/bin/env bash
# Installs the pinned upstream tools the tests and the local cluster use.
#
# Usage: e2e/tools/install.sh [--no-apt] [TOOL...]
#   TOOL is one of: apt kubernetes etcd csi-sanity external-provisioner
#   external-attacher external-resizer external-snapshotter helm toxiproxy
#   cargo-fuzz (default: all of them, in that order), or one of the kind
#   path's: kind-apt kind kubeadm coredns (built only when named: `make
#   kind-up` does), or bench-apt (the peers `make bench` compares against).
#
# Every version comes from e2e/tools/versions.env. Each Go tool is built from the
# Go module proxy into $ROAM_CACHE/<tool>-<version>/bin (ROAM_CACHE defaults to
# $HOME/.cache/roam), so a fresh clone on a machine that built it before reuses
# it, and then symlinked into <repo>/.tools/bin. A stamp file records what was
# built; a second run rebuilds only a tool whose version (or build recipe)
# changed. Go's own module and build caches stay in their default places, so a
# rebuild after a version bump recompiles only what changed.
#
# Upstream modules that carry replace directives (k8s.io/kubernetes maps its
# staging modules to ./staging/src/..., etcd's server maps its siblings to ../)
# cannot be built with `go install mod@version`. Each is built from a generated
# wrapper module that requires it, copies its non-local replace directives and
# its godebug setting, and maps each local replace to the published module of
# the same release (k8s.io/api v0.34.N for Kubernetes v1.34.N, etcd's siblings
# at the same version).
#
# cargo-fuzz is built with `cargo install` from crates.io into
# $ROAM_CACHE/cargo-fuzz-<version>/bin the same way (stamp, link), and needs a
# nightly toolchain, which it only checks for.
#
# Debian packages from DEBIAN_PACKAGES are installed with apt-get only when some
# are missing (`apt-get update` once first). --no-apt skips them.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=versions.env
source "$repo/e2e/tools/versions.env"
cache=${ROAM_CACHE:-$HOME/.cache/roam}
bin_dir=$repo/.tools/bin
# Bump when the way a tool is built changes, so cached builds are redone.
recipe=1

all_tools=(apt kubernetes etcd csi-sanity external-provisioner external-attacher external-resizer external-snapshotter helm toxiproxy cargo-fuzz)
kind_tools=(kind-apt kind kubeadm coredns)

say() { printf '%-30s %s\n' "$1" "$2"; }
die() {
	echo "install.sh: $*" >&2
	exit 1
}

# wrapper_module DIR NAME MODULE VERSION LOCAL_VERSION PKG...
# Writes DIR/go.mod: a module requiring MODULE@VERSION with its replace
# directives and godebug lines, and PKG... as tools; then tidies it. A replace
# that points at a local path becomes "same module at LOCAL_VERSION" (or is
# dropped when LOCAL_VERSION is empty or the path is a FORBIDDEN_DEPENDENCY
# marker).
wrapper_module() {
	local dir=$1 name=$2 mod=$3 ver=$4 local_ver=$5
	shift 5
	rm -rf "$dir"
	mkdir -p "$dir"
	local json modfile
	json=$(cd "$dir" && go mod download -json "$mod@$ver") || true
	modfile=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
	[[ -f $modfile ]] || die "$name: could not download $mod@$ver from the Go module proxy: $(sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
	local go_line
	go_line=$(awk '$1 == "go" { print $2; exit }' "$modfile")
	{
		printf 'module roam.dev/e2e-tools/%s\n\ngo %s\n\n' "$name" "$go_line"
		awk '/^godebug \(/ { blk = 1 } blk { print } blk && /^\)/ { blk = 0; next } /^godebug [^(]/ { print }' "$modfile"
	} >"$dir/go.mod"
	(
		cd "$dir"
		go mod edit -require="$mod@$ver"
		local line left right old old_ver new new_ver
		while IFS= read -r line; do
			line=${line%%//*}
			[[ $line == *"=>"* ]] || continue
			left=${line%%=>*}
			right=${line#*=>}
			read -r old old_ver <<<"$left"
			read -r new new_ver <<<"$right"
			[[ -n $old_ver ]] && old="$old@$old_ver"
			if [[ $new == .* ]]; then
				[[ -z $local_ver || $new == *FORBIDDEN* ]] && continue
				go mod edit -replace="$old=${old%@*}@$local_ver"
			else
				go mod edit -replace="$old=$new${new_ver:+@$new_ver}"
			fi
		done < <(awk '/^replace \(/ { blk = 1; next } blk && /^\)/ { blk = 0; next } blk { print } /^replace [^(]/ { sub(/^replace /, ""); print }' "$modfile")
		local pkg
		for pkg in "$@"; do go mod edit -tool="$pkg"; done
		go mod tidy
	)
}

# go_build DIR CGO LDFLAGS OUT PKG...: builds PKG... of the wrapper module in
# DIR into OUT (a directory ending in /, or a file for one package).
go_build() {
	local dir=$1 cgo=$2 ldflags=$3 out=$4
	shift 4
	(cd "$dir" && CGO_ENABLED=$cgo go build -trimpath -ldflags "-s -w $ldflags" -o "$out" "$@")
}

k8s_ldflags() {
	local v=$KUBERNETES_VERSION minor flags="" p
	minor=${v#v1.}
	minor=${minor%%.*}
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	echo "$flags"
}

k8s_wrapper() { # DIR NAME
	local staging=v0.${KUBERNETES_VERSION#v1.}
	wrapper_module "$1" "$2" k8s.io/kubernetes "$KUBERNETES_VERSION" "$staging" "${@:3}"
}

kubernetes_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
build_kubernetes() {
	local pkgs=("${kubernetes_cmds[@]/#/k8s.io/kubernetes/cmd/}")
	k8s_wrapper "$1" kubernetes "${pkgs[@]}"
	# One `go build` for all of them, so shared packages compile once. All are
	# static (CGO_ENABLED=0), kubelet too: upstream links kubelet with cgo, but
	# cgo changes the build of package net and so of every package above it,
	# which would compile nearly all of Kubernetes twice (measured: +9 min).
	go_build "$1" 0 "$(k8s_ldflags)" "$2/" "${pkgs[@]}"
}

# kubeadm has a cache folder of its own rather than joining kubernetes_cmds:
# adding it there would change the kubernetes stamp's binary list and rebuild
# all of them. The Go build cache still shares every package they have in
# common, so this build compiles little more than kubeadm's own packages.
build_kubeadm() {
	local pkg=k8s.io/kubernetes/cmd/kubeadm
	k8s_wrapper "$1" kubeadm "$pkg"
	go_build "$1" 0 "$(k8s_ldflags)" "$2/kubeadm" "$pkg"
}

build_kind() {
	local pkg=sigs.k8s.io/kind
	wrapper_module "$1" kind "$pkg" "$KIND_VERSION" "" "$pkg"
	go_build "$1" 0 "" "$2/kind" "$pkg"
}

# CoreDNS for the kind node image (kubeadm's DNS add-on); static like the rest.
build_coredns() {
	local mod=github.com/coredns/coredns
	wrapper_module "$1" coredns "$mod" "$COREDNS_VERSION" "" "$mod"
	go_build "$1" 0 "-X $mod/coremain.GitCommit=$COREDNS_VERSION" "$2/coredns" "$mod"
}

build_etcd() {
	wrapper_module "$1" etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" go.etcd.io/etcd/server/v3
	go_build "$1" 0 "" "$2/etcd" go.etcd.io/etcd/server/v3
}

build_csi_sanity() {
	local pkg=github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity
	wrapper_module "$1" csi-sanity github.com/kubernetes-csi/csi-test/v5 "$CSI_SANITY_VERSION" "" "$pkg"
	go_build "$1" 0 "-X main.VERSION=$CSI_SANITY_VERSION" "$2/csi-sanity" "$pkg"
}

build_external_provisioner() {
	local pkg=github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner
	wrapper_module "$1" external-provisioner github.com/kubernetes-csi/external-provisioner/v5 "$EXTERNAL_PROVISIONER_VERSION" "" "$pkg"
	go_build "$1" 0 "-X main.version=$EXTERNAL_PROVISIONER_VERSION" "$2/csi-provisioner" "$pkg"
}

build_external_attacher() {
	local pkg=github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher
	wrapper_module "$1" external-attacher github.com/kubernetes-csi/external-attacher/v4 "$EXTERNAL_ATTACHER_VERSION" "" "$pkg"
	go_build "$1" 0 "-X main.version=$EXTERNAL_ATTACHER_VERSION" "$2/csi-attacher" "$pkg"
}

build_external_resizer() {
	local pkg=github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer
	wrapper_module "$1" external-resizer github.com/kubernetes-csi/external-resizer/v2 "$EXTERNAL_RESIZER_VERSION" "" "$pkg"
	go_build "$1" 0 "-X main.version=$EXTERNAL_RESIZER_VERSION" "$2/csi-resizer" "$pkg"
}

# Both binaries of external-snapshotter, and the VolumeSnapshot CRDs of the
# same release from its client module (config/crd/ there), copied beside bin/
# as crd/ (linked as .tools/snapshot-crds). Only the snapshot.storage.k8s.io
# v1 ones: the group snapshot CRDs serve a feature gate that is off by default.
snapshotter_mod=github.com/kubernetes-csi/external-snapshotter
build_external_snapshotter() {
	local mod=$snapshotter_mod/v8 v=$EXTERNAL_SNAPSHOTTER_VERSION crd_dir json client_dir
	# The local replace of ./client becomes client/v8 at the same version.
	wrapper_module "$1" external-snapshotter "$mod" "$v" "$v" "$mod/cmd/csi-snapshotter" "$mod/cmd/snapshot-controller" || return
	go_build "$1" 0 "-X main.version=$v" "$2/" "$mod/cmd/csi-snapshotter" "$mod/cmd/snapshot-controller" || return
	json=$(cd "$1" && go mod download -json "$snapshotter_mod/client/v8@$v") || return
	client_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
	[[ -d $client_dir/config/crd ]] || die "no config/crd in $snapshotter_mod/client/v8@$v"
	crd_dir=$(dirname "$2")/crd
	rm -rf "$crd_dir"
	mkdir -p "$crd_dir"
	install -m 0644 "$client_dir"/config/crd/snapshot.storage.k8s.io_*.yaml "$crd_dir/"
}

# external-snapshotter's CRDs: linked into .tools; without them, build again.
snapshot_crds=(snapshot.storage.k8s.io_volumesnapshotclasses.yaml
	snapshot.storage.k8s.io_volumesnapshotcontents.yaml snapshot.storage.k8s.io_volumesnapshots.yaml)
install_external_snapshotter() {
	local dir=$cache/external-snapshotter-$EXTERNAL_SNAPSHOTTER_VERSION f
	for f in "${snapshot_crds[@]}"; do [[ -f $dir/crd/$f ]] || rm -f "$dir/stamp"; done
	install_go_tool external-snapshotter "$EXTERNAL_SNAPSHOTTER_VERSION" build_external_snapshotter csi-snapshotter snapshot-controller
	for f in "${snapshot_crds[@]}"; do [[ -f $dir/crd/$f ]] || die "external-snapshotter: $dir/crd/$f missing after the build"; done
	ln -sfn "$dir/crd" "$repo/.tools/snapshot-crds"
}

build_helm() {
	local pkg=helm.sh/helm/v3/cmd/helm minor
	minor=${KUBERNETES_VERSION#v1.}
	minor=${minor%%.*}
	wrapper_module "$1" helm helm.sh/helm/v3 "$HELM_VERSION" "" "$pkg"
	# Without these, helm reports Kubernetes v1.20 as Capabilities.KubeVersion.
	go_build "$1" 0 "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
		"$2/helm" "$pkg"
}

build_toxiproxy() {
	local mod=github.com/Shopify/toxiproxy/v2
	wrapper_module "$1" toxiproxy "$mod" "$TOXIPROXY_VERSION" "" "$mod/cmd/server" "$mod/cmd/cli"
	go_build "$1" 0 "-X $mod.Version=$TOXIPROXY_VERSION" "$2/toxiproxy-server" "$mod/cmd/server"
	go_build "$1" 0 "-X $mod.Version=$TOXIPROXY_VERSION" "$2/toxiproxy-cli" "$mod/cmd/cli"
}

# install_go_tool NAME VERSION BUILD_FN BIN...: builds into the cache unless the
# stamp says it is there already, then links BIN... into .tools/bin.
install_go_tool() {
	local name=$1 version=$2 build_fn=$3
	shift 3
	local dir=$cache/$name-$version stamp want b ok=1
	stamp=$dir/stamp
	want="$name $version recipe=$recipe"
	for b in "$@"; do [[ -x $dir/bin/$b ]] || ok=0; done
	if [[ $ok == 1 && -f $stamp && $(<"$stamp") == "$want" ]]; then
		say "$name $version" "cached"
	else
		command -v go >/dev/null || die "go is not installed (needed to build $name)"
		say "$name $version" "building (log: $dir/build.log)"
		local start=$SECONDS
		mkdir -p "$dir"
		rm -rf "${dir:?}/bin" "${dir:?}/bin.new" "$stamp"
		mkdir -p "$dir/bin.new"
		# A subshell outside any condition, so that `set -e` stops the build at
		# its first failing step and `die` ends only the build.
		local rc=0
		set +e
		("$build_fn" "$dir/src" "$dir/bin.new") >"$dir/build.log" 2>&1
		rc=$?
		set -e
		if ((rc != 0)); then
			tail -n 30 "$dir/build.log" >&2
			die "$name $version: build failed (full log: $dir/build.log)"
		fi
		mv "$dir/bin.new" "$dir/bin"
		echo "$want" >"$stamp"
		say "$name $version" "built in $((SECONDS - start))s"
	fi
	mkdir -p "$bin_dir"
	for b in "$@"; do ln -sfn "$dir/bin/$b" "$bin_dir/$b"; done
}

install_cargo_fuzz() {
	local v=$CARGO_FUZZ_VERSION dir stamp want start=$SECONDS
	dir=$cache/cargo-fuzz-$v
	stamp=$dir/stamp
	want="cargo-fuzz $v recipe=$recipe"
	if [[ -x $dir/bin/cargo-fuzz && -f $stamp && $(<"$stamp") == "$want" ]]; then
		say "cargo-fuzz $v" "cached"
	else
		say "cargo-fuzz $v" "building (log: $dir/build.log)"
		mkdir -p "$dir"
		rm -f "$stamp"
		cargo install --locked cargo-fuzz --version "$v" --root "$dir" --target-dir "$dir/build" \
			>"$dir/build.log" 2>&1 || {
			tail -n 30 "$dir/build.log" >&2
			die "cargo-fuzz $v: build failed (full log: $dir/build.log)"
		}
		rm -rf "$dir/build"
		echo "$want" >"$stamp"
		say "cargo-fuzz $v" "built in $((SECONDS - start))s"
	fi
	mkdir -p "$bin_dir"
	ln -sfn "$dir/bin/cargo-fuzz" "$bin_dir/cargo-fuzz"
	rustup run nightly rustc --version >/dev/null 2>&1 ||
		die "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly --profile minimal"
}

install_apt() { # [PACKAGES] (default: DEBIAN_PACKAGES)
	local missing=() p start=$SECONDS
	# shellcheck disable=SC2086 # the list is whitespace-separated on purpose
	for p in ${1:-$DEBIAN_PACKAGES}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		say "apt packages" "cached"
		return
	fi
	say "apt packages" "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	say "apt packages" "installed in $((SECONDS - start))s"
}

install_one() {
	case $1 in
	apt) install_apt ;;
	kind-apt) install_apt "$KIND_DEBIAN_PACKAGES" ;;
	bench-apt) install_apt "$BENCH_DEBIAN_PACKAGES" ;;
	kind) install_go_tool kind "$KIND_VERSION" build_kind kind ;;
	kubeadm) install_go_tool kubeadm "$KUBERNETES_VERSION" build_kubeadm kubeadm ;;
	coredns) install_go_tool coredns "$COREDNS_VERSION" build_coredns coredns ;;
	kubernetes) install_go_tool kubernetes "$KUBERNETES_VERSION" build_kubernetes "${kubernetes_cmds[@]}" ;;
	etcd) install_go_tool etcd "$ETCD_VERSION" build_etcd etcd ;;
	csi-sanity) install_go_tool csi-sanity "$CSI_SANITY_VERSION" build_csi_sanity csi-sanity ;;
	external-provisioner) install_go_tool external-provisioner "$EXTERNAL_PROVISIONER_VERSION" build_external_provisioner csi-provisioner ;;
	external-attacher) install_go_tool external-attacher "$EXTERNAL_ATTACHER_VERSION" build_external_attacher csi-attacher ;;
	external-resizer) install_go_tool external-resizer "$EXTERNAL_RESIZER_VERSION" build_external_resizer csi-resizer ;;
	external-snapshotter) install_external_snapshotter ;;
	helm) install_go_tool helm "$HELM_VERSION" build_helm helm ;;
	toxiproxy) install_go_tool toxiproxy "$TOXIPROXY_VERSION" build_toxiproxy toxiproxy-server toxiproxy-cli ;;
	cargo-fuzz) install_cargo_fuzz ;;
	*) die "unknown tool '$1' (known: ${all_tools[*]} ${kind_tools[*]} bench-apt)" ;;
	esac
}

main() {
	local tools=() no_apt=0 t
	for t in "$@"; do
		case $t in
		--no-apt) no_apt=1 ;;
		-h | --help)
			sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
			exit 0
			;;
		*) tools+=("$t") ;;
		esac
	done
	((${#tools[@]})) || tools=("${all_tools[@]}")
	mkdir -p "$cache"
	# Two installs at once (say, two test runs) would build into the same
	# directories: take turns.
	exec 9>"$cache/.install.lock"
	flock 9
	for t in "${tools[@]}"; do
		[[ ($t == apt || $t == kind-apt || $t == bench-apt) && $no_apt == 1 ]] && continue
		install_one "$t"
	done
	echo "tools are in $bin_dir"
}

main "$@"
