"""An HTTP client for the web API in tests: every JSON answer is checked
against the OpenAPI document the pool serves."""

from __future__ import annotations

import json
from typing import Any, cast

import jsonschema
import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from nomp.web.openapi import DOCUMENT
from nomp.web.service import WebService


async def serve(test: TestCase, web: WebService) -> str:
    """Start ``web`` (stopped at the test's end) and return its base URL once it listens."""
    web.startService()
    test.addCleanup(web.stopService)
    listening = web.endpoint._waitingForPort
    assert listening is not None  # set by startService
    port = await listening
    return f"http://127.0.0.1:{port.getHost().port}"


def openapi_schema(path: str, code: str) -> dict[str, Any]:
    """The JSON Schema of one response in the OpenAPI document (nullable made JSON Schema)."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items() if k != "nullable"}
            if node.get("nullable"):
                out["type"] = [node["type"], "null"]
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    schema = DOCUMENT["paths"][path]["get"]["responses"][code]["content"]["application/json"]["schema"]
    return cast(dict[str, Any], convert({**schema, "components": DOCUMENT["components"]}))


class ApiClient:
    """GETs JSON from ``base`` for ``test``, closing its connections at the test's end."""

    def __init__(self, test: TestCase, base: str) -> None:
        self.test = test
        self.base = base
        self.http = HTTPConnectionPool(reactor)
        test.addCleanup(self.http.closeCachedConnections)

    async def get(self, path: str, code: int = 200, schema_path: str | None = None) -> Any:
        """The JSON body of ``path``, which must answer ``code``; validated against the
        response schema of ``schema_path`` in the OpenAPI document when given."""
        response = await treq.get(self.base + path, pool=self.http)
        self.test.assertEqual(response.code, code, path)
        self.test.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        body = json.loads(await response.content())
        if schema_path is not None:
            jsonschema.validate(body, openapi_schema(schema_path, str(code)))
        return body
