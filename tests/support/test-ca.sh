#!/usr/bin/env bash
# Creates a throwaway certificate authority and a server certificate for
# localhost / 127.0.0.1 signed by it, for tests that need real TLS with a
# trusted chain (Python, Node and browser clients).
#
# Usage: tests/support/test-ca.sh DIR
# Writes into DIR:
#   ca.pem        the CA certificate (what clients trust)
#   ca-key.pem    the CA key
#   cert.pem      server certificate chain (leaf, then CA)
#   key.pem       server private key
#   spki.txt      base64 SHA-256 of the server key's SubjectPublicKeyInfo
#                 (for Chromium's --ignore-certificate-errors-spki-list)
set -euo pipefail
DIR="${1:?usage: test-ca.sh DIR}"
mkdir -p "$DIR"
cd "$DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca-key.pem -out ca.pem -days 7 -subj "/CN=wsgate test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout key.pem -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
  -out leaf.pem -days 7 -extfile server.ext 2>/dev/null
cat leaf.pem ca.pem > cert.pem
openssl pkey -in key.pem -pubout -outform der 2>/dev/null | openssl dgst -sha256 -binary | base64 > spki.txt
rm -f server.csr server.ext ca.srl leaf.pem
