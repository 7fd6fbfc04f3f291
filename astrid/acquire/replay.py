"""Offline replay of archive answers, for tests and demonstrations without a network.

:class:`ReplayServer` replaces :meth:`requests.Session.request`, the one call
through which astroquery (MAST, VizieR, SkyView) and AstrID's downloader
reach the network. Every request is matched against recorded or hand-built
answers; anything unmatched fails as an unreachable host would, so nothing
leaks to the real network. Everything above that call — astroquery's request
building, paging and parsing, and AstrID's retries and validation — runs for
real.

Example
-------
>>> server = ReplayServer()                                  # doctest: +SKIP
>>> server.add("mast.stsci.edu/api/v0/invoke", json_body)    # doctest: +SKIP
>>> with server:                                             # doctest: +SKIP
...     table = Observations.query_criteria(...)
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable
from unittest import mock
from urllib.parse import parse_qs, unquote_plus

__all__ = ["ReplayServer", "Reply", "Request", "add_mast"]


@dataclass
class Request:
    """A request seen by the replay server."""

    method: str
    url: str
    params: dict | None = None
    data: Any = None
    headers: dict | None = None

    @property
    def text(self) -> str:
        """URL, query parameters and (URL-decoded) body together, for matching."""
        body = self.data
        if isinstance(body, bytes):
            body = body.decode(errors="replace")
        if isinstance(body, dict):
            body = json.dumps(body)
        parts = [
            self.url,
            json.dumps(self.params or {}, default=str),
            unquote_plus(str(body or "")),
        ]
        return "\n".join(parts)

    def form(self) -> dict:
        """The body parsed as an URL-encoded form (first value per key)."""
        body = self.data.decode() if isinstance(self.data, bytes) else (self.data or "")
        if isinstance(body, dict):
            return body
        return {k: v[0] for k, v in parse_qs(body).items()}


@dataclass
class Reply:
    """A hand-built HTTP answer.

    Attributes
    ----------
    body : bytes or str or dict or list
        Content; dicts and lists are sent as JSON.
    status : int
        HTTP status code.
    headers : dict
        Response headers (``Content-Length`` is added unless given).
    error : Exception, optional
        Raise this instead of answering (a dropped connection).
    cut_after : int, optional
        Stop the body after this many bytes by raising a connection error
        mid-stream (a transfer that breaks off).
    """

    body: Any = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    error: BaseException | None = None
    cut_after: int | None = None

    def content(self) -> bytes:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode()
        if isinstance(self.body, str):
            return self.body.encode()
        return bytes(self.body)


class _BreakingStream(io.RawIOBase):
    """A body that raises a connection error after ``cut`` bytes."""

    def __init__(self, data: bytes, cut: int):
        self._data = io.BytesIO(data[:cut])

    def read(self, size=-1):
        import requests

        chunk = self._data.read(size)
        if not chunk:
            raise requests.exceptions.ConnectionError("connection reset by peer (replayed)")
        return chunk


@dataclass
class _Route:
    match: Callable[[Request], bool]
    replies: list
    method: str | None
    repeat_last: bool


class ReplayServer:
    """Answer :meth:`requests.Session.request` from recorded replies.

    Routes are tried in the order they were added; the first whose pattern
    matches answers. A route given several replies answers with them in turn
    (and then repeats the last one), which is how tests script "fail twice,
    then succeed".

    Attributes
    ----------
    log : list of Request
        Every request received, in order.
    """

    def __init__(self):
        self._routes: list[_Route] = []
        self.log: list[Request] = []
        self._patch = None

    def add(
        self,
        pattern: str | Callable[[Request], bool],
        *replies: Reply | bytes | str | dict | list | Callable[[Request], Reply],
        method: str | None = None,
        repeat_last: bool = True,
        first: bool = False,
    ) -> "ReplayServer":
        """Answer requests whose URL+parameters+body contain ``pattern`` (or for which it returns True).

        Parameters
        ----------
        pattern : str or callable
            Substring of :attr:`Request.text`, or a predicate.
        *replies : Reply, bytes, str, dict, list or callable
            Answers in turn; a callable receives the :class:`Request` and
            returns a :class:`Reply`.
        method : str, optional
            Only match this HTTP method.
        repeat_last : bool, optional
            After the replies are used up, keep answering with the last one
            (default); else the route stops matching.
        first : bool, optional
            Try this route before those added earlier (to put a failure in
            front of a working answer).
        """
        if not replies:
            raise ValueError("add() needs at least one reply")
        match = pattern if callable(pattern) else (lambda req, p=pattern: p in req.text)
        route = _Route(match, list(replies), method.upper() if method else None, repeat_last)
        if first:
            self._routes.insert(0, route)
        else:
            self._routes.append(route)
        return self

    def count(self, pattern: str = "", method: str | None = None) -> int:
        """How many logged requests contain ``pattern`` (and use ``method``)."""
        return sum(
            1
            for r in self.log
            if pattern in r.text and (method is None or r.method == method.upper())
        )

    def _answer(
        self, method: str, url: str, params=None, data=None, headers=None, stream=False, **kwargs
    ):
        import requests

        request = Request(
            method.upper(), url, params=params, data=data, headers=dict(headers or {})
        )
        self.log.append(request)
        for route in self._routes:
            if route.method and route.method != request.method:
                continue
            if not route.replies or not route.match(request):
                continue
            reply = (
                route.replies[0]
                if len(route.replies) == 1 and route.repeat_last
                else route.replies.pop(0)
            )
            if callable(reply) and not isinstance(reply, Reply):
                reply = reply(request)
            if not isinstance(reply, Reply):
                reply = Reply(body=reply)
            if reply.error is not None:
                raise reply.error
            return _response(request, reply)
        raise requests.exceptions.ConnectionError(
            f"offline replay: no recorded answer for {request.method} {url} (the network is not used in replay)"
        )

    def install(self) -> "ReplayServer":
        """Patch :meth:`requests.Session.request` until :meth:`uninstall`."""
        import requests

        server = self

        def request(session, method, url, **kwargs):
            return server._answer(method, url, **kwargs)

        self._patch = mock.patch.object(requests.Session, "request", request)
        self._patch.start()
        return self

    def uninstall(self) -> None:
        """Undo :meth:`install`."""
        if self._patch is not None:
            self._patch.stop()
            self._patch = None

    def __enter__(self) -> "ReplayServer":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()


def _response(request: Request, reply: Reply):
    import requests
    from requests.structures import CaseInsensitiveDict

    body = reply.content()
    prepared = requests.Request(request.method, request.url, params=request.params).prepare()
    response = requests.Response()
    response.status_code = reply.status
    response.reason = {
        200: "OK",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(reply.status, "")
    headers = CaseInsensitiveDict(reply.headers)
    headers.setdefault("Content-Length", str(len(body)))
    response.headers = headers
    response.url = prepared.url
    response.request = prepared
    response.encoding = "utf-8"
    if reply.cut_after is not None:
        response.raw = _BreakingStream(body, reply.cut_after)
    else:
        response._content = body
        response._content_consumed = True
        response.raw = io.BytesIO(body)
    return response


# --------------------------------------------------------------------------- #
# a MAST Mashup emulator on the wire
# --------------------------------------------------------------------------- #

MAST_SERVER = "https://mast.stsci.edu"


def _mashup(rows: list[dict], fields: list[dict]) -> dict:
    return {
        "status": "COMPLETE",
        "msg": "",
        "fields": fields,
        "data": rows,
        "paging": {
            "page": 1,
            "pageSize": 50000,
            "pagesFiltered": 1,
            "rows": len(rows),
            "rowsFiltered": len(rows),
            "rowsTotal": len(rows),
        },
    }


def _passes(row: dict, entry: dict) -> bool:
    value = row.get(entry["paramName"])
    for allowed in entry["values"]:
        if isinstance(allowed, dict):
            if value is not None and allowed["min"] <= float(value) <= allowed["max"]:
                return True
        elif value is not None and str(value) == str(allowed):
            return True
    return False


def add_mast(
    server: ReplayServer,
    observations: dict,
    products: dict | None = None,
    *,
    columns_config: dict | None = None,
    products_config: dict | None = None,
) -> ReplayServer:
    """Answer MAST Portal (Mashup) requests from recorded tables, as the real service would.

    ``Mast.Caom.Filtered.Position`` queries are answered with the rows of
    ``observations`` inside the requested cone that pass the requested
    filters (discrete values and ``{"min", "max"}`` ranges);
    ``Mast.Caom.Products`` with the rows of ``products`` whose
    ``parent_obsid`` was asked for; ``columnsconfig`` with the given configs;
    and the reachability probe (``HEAD``) with 200.

    Parameters
    ----------
    server : ReplayServer
    observations, products : dict
        Mashup answers (``{"fields": [...], "data": [...]}``) holding every row.
    columns_config, products_config : dict, optional
        Column configurations of ``Mast.Caom.Cone`` and ``Mast.Caom.Products``.
    """
    import numpy as np

    def columnsconfig(request: Request) -> Reply:
        form = request.form()
        wanted = form.get("colConfigId", "")
        return Reply(
            body=(products_config if "Products" in wanted else columns_config) or {"_": {}}
        )

    def invoke(request: Request) -> Reply:
        payload = json.loads(request.form()["request"])
        service, params = payload["service"], payload["params"]
        if service in ("Mast.Caom.Filtered.Position", "Mast.Caom.Filtered"):
            rows = observations["data"]
            if "position" in params:
                ra, dec, radius = (float(v) for v in params["position"].split(","))
                ra0, dec0 = np.radians(ra), np.radians(dec)
                ra1 = np.radians([r["s_ra"] for r in rows])
                dec1 = np.radians([r["s_dec"] for r in rows])
                cos = np.sin(dec0) * np.sin(dec1) + np.cos(dec0) * np.cos(dec1) * np.cos(ra1 - ra0)
                inside = np.degrees(np.arccos(np.clip(cos, -1, 1))) <= radius
                rows = [r for r, keep in zip(rows, inside) if keep]
            for entry in params.get("filters", []):
                rows = [r for r in rows if _passes(r, entry)]
            return Reply(body=_mashup(rows, observations["fields"]))
        if service == "Mast.Caom.Products" and products is not None:
            wanted = set(str(params["obsid"]).split(","))
            rows = [
                r for r in products["data"] if str(r.get("parent_obsid", r.get("obsID"))) in wanted
            ]
            return Reply(body=_mashup(rows, products["fields"]))
        return Reply(body={"status": "ERROR", "msg": f"replay: service {service} not recorded"})

    server.add(
        f"{MAST_SERVER}/portal/Mashup/Mashup.asmx/columnsconfig", columnsconfig, method="POST"
    )
    server.add(f"{MAST_SERVER}/api/v0/invoke", invoke, method="POST")
    server.add(MAST_SERVER, Reply(body=b""), method="HEAD")
    return server
