#!/usr/bin/env bash
# Create the Docker secrets compose.yaml expects, once. Never overwrites: a new pseudonym key
# would give every patient new pseudonyms and split every study already stored.
#
#   docker/init-secrets.sh            # into docker/secrets/
#   TEACHFILE_SECRETS_DIR=/path docker/init-secrets.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${TEACHFILE_SECRETS_DIR:-$here/secrets}
mkdir -p "$dir"
chmod 700 "$dir"

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
random_password() { head -c 18 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# create NAME MODE GENERATOR...: the file appears complete or not at all.
create() {
  local name=$1 mode=$2; shift 2
  if [ -s "$dir/$name" ]; then
    echo "init-secrets: $dir/$name exists, kept"
    return
  fi
  local tmp
  tmp=$(mktemp "$dir/.$name.XXXXXX")
  "$@" >"$tmp"
  printf '\n' >>"$tmp"
  chmod "$mode" "$tmp"
  mv "$tmp" "$dir/$name"
  echo "init-secrets: created $dir/$name"
}

create teachfile_key 600 random_hex 32
create teachfile_admin_password 600 random_password
# The postgres image reads its secret as the 'postgres' user after dropping root, and Compose
# bind-mounts secret files with their host mode: this one must be world-readable; the 0700
# directory keeps other host users out.
create postgres_password 644 random_password

echo "init-secrets: first login at http://localhost:8042/ as 'admin' with the password in"
echo "              $dir/teachfile_admin_password"
echo "init-secrets: back up $dir/teachfile_key: without it no pseudonym can be reproduced"
