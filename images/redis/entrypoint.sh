#!/bin/sh
# Stand-in for the official redis image's entrypoint: ARGS starting with `-` are redis-server's;
# redis-server runs as the redis user, without protected mode (the compose network is the
# boundary, and the stack gives it a password in a config file), like the official image.
set -eu
case "${1:-}" in -*) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
  [ "$(id -u)" = 0 ] && exec setpriv --reuid=redis --regid=redis --init-groups -- "$@"
fi
exec "$@"
