"""The OpenAPI 3.0 description of the API, served at /api/openapi.json.

Amounts are integers in the pool's smallest unit (its Pool's ``unit`` and
``decimals``: satoshis, 8, for the Bitcoin family; wei, 18, for the
Ethereum family). Wei pass 2^53: a client should read them as big integers.
"""

from __future__ import annotations

from typing import Any

_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}


def _object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": sorted(properties), "properties": properties, **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {"404": _json("Unknown pool or path", _ref("Error"))}
_BAD_REQUEST = {"400": _json("A bad query parameter", _ref("Error"))}
_POOL_PARAMETER = {"name": "pool", "in": "path", "required": True, "schema": _STRING}
_PAGE_PARAMETERS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {
        "name": "per_page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _page(item: str) -> dict[str, Any]:
    return _object(
        {
            "total": _INTEGER,
            "page": _INTEGER,
            "per_page": _INTEGER,
            "items": {"type": "array", "items": _ref(item)},
        }
    )


def _pool_get(summary: str, response: dict[str, Any], *parameters: dict[str, Any]) -> dict[str, Any]:
    """GET of a path under one pool: its 200 and the 404 of an unknown pool (400 with query parameters)."""
    responses = {"200": response, **_ERRORS, **(_BAD_REQUEST if parameters else {})}
    return {"get": {"summary": summary, "parameters": [_POOL_PARAMETER, *parameters], "responses": responses}}


SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _STRING}),
    "Blocks": _object({"pending": _INTEGER, "confirmed": _INTEGER, "orphaned": _INTEGER}),
    "Stats": _object(
        {
            "time": _INTEGER,
            "global": _object({"workers": _INTEGER, "hashrate": _NUMBER}),
            "algos": {
                "type": "object",
                "additionalProperties": _object(
                    {"workers": _INTEGER, "hashrate": _NUMBER, "hashrateString": _STRING}
                ),
            },
            "pools": {
                "type": "object",
                "additionalProperties": _object(
                    {
                        "name": _STRING,
                        "symbol": _STRING,
                        "algorithm": _STRING,
                        "poolStats": {"type": "object", "additionalProperties": _STRING},
                        "blocks": _ref("Blocks"),
                        "workers": {
                            "type": "object",
                            "additionalProperties": _object(
                                {
                                    "shares": _NUMBER,
                                    "invalidshares": _NUMBER,
                                    "hashrate": _NUMBER,
                                    "hashrateString": _STRING,
                                }
                            ),
                        },
                        "hashrate": _NUMBER,
                        "workerCount": _INTEGER,
                        "hashrateString": _STRING,
                    }
                ),
            },
        }
    ),
    "HistoryEntry": _object(
        {
            "time": _INTEGER,
            "pools": {
                "type": "object",
                "additionalProperties": _object(
                    {"hashrate": _NUMBER, "workerCount": _INTEGER, "blocks": _ref("Blocks")}
                ),
            },
        }
    ),
    "Port": _object(
        {
            "port": {
                "type": "integer",
                "nullable": True,
                "description": "The number the port's listen names (tcp:, tcp6:, ssl:); null for a "
                "port on a socket systemd passes (systemd:, whose number is in its socket unit) "
                "and for one on a unix socket",
            },
            "difficulty": _NUMBER,
            "vardiff": {**_object({"min": _NUMBER, "max": _NUMBER}), "nullable": True},
            "tls": {"type": "boolean"},
            "protocol": {"type": "string", "enum": ["stratum", "getwork"]},
        }
    ),
    "Pool": _object(
        {
            "name": _STRING,
            "coin": _STRING,
            "symbol": _STRING,
            "algorithm": _STRING,
            "family": {"type": "string", "enum": ["bitcoin", "ethereum"]},
            "unit": {"type": "string", "enum": ["satoshi", "wei"], "description": "Of every amount"},
            "decimals": {"type": "integer", "description": "A coin is 10^decimals of the unit"},
            "hashrate": _NUMBER,
            "miners": _INTEGER,
            "workers": _INTEGER,
            "blocks": _ref("Blocks"),
            "ports": {"type": "array", "items": _ref("Port")},
            "network": _nullable(_object({"height": _INTEGER, "difficulty": _NUMBER, "hashrate": _NUMBER})),
            "lastBlock": _nullable(
                _object({"hash": _nullable(_STRING), "height": _INTEGER, "time": _NUMBER, "status": _STRING})
            ),
        }
    ),
    "Block": _object(
        {
            "hash": {**_nullable(_STRING), "description": "null until known (Ethereum: a candidate)"},
            "height": {**_INTEGER, "description": "Where it was found; an uncle's own height"},
            "txid": {**_STRING, "description": "The coinbase transaction; '-' if unknown or none"},
            "worker": {**_nullable(_STRING), "description": "null: not recorded (Ethereum)"},
            "miner": _nullable(_STRING),
            "time": _NUMBER,
            "reward": _nullable(_INTEGER),
            "status": {"type": "string", "enum": ["pending", "confirmed", "orphaned"]},
            "effort": _nullable(_NUMBER),
            "solo": {"type": "boolean"},
            "uncle": {"type": "boolean", "description": "An Ethereum uncle, its reward the uncle's"},
            "nephewHeight": {**_nullable(_INTEGER), "description": "An uncle's: the block including it"},
        }
    ),
    "Payment": _object(
        {
            "id": _STRING,
            "txid": _STRING,
            "time": _NUMBER,
            "total": _INTEGER,
            "fee": {**_nullable(_INTEGER), "description": "null: not recorded (Ethereum)"},
            "recipients": _INTEGER,
        }
    ),
    "Worker": _object(
        {
            "name": _STRING,
            "hashrate": _NUMBER,
            "shares": _NUMBER,
            "invalidShares": _NUMBER,
            "lastShare": _nullable(_NUMBER),
            "difficulty": _nullable(_NUMBER),
        }
    ),
    "MinerDetail": _object(
        {
            "address": _STRING,
            "hashrate": _NUMBER,
            "shares": _NUMBER,
            "invalidShares": _NUMBER,
            "workers": {"type": "array", "items": _ref("Worker")},
            "immature": _INTEGER,
            "balance": _INTEGER,
            "paid": _INTEGER,
            "payments": {
                "type": "array",
                "items": _object({"txid": _STRING, "time": _NUMBER, "amount": _INTEGER}),
            },
            "history": {
                "type": "array",
                "items": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
            },
        }
    ),
    "Network": _object(
        {
            "daemons": {
                "type": "array",
                "items": _object(
                    {
                        "name": _STRING,
                        "ok": {"type": "boolean"},
                        "height": _nullable(_INTEGER),
                        "difficulty": _nullable(_NUMBER),
                        "hashrate": _nullable(_NUMBER),
                        "error": _nullable(_STRING),
                    }
                ),
            }
        }
    ),
    "Miner": _object(
        {
            "address": _STRING,
            "hashrate": _NUMBER,
            "workers": _INTEGER,
            "shares": _NUMBER,
            "invalidShares": _NUMBER,
        }
    ),
    "MinerPage": _page("Miner"),
    "BlockPage": _page("Block"),
    "PaymentPage": _page("Payment"),
    "ProfitEstimate": _object(
        {
            "pool": _STRING,
            "symbol": _STRING,
            "price": {**_STRING, "description": "Per whole coin, in the price unit (exact)"},
            "reward": {**_INTEGER, "description": "The template's block reward in base units"},
            "height": _INTEGER,
            "target": {**_STRING, "description": "The network target, 64 hex digits"},
            "revenuePerHash": {**_STRING, "description": "Expected price units a hash earns (12 digits)"},
            "revenuePerGigahashDay": {**_STRING, "description": "The same for 1 GH/s over a day"},
        }
    ),
    "ProfitSwitch": _object(
        {
            "name": _STRING,
            "algorithm": _STRING,
            "current": _STRING,
            "since": {**_NUMBER, "description": "Unix seconds the current pool has been current"},
            "decision": _object(
                {
                    "action": {"type": "string", "enum": ["stay", "switch"]},
                    "from": _STRING,
                    "to": _nullable(_STRING),
                    "best": _nullable(_STRING),
                    "reason": _STRING,
                    "time": _NUMBER,
                }
            ),
            "outcome": _nullable({**_STRING, "description": "The switch's answer, or why it was refused"}),
            "ranking": {"type": "array", "items": _ref("ProfitEstimate")},
            "skipped": {
                "type": "array",
                "items": _object({"pool": _STRING, "symbol": _nullable(_STRING), "reason": _STRING}),
            },
            "switches": _object({"done": _INTEGER, "refused": _INTEGER, "failed": _INTEGER}),
        }
    ),
    "Switch": _object(
        {
            "name": _STRING,
            "algorithm": _STRING,
            "pools": {
                "type": "array",
                "items": _STRING,
                "description": "The switch's pools, its default first",
            },
            "current": {**_STRING, "description": "The pool its miners mine for now"},
            "miners": {
                **_INTEGER,
                "description": "Open connections on the switch's ports (with worker processes, "
                "summed over the workers as they answered at most 5 s ago)",
            },
            "switches": {**_INTEGER, "description": "Moves to another pool since the process started"},
            "last_reason": _nullable({**_STRING, "description": "Why the last move was made"}),
        }
    ),
    "Profit": _object(
        {
            "enabled": {"type": "boolean"},
            "unit": _nullable(_STRING),
            "source": _nullable({**_STRING, "description": "Where prices come from: http or file"}),
            "interval": _nullable(_NUMBER),
            "prices": _nullable(
                _object(
                    {"ok": {"type": "boolean"}, "error": _nullable(_STRING), "readAt": _nullable(_NUMBER)}
                )
            ),
            "switches": {"type": "array", "items": _ref("ProfitSwitch")},
        }
    ),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "nomp pool API", "version": "1"},
    "paths": {
        "/api/stats": {
            "get": {
                "summary": "Every pool's stats, in NOMP's shape",
                "responses": {"200": _json("The last collected stats", _ref("Stats"))},
            }
        },
        "/api/pool_stats": {
            "get": {
                "summary": "Stats history, oldest first",
                "responses": {"200": _json("History", {"type": "array", "items": _ref("HistoryEntry")})},
            }
        },
        "/api/pools": {
            "get": {
                "summary": "Every pool",
                "responses": {"200": _json("The pools", {"type": "array", "items": _ref("Pool")})},
            }
        },
        "/api/pools/{pool}": {
            "get": {
                "summary": "One pool",
                "parameters": [_POOL_PARAMETER],
                "responses": {"200": _json("The pool", _ref("Pool")), **_ERRORS},
            }
        },
        "/api/pools/{pool}/miners": _pool_get(
            "A pool's miners (addresses), highest hashrate first",
            _json("One page of miners", _ref("MinerPage")),
            *_PAGE_PARAMETERS,
        ),
        "/api/pools/{pool}/miners/{address}": {
            "get": {
                "summary": "One miner: workers, balances (the pool's unit), payments, hashrate history",
                "parameters": [
                    _POOL_PARAMETER,
                    {
                        "name": "address",
                        "in": "path",
                        "required": True,
                        "schema": _STRING,
                        "description": "Ethereum: any case (mixed case must be its EIP-55 checksum)",
                    },
                ],
                "responses": {
                    "200": _json("The miner", _ref("MinerDetail")),
                    "404": _json("Unknown pool or miner", _ref("Error")),
                },
            }
        },
        "/api/pools/{pool}/blocks": _pool_get(
            "A pool's blocks, newest first",
            _json("One page of blocks", _ref("BlockPage")),
            {
                "name": "status",
                "in": "query",
                "schema": {"type": "string", "enum": ["pending", "confirmed", "orphaned"]},
            },
            *_PAGE_PARAMETERS,
        ),
        "/api/pools/{pool}/payments": _pool_get(
            "A pool's payouts, newest first (amounts in the pool's unit)",
            _json("One page of payments", _ref("PaymentPage")),
            *_PAGE_PARAMETERS,
        ),
        "/api/pools/{pool}/network": _pool_get(
            "What each of the pool's daemons says of the network",
            _json("The daemons", _ref("Network")),
        ),
        "/api/switching": {
            "get": {
                "summary": "The switching ports' switches: each one's pools and the pool it is on",
                "responses": {
                    "200": _json(
                        "Every switch (none without a switching section)",
                        {"type": "array", "items": _ref("Switch")},
                    )
                },
            }
        },
        "/api/switching/profit": {
            "get": {
                "summary": "Profit switching: each switch's last ranking (best first) and decision",
                "responses": {"200": _json("Profit switching's state", _ref("Profit"))},
            }
        },
        "/api/live_stats": {
            "get": {
                "summary": "Server-sent events: the body of /api/stats after each collection",
                "responses": {
                    "200": {
                        "description": "An event stream",
                        "content": {"text/event-stream": {"schema": _STRING}},
                    },
                    "503": _json("Too many streams open", _ref("Error")),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3.0 document", {"type": "object"})},
            }
        },
    },
    "components": {"schemas": SCHEMAS},
}
