"""A stand-in model server for the gateway's tests: MLflow's two endpoints (``GET /ping``, ``POST
.../invocations``) on one or more ports, each port answering with its own replica name.

    python tests/gateway/fake_upstream.py --listen 41001:blue-1 --listen 41002:green-1

Behaviour is chosen by the replica URL the route names, so one process serves every case: the gateway posts to
``{replica_url}/invocations``, and the path before ``/invocations`` is read as pairs, e.g.
``http://127.0.0.1:41001/sleep/2.5/status/422/invocations``: ``sleep/<seconds>`` waits before answering,
``status/<code>`` answers with that status (an MLflow-style error body for 4xx/5xx). A body without
``Content-Type: application/json`` is refused with 415, as MLflow's server does. The answer echoes what the
gateway sent: ``{"predictions": [0], "replica": <name>, "received": <the JSON body>, "content_type": ...}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web


def make_app(name: str) -> web.Application:
    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="\n", content_type="application/json")

    async def invocations(request: web.Request) -> web.Response:
        parts = [p for p in request.match_info.get("opts", "").split("/") if p]
        options = dict(zip(parts[::2], parts[1::2], strict=False))
        body = await request.read()
        if request.headers.get("Content-Type") != "application/json":
            # As MLflow's scoring server: it refuses (or fails on) a body without a JSON Content-Type.
            return web.json_response({"error_code": "BAD_REQUEST",
                                      "message": f"unsupported Content-Type {request.headers.get('Content-Type')!r}"},
                                     status=415)
        if "sleep" in options:
            await asyncio.sleep(float(options["sleep"]))
        status = int(options.get("status", 200))
        if status >= 400:
            return web.json_response({"error_code": "BAD_REQUEST", "message": f"replica {name} says no"},
                                     status=status)
        try:
            received = json.loads(body)
        except ValueError:
            received = body.decode("utf-8", "replace")
        return web.json_response({"predictions": [0], "replica": name, "received": received,
                                  "content_type": request.headers.get("Content-Type")})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    app.router.add_post("/{opts:.*}/invocations", invocations)
    return app


async def main(listens: list[str]) -> None:
    runners = []
    for item in listens:
        port, _, name = item.partition(":")
        runner = web.AppRunner(make_app(name or port), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(port)).start()
        runners.append(runner)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", required=True, help="PORT:NAME")
    asyncio.run(main(parser.parse_args().listen))
