"""The review page: feedback trains only once accepted (deployment/server/review_store.py).

GET  /review[?page=N]              HTML: the pending records, flagged first, then the oldest,
                                   PAGE_SIZE to a page: each with its image, the prediction
                                   and its score, the proposed label, accept and reject
GET  /review/image/{request_id}    the stored upload (without its metadata, scrub.py)
POST /review/{request_id}          {"decision": "accept" | "reject"} -> {"record": ...}; 404
                                   unknown, 409 decided already, 415 not application/json

Who may review. With a token (--review-token, params `serve.review_token` or env
SERVE_REVIEW_TOKEN) every request must carry it, as `Authorization: Bearer TOKEN` or
`?token=TOKEN` (the page hands it on to its images and buttons); else 401. Without one, only a
server on a loopback --host answers, and only to loopback clients whose Host header names a
loopback address (a DNS-rebinding page cannot use it); else 403. POST takes only
application/json: a cross-site form cannot send that without a CORS preflight, which this
server never grants. The page may not be framed, cached or sent as a referrer.
"""

import hmac
import html
import ipaddress
import mimetypes
import os
import time
import urllib.parse
from pathlib import Path
from string import Template

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from deployment.server.errors import ApiError
from deployment.server.feedback_store import REQUEST_ID, FeedbackStore
from deployment.server.oip import parse_body
from deployment.server.review_store import DECISIONS, Conflict

PAGE = Path(__file__).parent / "static" / "review.html"
PAGE_SIZE = 50  # records a page: the page's memory and the database's sort are bounded by it
TOKEN_ENV = "SERVE_REVIEW_TOKEN"
PRIVATE = {  # uploads and the token: not cached, not framed (clickjacking), never a referrer
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _loopback(name: str) -> bool:
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The name in a Host header: "[::1]:8080" -> "::1", "127.0.0.1:8080" -> "127.0.0.1"."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def refusal(
    token: str | None, bound: str, client: str | None, host_header: str, given: str | None
) -> tuple[int, str] | None:
    """Why a review request is refused, as (status, message), or None when it may go on.

    Args:
        token: the review token, if one is set.
        bound: the address the server listens on (--host).
        client: the client's address; host_header: its Host header.
        given: the token the request carries (bearer or ?token=), if any.
    """
    if token:
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            return 401, "the review page needs its token: Authorization: Bearer or ?token="
        return None
    if not _loopback(bound):
        return 403, f"no review token is set, so /review answers only on 127.0.0.1, not {bound}"
    if not (client and _loopback(client) and _loopback(_hostname(host_header))):
        return 403, "without a review token /review answers only http://127.0.0.1 clients"
    return None


def _given_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else request.query_params.get("token")


def _guard(request: Request, state) -> FeedbackStore:
    """The feedback store, once the request may review (see the module doc)."""
    token = state.config.review_token or os.environ.get(TOKEN_ENV)
    client = request.client.host if request.client else None
    host_header = request.headers.get("host", "")
    if why := refusal(token, state.config.host, client, host_header, _given_token(request)):
        raise ApiError(*why)
    if state.store is None:
        raise ApiError(503, "the feedback store is not open yet")
    return state.store


def _request_id(request_id: str) -> str:
    if not REQUEST_ID.fullmatch(request_id):
        raise ApiError(400, "request_id must be the 32 hex characters /predict returned")
    return request_id


def add_routes(app: FastAPI, state) -> None:
    """Add GET /review, GET /review/image/{request_id} and POST /review/{request_id} to app;
    state is deployment.server.lifecycle.State."""

    @app.get("/review")
    async def page(request: Request):
        store = _guard(request, state)
        number = request.query_params.get("page", "1")
        if not (number.isascii() and number.isdigit() and len(number) <= 7 and int(number)):
            shown = (
                number if len(number) <= 20 else f"{number[:20]}... ({len(number):,} characters)"
            )
            raise ApiError(400, f"page must be a whole number from 1 to 9999999, not {shown!r}")
        offset = (int(number) - 1) * PAGE_SIZE

        def read():
            return store.reviews.counts(), store.reviews.queue(PAGE_SIZE, offset)

        counts, rows = await run_in_threadpool(read)
        given = request.query_params.get("token")
        query = f"token={urllib.parse.quote(given, safe='')}" if given else ""
        text = render(counts, rows, int(number), query, store.reviews.flag_score)
        return Response(text, media_type="text/html", headers=PRIVATE)

    @app.get("/review/image/{request_id}")
    async def image(request: Request, request_id: str):
        store = _guard(request, state)
        name = await run_in_threadpool(store.reviews.image, _request_id(request_id))
        path = store.root / name if name else None
        if path is None or not path.is_file():
            raise ApiError(404, f"no stored image for request_id {request_id}")
        data = await run_in_threadpool(path.read_bytes)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(data, media_type=kind, headers=PRIVATE)

    @app.post("/review/{request_id}")
    async def decide(request: Request, request_id: str):
        store = _guard(request, state)
        request_id = _request_id(request_id)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, f"send application/json, not {kind!r}")
        body, _ = parse_body(await request.body(), None)
        if (
            set(body) != {"decision"}
            or not isinstance(body["decision"], str)
            or (body["decision"] not in DECISIONS)
        ):
            raise ApiError(400, 'send exactly {"decision": "accept"} or {"decision": "reject"}')
        try:
            record = await run_in_threadpool(store.reviews.decide, request_id, body["decision"])
        except Conflict as err:
            raise ApiError(409, str(err)) from None
        if record is None:
            raise ApiError(404, f"no feedback for request_id {request_id}")
        return state.reply({"record": record})


def render(
    counts: dict[str, int], rows: list[dict], number: int, query: str, flag_score: float
) -> str:
    """The review page (static/review.html) for one page of the queue; `query` is added to
    its links (the token, when the page was opened with one)."""
    pages = max(1, -(-counts["pending"] // PAGE_SIZE))
    summary = (
        f"{counts['pending']} pending ({counts['flagged']} flagged), "
        f"{counts['accepted']} accepted, {counts['rejected']} rejected; page {number} of {pages}"
    )
    suffix = f"?{query}" if query else ""
    nav = [
        f'<a href="/review?page={n}{"&amp;" + query if query else ""}">{label}</a>'
        for n, label in ((number - 1, "previous"), (number + 1, "next"))
        if 1 <= n <= pages
    ]
    cells = (
        "\n".join(_row(r, suffix, flag_score) for r in rows)
        or '<tr><td colspan="5">nothing to review</td></tr>'
    )
    template = Template(PAGE.read_text())
    return template.substitute(summary=html.escape(summary), rows=cells, nav=" ".join(nav))


def _row(record: dict, suffix: str, flag_score: float) -> str:
    rid = record["request_id"]  # 32 hex digits: safe in HTML and URLs
    e = html.escape
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record["predicted_at"] or 0))
    flag = f'<br><span class="flag">flagged: contradicts a score &ge; {flag_score:.0%}</span>'
    return (
        f'<tr id="r-{rid}" data-id="{rid}"{" class=flagged" if record["flagged"] else ""}>'
        f'<td><img src="/review/image/{rid}{e(suffix)}" alt="upload {rid}"></td>'
        f'<td><b class="predicted">{e(str(record["predicted_label"]))}</b> '
        f"({100 * (record['score'] or 0):.1f}%)<br>"
        f"<small>model {e(str(record['model_version']))}, {when}</small></td>"
        f'<td><b class="proposed">{e(str(record["true_label"]))}</b>'
        f"{flag if record['flagged'] else ''}</td>"
        '<td class="status">pending</td>'
        '<td><button data-decision="accept">Accept</button> '
        '<button data-decision="reject">Reject</button></td></tr>'
    )
