"""The site's HTML pages (everything outside /api and /metrics)."""

from __future__ import annotations

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource


class Pages:
    """The pages; every path without one gets an HTML 404."""

    app = Klein()

    def resource(self) -> IResource:
        return self.app.resource()

    @app.route("/", branch=True)
    def not_found(self, request: IRequest) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return b"<!doctype html><title>Not found</title><h1>Not found</h1>\n"
