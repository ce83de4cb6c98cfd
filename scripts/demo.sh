#!/usr/bin/env bash
# A complete local demo: Redis and a Litecoin regtest node pair on loopback,
# then the pool in the foreground with the shipped conf/ (payments on).
# Ctrl-C stops it all.
#   scripts/demo.sh [DATA_FOLDER]     (default: ./var/demo)
# The ports are those of conf/: Redis 6380, litecoind RPC 19443 (P2P 19444,
# 19445; its peer uses 19543-19545), Stratum 3333, web 8080, control 17117.
# scripts/mature.sh mines the blocks that let the pool's rewards mature.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
source "$NOMP_ROOT/scripts/demo-env.sh"
cd "$NOMP_ROOT"

DATA="$(mkdir -p "${1:-$NOMP_ROOT/var/demo}" && cd "${1:-$NOMP_ROOT/var/demo}" && pwd)"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$DEMO_REDIS_PORT" 19443 19444 19445 19543 19544 19545 3333 8080 17117; do
    port_free "$port" || { echo "port $port is in use: stop what uses it, or change conf/ and this script" >&2; exit 1; }
done

pids=()
pool_pid=
cleanup() {
    trap - EXIT INT TERM
    say "stopping"
    # SIGTERM: a background job of a script has SIGINT ignored
    if [ -n "$pool_pid" ]; then kill -TERM "$pool_pid" 2>/dev/null || true; wait "$pool_pid" 2>/dev/null || true; fi
    cli stop >/dev/null 2>&1 || true
    peer_cli stop >/dev/null 2>&1 || true
    redis-cli -p "$DEMO_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say "data in $DATA"
mkdir -p "$DATA/redis" "$DATA/miner" "$DATA/peer"
# Redis and the nodes run in sessions of their own, so that Ctrl-C reaches
# only this script and the pool: they are stopped in order below, the pool
# first, so its last shares are written to a Redis that is still there.
setsid redis-server --port "$DEMO_REDIS_PORT" --bind 127.0.0.1 --dir "$DATA/redis" --daemonize no --loglevel warning &
pids+=($!)
# Each node binds its P2P port and an explicit onion target: by default
# litecoind 0.21 binds its onion target at 127.0.0.1:19444 (even with
# -listenonion=0), and two nodes started together race for that port.
node_args=(-regtest -server -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -listen=1
           -dnsseed=0 -discover=0 -upnp=0 -listenonion=0 -fallbackfee=0.0002 -txindex -printtoconsole=0)
# The node tells the pool of each new block through its control port (the
# pool also polls every second, so a missed notification costs little).
setsid litecoind -datadir="$DATA/miner" "${node_args[@]}" "${DEMO_RPC[@]}" -port=19444 -bind=127.0.0.1:19444 -bind=127.0.0.1:19445=onion \
    "-blocknotify=$VENV/bin/nomp-notify $DEMO_CONTROL litecoin %s" &
pids+=($!)
# The peer has wallets of its own (the demo miner's, and one for blocks the
# pool did not find), so the node's only wallet is the pool's: the pool's
# payments talk to it without naming it.
setsid litecoind -datadir="$DATA/peer" "${node_args[@]}" "${DEMO_PEER_RPC[@]}" \
    -port=19544 -bind=127.0.0.1:19544 -bind=127.0.0.1:19545=onion -connect=127.0.0.1:19444 &
pids+=($!)

say "waiting for litecoind"
for _ in $(seq 120); do cli getblockcount >/dev/null 2>&1 && peer_cli getblockcount >/dev/null 2>&1 && break; sleep 0.5; done
cli getblockcount >/dev/null
peer_cli getblockcount >/dev/null
cli loadwallet pool >/dev/null 2>&1 || cli createwallet pool >/dev/null 2>&1 || true
cli -rpcwallet=pool importprivkey "$DEMO_POOL_KEY" pool false >/dev/null 2>&1 || true
open_peer_wallet miner
peer_cli -rpcwallet=miner importprivkey "$DEMO_MINER_KEY" miner false >/dev/null 2>&1 || true
open_peer_wallet "$DEMO_OUTSIDE_WALLET"
# litecoind serves templates only with a peer and outside initial block
# download: a fresh or old chain needs one new block. It goes to the peer's
# wallet, not the pool's, which then holds only the pool's own rewards.
for _ in $(seq 120); do [ "$(cli getconnectioncount)" -ge 1 ] && break; sleep 0.5; done
if [ "$(cli getblockchaininfo | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["initialblockdownload"])')" = True ]; then
    cli generatetoaddress 1 "$(peer_cli -rpcwallet="$DEMO_OUTSIDE_WALLET" getnewaddress)" >/dev/null
fi

cat >&2 <<MSG

  Litecoin regtest pool at height $(cli getblockcount), payments on.
    Stratum:  $DEMO_STRATUM_URL   (scrypt; user: a regtest address, optionally .worker)
    Web site: $DEMO_WEB_URL
    Control:  $DEMO_CONTROL   ($VENV/bin/nomp-cli pools)
  From another terminal, mine with the built-in test miner (every share is also a block on regtest):
    $VENV/bin/nomp-miner $DEMO_STRATUM_URL -u $DEMO_MINER_ADDRESS.rig1 -d 30
  Shares and blocks land in Redis:  redis-cli -p $DEMO_REDIS_PORT hgetall litecoin-regtest:stats
  Block rewards can be paid once 100 blocks deep. Mine those blocks (to a wallet that is not the pool's):
    scripts/mature.sh [N]     (N blocks, default 100)
  The next payment run (every 20 s) then pays the miners:
    redis-cli -p $DEMO_REDIS_PORT zrange litecoin-regtest:payments 0 -1
    litecoin-cli -regtest ${DEMO_PEER_RPC[*]} -rpcwallet=miner getbalances
  At height 431 the pool waits: MWEB's first block needs a peg-in, which scripts/mature.sh makes.
  Ctrl-C stops the pool, the nodes and Redis.

MSG
"$VENV/bin/twistd" -n --pidfile= nomp -c conf &
pool_pid=$!
wait "$pool_pid"
