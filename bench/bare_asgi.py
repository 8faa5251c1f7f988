"""The bare ASGI ceiling of bench/serve.py: one constant JSON answer on the server's HTTP stack
(uvicorn on httptools and uvloop), with no framework, routing, middleware or model.

Run: python -m uvicorn bench.bare_asgi:app --http httptools --loop uvloop --lifespan off
        --log-level warning --port 8081
"""

BODY = b'{"live":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]


async def app(scope, receive, send) -> None:
    """Answer every HTTP request 200 BODY."""
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
