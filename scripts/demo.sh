#!/usr/bin/env bash
# A complete local demo: Redis and a Litecoin regtest node pair on loopback,
# then the pool in the foreground with the shipped conf/. Ctrl-C stops it all.
#   scripts/demo.sh [DATA_FOLDER]     (default: ./var/demo)
# The ports are those of conf/: Redis 6380, litecoind RPC 19443 (P2P 19444,
# 19445; its peer uses 19543-19545), Stratum 3333, control 17117.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$NOMP_ROOT"

DATA="$(mkdir -p "${1:-$NOMP_ROOT/var/demo}" && cd "${1:-$NOMP_ROOT/var/demo}" && pwd)"
RPC=(-rpcport=19443 -rpcuser=nomp -rpcpassword=demo-regtest-password)
# The regtest-only key of the address conf/pools/litecoin.yaml pays to.
POOL_KEY=cP8TJdyPUAK4YrRTFDcJAhHHeigbvNc2zTX8QCBdWFEjXDRr5ZgM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 6380 19443 19444 19445 19543 19544 19545 3333 17117; do
    port_free "$port" || { echo "port $port is in use: stop what uses it, or change conf/ and this script" >&2; exit 1; }
done

pids=()
pool_pid=
cleanup() {
    trap - EXIT INT TERM
    say "stopping"
    # SIGTERM: a background job of a script has SIGINT ignored
    if [ -n "$pool_pid" ]; then kill -TERM "$pool_pid" 2>/dev/null || true; wait "$pool_pid" 2>/dev/null || true; fi
    litecoin-cli -regtest "${RPC[@]}" stop >/dev/null 2>&1 || true
    litecoin-cli -regtest -rpcport=19543 -rpcuser=nomp -rpcpassword=demo-regtest-password stop >/dev/null 2>&1 || true
    redis-cli -p 6380 shutdown nosave >/dev/null 2>&1 || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say "data in $DATA"
mkdir -p "$DATA/redis" "$DATA/miner" "$DATA/peer"
# Redis and the nodes run in sessions of their own, so that Ctrl-C reaches
# only this script and the pool: they are stopped in order below, the pool
# first, so its last shares are written to a Redis that is still there.
setsid redis-server --port 6380 --bind 127.0.0.1 --dir "$DATA/redis" --daemonize no --loglevel warning &
pids+=($!)
# Each node binds its P2P port and an explicit onion target: by default
# litecoind 0.21 binds its onion target at 127.0.0.1:19444 (even with
# -listenonion=0), and two nodes started together race for that port.
node_args=(-regtest -server -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -listen=1
           -dnsseed=0 -discover=0 -upnp=0 -listenonion=0 -fallbackfee=0.0002 -txindex -printtoconsole=0)
# The node tells the pool of each new block through its control port (the
# pool also polls every second, so a missed notification costs little).
setsid litecoind -datadir="$DATA/miner" "${node_args[@]}" "${RPC[@]}" -port=19444 -bind=127.0.0.1:19444 -bind=127.0.0.1:19445=onion \
    "-blocknotify=$VENV/bin/nomp-cli --control 127.0.0.1:17117 blocknotify litecoin %s" &
pids+=($!)
setsid litecoind -datadir="$DATA/peer" "${node_args[@]}" -rpcport=19543 -rpcuser=nomp -rpcpassword=demo-regtest-password \
    -port=19544 -bind=127.0.0.1:19544 -bind=127.0.0.1:19545=onion -disablewallet -connect=127.0.0.1:19444 &
pids+=($!)

cli() { litecoin-cli -regtest "${RPC[@]}" "$@"; }
say "waiting for litecoind"
for _ in $(seq 120); do cli getblockcount >/dev/null 2>&1 && break; sleep 0.5; done
cli getblockcount >/dev/null
cli loadwallet pool >/dev/null 2>&1 || cli createwallet pool >/dev/null 2>&1 || true
cli -rpcwallet=pool importprivkey "$POOL_KEY" pool false >/dev/null 2>&1 || true
# litecoind serves templates only with a peer and outside initial block
# download: a fresh or old chain needs one new block.
for _ in $(seq 120); do [ "$(cli getconnectioncount)" -ge 1 ] && break; sleep 0.5; done
if [ "$(cli getblockchaininfo | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["initialblockdownload"])')" = True ]; then
    cli -rpcwallet=pool generatetoaddress 1 "$(cli -rpcwallet=pool getnewaddress)" >/dev/null
fi

cat >&2 <<MSG

  Litecoin regtest pool at height $(cli getblockcount).
  Point a scrypt miner at:  stratum+tcp://127.0.0.1:3333
  user: a regtest address, optionally .worker, e.g. rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l.rig1
  From another terminal, the built-in test miner (every share is also a block on regtest):
    $VENV/bin/nomp-miner stratum+tcp://127.0.0.1:3333 -u rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l.rig1 -d 30
  Shares and blocks land in Redis:  redis-cli -p 6380 hgetall litecoin-regtest:stats
  Ctrl-C stops the pool, the nodes and Redis.

MSG
"$VENV/bin/twistd" -n --pidfile= nomp -c conf &
pool_pid=$!
wait "$pool_pid"
