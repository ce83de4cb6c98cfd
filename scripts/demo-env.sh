# The demo's fixed settings, sourced by demo.sh and mature.sh. They match
# conf/ (test/test_shipped_conf.py checks that they do).

# The node the pool talks to (conf/pools/litecoin.yaml daemons[0]; P2P 19444,
# 19445) and its peer (P2P 19544, 19545), which stands for the rest of the
# network: the wallets that are not the pool's live there.
DEMO_RPC=(-rpcport=19443 -rpcuser=nomp -rpcpassword=demo-regtest-password)
DEMO_PEER_RPC=(-rpcport=19543 -rpcuser=nomp -rpcpassword=demo-regtest-password)
DEMO_REDIS_PORT=6380
DEMO_STRATUM_URL=stratum+tcp://127.0.0.1:3333
DEMO_WEB_URL=http://127.0.0.1:8080
DEMO_CONTROL=127.0.0.1:17117

# The regtest-only key of the address conf/pools/litecoin.yaml pays to, in
# the node's wallet "pool".
DEMO_POOL_KEY=cP8TJdyPUAK4YrRTFDcJAhHHeigbvNc2zTX8QCBdWFEjXDRr5ZgM
# A regtest-only key for the demo's miner, in the peer's wallet "miner", so
# its payouts can be watched arriving.
DEMO_MINER_KEY=cW47DH35dtHri432zuxjgSUTp8kYAtuZySgFR3JJnncTqSuRFqFe
DEMO_MINER_ADDRESS=rltc1qugjam8ph5rz2fgqenufhxvux834q7ddjrfvd4a
# The peer's wallet that gets the blocks nobody's pool found (the first
# block, and those scripts/mature.sh mines).
DEMO_OUTSIDE_WALLET=outside

cli() { litecoin-cli -regtest "${DEMO_RPC[@]}" "$@"; }
peer_cli() { litecoin-cli -regtest "${DEMO_PEER_RPC[@]}" "$@"; }

# Load the peer's wallet NAME, creating it the first time.
open_peer_wallet() {
    peer_cli loadwallet "$1" >/dev/null 2>&1 || peer_cli createwallet "$1" >/dev/null 2>&1 || true
    peer_cli -rpcwallet="$1" getwalletinfo >/dev/null 2>&1 || {
        echo "the demo's peer node (RPC 127.0.0.1:19543) cannot open its wallet '$1';" \
            "a demo started before its peer had wallets needs a restart of scripts/demo.sh" >&2
        return 1
    }
}
