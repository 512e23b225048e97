#!/bin/sh
# aigw-wrapper.sh - start aigw as a mod_fcgid worker, with its configuration.
#
# mod_fcgid gives the programs it spawns an almost empty environment; only
# FcgidInitialEnv (server configuration, see aigw.conf) can add to it. Where
# you cannot change the server configuration (shared hosting, see htaccess),
# this wrapper sets aigw's environment instead:
#
#     cp aigw-wrapper.sh ~/public_html/aigw.fcgi && chmod 755 ~/public_html/aigw.fcgi
#
# and change the values below. Use absolute paths: $HOME and $PATH are not set.
#
# mod_fcgid starts this script with the FastCGI listening socket as standard
# input; exec keeps that socket and replaces the shell with aigw, so the process
# mod_fcgid supervises (and signals) is aigw itself.

# The aigw program.
AIGW_BIN=/home/ACCOUNT/aigw/bin/aigw
# aigw's configuration; its "database": {"path": ...} names the database.
AIGW_CONFIG=/home/ACCOUNT/aigw/aigw.json
# Environment name for ${env} in secret references (optional).
AIGW_ENV=

export AIGW_CONFIG
if [ -n "$AIGW_ENV" ]; then
    export AIGW_ENV
fi
exec "$AIGW_BIN"
