#!/usr/bin/env bash
# Let the demo pool's block rewards mature: mine N blocks (default 100,
# Litecoin's coinbase maturity) on the demo's regtest node, while
# scripts/demo.sh runs. They pay the peer node's wallet "outside", never the
# pool's address, so the pool's wallet holds only the pool's own rewards.
# Afterwards every block the pool found at least N blocks before the new tip
# is mature, and the pool's next payment run pays its miners.
#   scripts/mature.sh [N]
# Crossing regtest's MWEB activation block (432), which cannot be built
# without a peg-in, it makes one (1 coin from the wallet "outside").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-env.sh"

blocks="${1:-100}"
if ! [[ "$blocks" =~ ^[0-9]+$ ]] || [ "$blocks" -lt 1 ]; then
    echo "usage: $0 [N]   N: how many blocks to mine, a whole number of at least 1 (default 100)" >&2
    exit 2
fi
command -v litecoin-cli >/dev/null || { echo "litecoin-cli is missing: scripts/demo.sh installs it" >&2; exit 1; }
if ! cli getblockcount >/dev/null 2>&1 || ! peer_cli getblockcount >/dev/null 2>&1; then
    echo "the demo's regtest nodes do not answer (RPC 127.0.0.1:19443 and :19543): start scripts/demo.sh first" >&2
    exit 1
fi

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

wait_for_peer() {  # until the peer (and so its wallets) has the node's tip
    local best
    best="$(cli getbestblockhash)"
    for _ in $(seq 200); do
        [ "$(peer_cli getbestblockhash)" = "$best" ] && return 0
        sleep 0.1
    done
    echo "the peer node did not follow the node to $best" >&2
    exit 1
}

peg_in() {  # the first MWEB block's HogEx needs a peg-in to spend
    local wallet=(-rpcwallet="$DEMO_OUTSIDE_WALLET") txid hex
    wait_for_peer
    if ! txid="$(peer_cli "${wallet[@]}" sendtoaddress "$(peer_cli "${wallet[@]}" getnewaddress "" mweb)" 1 2>&1)"; then
        echo "the next block activates MWEB and needs a peg-in, which the peer's wallet" \
            "'$DEMO_OUTSIDE_WALLET' could not make: $txid" >&2
        exit 1
    fi
    # Handed to the node at once rather than waiting for the peer to relay it.
    hex="$(peer_cli "${wallet[@]}" gettransaction "$txid" | json_field hex)"
    if ! sent="$(cli sendrawtransaction "$hex" 2>&1)" && ! cli getmempoolentry "$txid" >/dev/null 2>&1; then
        echo "the node refused the peg-in $txid: $sent" >&2
        exit 1
    fi
    echo "height $(cli getblockcount): the next block activates MWEB; pegged 1 coin in ($txid)"
}

open_peer_wallet "$DEMO_OUTSIDE_WALLET"
address="$(peer_cli -rpcwallet="$DEMO_OUTSIDE_WALLET" getnewaddress)"
start="$(cli getblockcount)"
target=$((start + blocks))
pegged_at=
while height="$(cli getblockcount)" && [ "$height" -lt "$target" ]; do
    if ! error="$(cli generatetoaddress $((target - height)) "$address" 2>&1 >/dev/null)"; then
        # generatetoaddress keeps the blocks it made before one failed.
        height="$(cli getblockcount)"
        if [[ "$error" == *bad-txns-vin-empty* ]] && [ "$pegged_at" != "$height" ]; then
            peg_in
            pegged_at="$height"
        else
            echo "mining failed at height $height: $error" >&2
            exit 1
        fi
    fi
done
wait_for_peer

echo "mined $blocks blocks (heights $((start + 1))-$target) to $address," \
    "in the peer node's wallet '$DEMO_OUTSIDE_WALLET', not the pool's"
echo "blocks up to height $((target - 100)) are mature; the pool's next payment run pays their miners:"
echo "  redis-cli -p $DEMO_REDIS_PORT zrange litecoin-regtest:payments 0 -1"
