#!/usr/bin/env bash
# Entry point of the teachfile image: secrets -> ORTHANC_JSON, then the official entry point.
#
# The official image builds /tmp/orthanc.json from /etc/orthanc/*.json and the environment
# (ORTHANC_JSON last) and refuses to start without RegisteredUsers; the admin password is a
# Docker secret, so docker/secrets_to_config.py reads it (and the PostgreSQL password) and this
# script hands the fragment over in ORTHANC_JSON. Nothing secret is written to the image or to
# compose.yaml. Do not set VERBOSE_STARTUP: the image then prints the generated configuration.
set -euo pipefail

fragment=$(python3 /opt/teachfile/docker/secrets_to_config.py)
export ORTHANC_JSON="$fragment"
unset fragment
exec /docker-entrypoint.sh "$@"
