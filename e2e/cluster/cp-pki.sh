# shellcheck shell=bash disable=SC2154 # $pki, $service_ip come from control-plane.sh
# The control plane's certificates and kubeconfigs, made with openssl.
# Sourced by control-plane.sh, which sets $pki, $service_ip and die().
#
# Keys are EC P-256 (instant to generate) except the service account signing
# key, which is RSA 2048 like kubeadm's. Every certificate is X.509 v3 with
# explicit key usages, so strict verifiers (rustls/webpki in kube-rs) accept
# the chain. A cluster keeps its CA until `control-plane.sh clean`.

# new_key FILE: an EC P-256 private key (PKCS#8), readable by root only.
new_key() {
	(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

# new_ca PREFIX NAME: a self-signed CA certificate PREFIX.crt and key PREFIX.key.
new_ca() {
	new_key "$1.key"
	openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "$1.crt" 2>/dev/null || die "could not make CA $2"
}

# sign_cert PREFIX SUBJECT EXTENSIONS: writes PREFIX.key (if missing) and
# PREFIX.crt, signed by the cluster CA, valid for ten years.
sign_cert() {
	local prefix=$1 subject=$2 ext=$3 signer=$pki/ca
	[[ -f $prefix.key ]] || new_key "$prefix.key"
	openssl req -new -key "$prefix.key" -subj "$subject" -out "$prefix.csr" 2>/dev/null
	openssl x509 -req -in "$prefix.csr" -CA "$signer.crt" -CAkey "$signer.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
		-extfile <(printf '%s\n' "$ext") -out "$prefix.crt" 2>/dev/null ||
		die "could not sign a certificate for $subject"
	rm -f "$prefix.csr"
}

# client_subject USER GROUP: "/CN=user/O=group" (no O when GROUP is empty).
client_subject() {
	local subject="/CN=$1"
	[[ -n $2 ]] && subject+="/O=$2"
	echo "$subject"
}

client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

apiserver_sans() {
	local sans="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
	sans+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$service_ip"
	local ip extra=${ROAM_APISERVER_SANS:-}
	for ip in ${extra//,/ } ${advertise:-}; do
		[[ $ip == 127.0.0.1 || $ip == 0.0.0.0 || -z $ip ]] && continue
		[[ $sans == *"IP:$ip,"* || $sans == *"IP:$ip" ]] || sans+=",IP:$ip"
	done
	echo "$sans"
}

# ensure_pki: the CA, the API server's serving and kubelet-client certificates,
# the admin certificate and the service account key pair, each made once. The
# serving certificate is reissued when its SANs change.
ensure_pki() {
	mkdir -p "$pki"
	chmod 700 "$pki"
	if [[ ! -f $pki/ca.crt || ! -f $pki/ca.key ]]; then
		new_ca "$pki/ca" roam-e2e-ca
		# A new CA invalidates every certificate signed by the old one.
		rm -f "$pki/apiserver.crt" "$pki/admin.crt" "$pki/apiserver-kubelet-client.crt" \
			"$pki/controller-manager.crt" "$pki/scheduler.crt" "$pki/apiserver.sans"
	fi
	local sans
	sans=$(apiserver_sans)
	if [[ ! -f $pki/apiserver.crt || ! -f $pki/apiserver.sans || $(<"$pki/apiserver.sans") != "$sans" ]]; then
		sign_cert "$pki/apiserver" "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans"
		echo "$sans" >"$pki/apiserver.sans"
	fi
	[[ -f $pki/admin.crt ]] || sign_cert "$pki/admin" "$(client_subject admin system:masters)" "$client_ext"
	[[ -f $pki/apiserver-kubelet-client.crt ]] ||
		sign_cert "$pki/apiserver-kubelet-client" "$(client_subject kube-apiserver-kubelet-client system:masters)" "$client_ext"
	if [[ ! -f $pki/sa.key || ! -f $pki/sa.pub ]]; then
		(umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null)
		openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	fi
}

# write_kubeconfig USER URL CERT KEY OUT: a kubeconfig with the CA, the client
# certificate and key embedded, so it can be copied anywhere.
write_kubeconfig() {
	local user=$1 url=$2 cert=$3 key=$4 out=$5
	mkdir -p "$(dirname "$out")"
	(
		umask 077
		cat >"$out.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: roam
  cluster:
    server: $url
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: roam
  context:
    cluster: roam
    user: $user
current-context: roam
KC
		mv "$out.tmp" "$out"
	)
}

# write_client_kubeconfig USER GROUP URL OUT PREFIX: signs PREFIX.crt for USER in
# GROUP (reusing PREFIX.key, re-signing each time) and writes a kubeconfig for it to OUT.
write_client_kubeconfig() {
	local user=$1 group=$2 url=$3 out=$4 prefix=$5
	sign_cert "$prefix" "$(client_subject "$user" "$group")" "$client_ext"
	write_kubeconfig "$user" "$url" "$prefix.crt" "$prefix.key" "$out"
}
