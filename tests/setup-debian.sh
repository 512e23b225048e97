#!/usr/bin/env bash
# Installs everything aigw needs to build, run and test on Debian 12 (as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential autoconf automake libtool pkg-config \
    libfcgi-dev libcurl4-openssl-dev libjson-c-dev libsqlite3-dev sqlite3 libjwt-dev libssl-dev \
    libpq-dev postgresql-15 python3-psycopg2 \
    libcmocka-dev clang-format \
    lighttpd apache2 libapache2-mod-fcgid nginx-light \
    python3 python3-pytest curl procps ca-certificates valgrind \
    chromium fonts-dejavu-core \
    >/dev/null
# The client tests run the official openai SDK on Node.js 20 or newer (this
# image ships one); Debian's own nodejs is the fallback.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# Debian starts the servers it installs; the gateway's own instances use other ports.
for svc in lighttpd apache2 nginx postgresql; do
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
echo "dependencies installed"
