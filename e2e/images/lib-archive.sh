# shellcheck shell=bash
# Writes container images as docker-archive tarballs, with no daemon and no
# registry: one layer made from a directory, a config, a manifest.json.
#
# Why by hand: the machines this project runs on have no container registry
# and no Docker engine. A docker-archive is what `ctr images import` and
# `kind load image-archive` both accept, and writing it with tar and
# sha256sum leaves no image store, mounts or daemons behind. The output is
# reproducible: files are sorted, owned by 0:0 and dated at the epoch, so the
# same inputs give the same image digest.
#
# Usage (sourced):
#   image_archive_from_dir <rootfs-dir> <image-ref> <out.tar> <entrypoint-json> [cmd-json]
#     e.g. image_archive_from_dir "$root" roam.local/pause:1.0 pause.tar '["/pause"]'

image_archive_from_dir() {
    local rootfs="$1" ref="$2" out="$3" entrypoint="$4" cmd="${5:-null}"
    if [[ ! -d "$rootfs" ]]; then
        echo "image_archive_from_dir: rootfs '$rootfs' is not a directory" >&2
        return 1
    fi
    if [[ "$ref" != *:* ]]; then
        echo "image_archive_from_dir: image ref '$ref' needs a tag (name:tag)" >&2
        return 1
    fi
    local work
    work="$(mktemp -d "${out}.work.XXXXXX")"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
        -C "$rootfs" -cf "$work/layer.tar" .
    local layer_sha
    layer_sha="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
    mkdir "$work/$layer_sha"
    mv "$work/layer.tar" "$work/$layer_sha/layer.tar"

    local arch
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64) arch=arm64 ;;
        *) arch="$(uname -m)" ;;
    esac
    printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],"Entrypoint":%s,"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"e2e/images/lib-archive.sh"}]}' \
        "$arch" "$entrypoint" "$cmd" "$layer_sha" >"$work/config.json"
    local config_sha
    config_sha="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
    mv "$work/config.json" "$work/$config_sha.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
        "$config_sha" "$ref" "$layer_sha" >"$work/manifest.json"

    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
        -C "$work" -cf "$out.tmp" manifest.json "$config_sha.json" "$layer_sha"
    mv "$out.tmp" "$out"
    rm -rf "$work"
}
