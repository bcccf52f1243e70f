#!/bin/sh
# The nginx router's entrypoint: the upstream list is one `server <pod IP>:50051;` line per
# ready nnserve pod, read from the headless Service and rewritten (with a reload) when the
# pods change. One line per address, not one line naming the Service: nginx's consistent
# hash places a server on its ring by the name written in its `server` line, so the
# addresses of one name would all share one place and get every call.
set -eu
config=/etc/nnserve-router/nginx.conf
servers=/tmp/upstreams.conf

list_servers() {
    getent ahostsv4 "$NNSERVE_HEADLESS_SERVICE" | awk '{ print "server " $1 ":50051;" }' | sort -u
}

# No ready pod yet: nginx would refuse an empty upstream.
until list_servers > "$servers.new" && [ -s "$servers.new" ]; do
    sleep 2
done
mv "$servers.new" "$servers"
nginx -c "$config" &
nginx_pid=$!
# SIGTERM: nginx finishes the calls it is relaying (graceful QUIT), then exits.
trap 'kill -QUIT "$nginx_pid"; wait "$nginx_pid"; exit 0' TERM

while kill -0 "$nginx_pid" 2>/dev/null; do
    sleep 10 &
    wait $!
    if list_servers > "$servers.new" && [ -s "$servers.new" ] && ! cmp -s "$servers.new" "$servers"; then
        mv "$servers.new" "$servers"
        nginx -c "$config" -s reload
    fi
done
