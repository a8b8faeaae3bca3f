#!/usr/bin/env bash
# Makes sure the two servers sluice needs are running on this machine:
# NATS with JetStream on 127.0.0.1:4222 and PostgreSQL on 127.0.0.1:5432.
# Starts whichever is down with the machine's own (Debian) installation and
# waits until it accepts connections. Safe to run any number of times.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    local name=$1 port=$2
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        sleep 0.1
    done
    echo "ensure-services: $name did not open 127.0.0.1:$port within 10s" >&2
    return 1
}

if ! port_open 4222; then
    echo "ensure-services: starting NATS (JetStream) on 127.0.0.1:4222"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for NATS 4222
fi

if ! port_open 5432; then
    echo "ensure-services: starting PostgreSQL on 127.0.0.1:5432"
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for PostgreSQL 5432
fi
