"""The OpenAPI 3.0 description of the API, served at /api/openapi.json."""

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
_POOL_PARAMETER = {"name": "pool", "in": "path", "required": True, "schema": _STRING}

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
            "port": {"type": "integer", "nullable": True},
            "difficulty": _NUMBER,
            "vardiff": {**_object({"min": _NUMBER, "max": _NUMBER}), "nullable": True},
            "tls": {"type": "boolean"},
        }
    ),
    "Pool": _object(
        {
            "name": _STRING,
            "coin": _STRING,
            "symbol": _STRING,
            "algorithm": _STRING,
            "hashrate": _NUMBER,
            "miners": _INTEGER,
            "workers": _INTEGER,
            "blocks": _ref("Blocks"),
            "ports": {"type": "array", "items": _ref("Port")},
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
    "MinerPage": _object(
        {
            "total": _INTEGER,
            "page": _INTEGER,
            "per_page": _INTEGER,
            "items": {"type": "array", "items": _ref("Miner")},
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
        "/api/pools/{pool}/miners": {
            "get": {
                "summary": "A pool's miners (addresses), highest hashrate first",
                "parameters": [
                    _POOL_PARAMETER,
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "per_page",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                ],
                "responses": {
                    "200": _json("One page of miners", _ref("MinerPage")),
                    "400": _json("Bad page or per_page", _ref("Error")),
                    **_ERRORS,
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
