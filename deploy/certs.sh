#!/usr/bin/env bash
# A local certificate authority and the certificates omniforge's TLS and mutual TLS use:
#   deploy/certs.sh [DIR]     (default $OMNIFORGE_HOME/certs, else ~/.omniforge/certs)
# ca.pem / ca.key       the CA (keep ca.key private; it signs the others)
# server.pem / .key     the gateway's HTTPS and the services' gRPC ports (localhost, 127.0.0.1 and the
#                       compose/Kubernetes host names gateway, text, image, audio, fusion)
# client.pem / .key     the gateway's certificate towards the services (mutual TLS)
set -euo pipefail
dir="${1:-${OMNIFORGE_HOME:-$HOME/.omniforge}/certs}"
days="${CERT_DAYS:-825}"
mkdir -p "$dir" && cd "$dir"
umask 077
if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj "/CN=omniforge local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
issue() {   # name, subject, extended key usage, subjectAltName
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
    "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days "$days" \
    -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "omniforge" serverAuth \
  "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:gateway,DNS:text,DNS:image,DNS:audio,DNS:fusion,DNS:triton"
issue client "omniforge-gateway" clientAuth "subjectAltName=DNS:gateway"
chmod 644 ca.pem server.pem client.pem
echo "certificates in $dir: ca.pem, server.pem/.key, client.pem/.key"
