#!/usr/bin/env python
"""The inference gateway's cost: a real MLflow scoring server called directly against the same server through
the gateway, the gateway's own ceiling against a trivial upstream, and a blue-green switch under load.

    python benchmarks/gateway.py [--c1-seconds 9] [--c1-together] [--windows 15] [--sampling-rate 1.0]
                                 [--quick] [--servers native,uvicorn] [--clients native,aiohttp]

Everything it uses is its own and is stopped at the end (also on Ctrl-C, SIGTERM or an error):

1. a redis-server on a free port (no persistence): the routing table and the prediction stream;
2. two real MLflow scoring servers (``mlflow models serve --env-manager local --workers 1``) of a small
   scikit-learn model with a column signature (amount: double, age: long; note: optional string), the same
   model as tests/gateway: "blue" (every direct/gateway comparison) and "green" (the blue-green switch);
3. a trivial upstream (uvloop + httptools, a fixed 20-byte answer, ~50 000 req/s on one core here): the
   gateway's own ceiling, where the model costs nothing;
4. ``manage.py gateway``, one process per configuration compared: the first of ``--servers``
   (``MODELPLANE_GATEWAY_SERVER``) with each of ``--clients`` (``MODELPLANE_GATEWAY_UPSTREAM_CLIENT``), and each
   other server with the first client (default: native/native, native/aiohttp, uvicorn/native), the routes published the control plane's way (HSET + PUBLISH), with
   the model's signature (so every request is checked) and ``--sampling-rate`` (default 1.0: every record
   carries inputs and outputs, the most work for the gateway).

Load comes from ``wrk`` (one thread; C, a few percent of a core) when it is installed, else from an aiohttp
client in a separate process. Concurrency 1: one client sends to the model server directly and through one
gateway in turn, request by request, for ``--c1-seconds`` per gateway (percentiles over all its requests;
``--c1-together``: all gateways in one rotation).
Concurrency 8 and up: ``--windows`` one-second windows per target, direct and the gateways alternated, the order
rotating each window (throughput: the mean, with its standard error; latency: medians of the windows). 1-row and
100-row ``dataframe_split`` bodies, after a one-second warm-up.

Printed: requests/s, p50 and p99 latency (ms), gateway/direct ratios, the gateway's CPU time per request, and
each goal with PASS or MISS: at c=1 the gateway adds at most 0.5 ms to p50 and 1.5 ms to p99; at c=8 and 32 it
keeps at least 95% of direct throughput; one gateway process passes at least 5 000 req/s to a trivial upstream;
the blue-green switch fails no request (each per client), then the clients side by side (ceiling, CPU per
request, c=1 added latency). The machine has 2 cores, shared by the load generator, the gateway and
the upstream (and whatever else runs): the load average is printed at the start and end.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.test")

TRIVIAL_BODY = b'{"predictions": [0]}'


# --------------------------------------------------------------------------------------------------------
# Child modes: the trivial upstream and the aiohttp load generator run as separate processes of this script.


def serve_trivial(port: int) -> None:
    """A fixed answer to every request, as cheap as Python gets (uvloop + httptools, no framework)."""
    import httptools
    import uvloop

    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(TRIVIAL_BODY), TRIVIAL_BODY))

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url):
            self.url = url

        def on_message_complete(self):
            if getattr(self, "url", b"").startswith(b"/ping"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n\n")
            else:
                self.transport.write(response)

    async def main():
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    uvloop.run(main())


def loadgen(url: str, body_file: str, headers_json: str, concurrency: int, duration: float) -> None:
    """Closed-loop load: ``concurrency`` clients, each sending the next request when the last answered.
    Prints one JSON line: count, failures by kind, latency percentiles (ms), and which variant answered when
    (wall-clock time, to compare with the moments the parent published a route change)."""
    import aiohttp
    import uvloop

    body = Path(body_file).read_bytes()
    headers = json.loads(headers_json)

    async def main():
        latencies: list[float] = []
        failures: dict[str, int] = {}
        variants: list[tuple[float, str]] = []
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            deadline = time.monotonic() + duration
            t0 = time.monotonic()

            async def client():
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    try:
                        async with session.post(url, data=body, headers=headers) as response:
                            await response.read()
                            status = response.status
                            variant = response.headers.get("X-Modelplane-Variant", "")
                    except aiohttp.ClientError as exc:
                        failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                        continue
                    latencies.append((time.perf_counter() - started) * 1000)
                    if status != 200:
                        failures[str(status)] = failures.get(str(status), 0) + 1
                    elif variant:
                        variants.append((time.time(), variant))  # wall clock: compared with the parent's

            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.monotonic() - t0
        latencies.sort()
        pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else \
            (lambda q: float("nan"))
        print(json.dumps({"count": len(latencies), "seconds": elapsed, "failures": failures,
                          "p50": pick(0.50), "p99": pick(0.99), "variants": variants}))

    uvloop.run(main())


def paired(spec_file: str, body_file: str, seconds: float, pause_ms: float = 0.0) -> None:
    """Concurrency 1, the targets interleaved request by request: one blocking client sends the same body to
    each target in turn (the order rotating every round), over one keep-alive connection per target, until
    ``seconds`` have passed. A model server's own drift (its latency moves by more than a millisecond between
    runs of a few seconds on this machine) then falls on every target alike, which whole runs one after the
    other cannot promise. Prints one JSON line: per target, its latencies (ms) in order, and non-200 answers."""
    import socket
    from urllib.parse import urlsplit

    import httptools

    body = Path(body_file).read_bytes()
    targets = json.loads(Path(spec_file).read_text())

    class Reader:
        def __init__(self):
            self.done = False
            self.parser = httptools.HttpResponseParser(self)

        def on_message_complete(self):
            self.done = True

    conns = []
    for target in targets:
        url = urlsplit(target["url"])
        head = [f"POST {url.path} HTTP/1.1", f"Host: {url.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in target["headers"].items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        sock = socket.create_connection((url.hostname, url.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append((sock, request))

    def one(sock, request) -> tuple[float, int]:
        started = time.perf_counter()
        sock.sendall(request)
        reader = Reader()
        while not reader.done:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            reader.parser.feed_data(data)
        return (time.perf_counter() - started) * 1000, reader.parser.get_status_code()

    latencies = [[] for _ in targets]
    failed = [0 for _ in targets]
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        for k in range(len(targets)):
            i = (rounds + k) % len(targets)
            ms, status = one(*conns[i])
            latencies[i].append(ms)
            failed[i] += status != 200
            if pause_ms:
                time.sleep(pause_ms / 1000)
        rounds += 1
    for sock, _ in conns:
        sock.close()
    print(json.dumps({"latencies": latencies, "failed": failed}))


# --------------------------------------------------------------------------------------------------------
# Measuring


class Result:
    def __init__(self, rps: float, p50: float, p99: float, failed: int, extra: dict | None = None):
        self.rps = rps
        self.p50 = p50
        self.p99 = p99
        self.failed = failed
        self.extra = extra or {}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class Load:
    """wrk when installed, else the aiohttp load generator above in its own process."""

    def __init__(self, tmp: Path):
        self.wrk = shutil.which("wrk")
        self.tmp = tmp
        self.name = "wrk (1 thread)" if self.wrk else "aiohttp client in a separate process (wrk not installed)"

    def run(self, url: str, body: bytes, headers: dict, concurrency: int, seconds: float) -> Result:
        if self.wrk:
            return self._wrk(url, body, headers, concurrency, seconds)
        return self._aiohttp(url, body, headers, concurrency, seconds)

    def _wrk(self, url, body, headers, concurrency, seconds) -> Result:
        script = self.tmp / "post.lua"
        lines = ['wrk.method = "POST"', f"wrk.body = [==[{body.decode()}]==]"]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        script.write_text("\n".join(lines) + "\n")
        out = subprocess.run([self.wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
                              "-s", str(script), url], capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))
        p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))
        failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
        socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if socket_errors:
            failed += sum(int(n) for n in socket_errors.groups())
        return Result(rps, p50, p99, failed)

    def _aiohttp(self, url, body, headers, concurrency, seconds) -> Result:
        data = self.run_aiohttp(url, body, headers, concurrency, seconds)
        return Result(data["count"] / data["seconds"], data["p50"], data["p99"], sum(data["failures"].values()))

    def run_aiohttp(self, url, body, headers, concurrency, seconds) -> dict:
        body_file = self.tmp / "body.json"
        body_file.write_bytes(body)
        out = subprocess.run([sys.executable, __file__, "--loadgen", url, str(body_file), json.dumps(headers),
                              str(concurrency), str(seconds)], capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])


def ratio_se(direct: Result, through: Result) -> float:
    """The standard error of through.rps / direct.rps (each a mean over windows), to first order."""
    ratio = through.rps / direct.rps
    return ratio * ((through.extra["rps_sd"] ** 2 / through.extra["n"]) / through.rps ** 2
                    + (direct.extra["rps_sd"] ** 2 / direct.extra["n"]) / direct.rps ** 2) ** 0.5


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def body_rows(n: int) -> bytes:
    rows = [[round(50.0 + (i * 7.3) % 120, 2), 18 + (i * 13) % 70] for i in range(n)]
    return json.dumps({"dataframe_split": {"columns": ["amount", "age"], "data": rows}}).encode()


# --------------------------------------------------------------------------------------------------------
# The run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--c1-seconds", type=float, default=9.0,
                        help="seconds of the interleaved concurrency-1 run, per gateway (default 9)")
    parser.add_argument("--c1-together", action="store_true",
                        help="at concurrency 1, every gateway in one rotation with direct instead of one gateway at "
                             "a time (each then runs on caches the others evicted)")
    parser.add_argument("--windows", type=int, default=15,
                        help="one-second windows per target at concurrency 8 and up in front of MLflow, alternated "
                             "(default 15; a third as many for the trivial upstream)")
    parser.add_argument("--sampling-rate", type=float, default=1.0, help="the routes' sampling rate (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="4 s at c=1 per gateway, 4 windows per target, c=1 and 32 only")
    parser.add_argument("--servers", default="native,uvicorn",
                        help="the gateway's HTTP servers to compare (MODELPLANE_GATEWAY_SERVER), with the first "
                             "upstream client each (default native,uvicorn)")
    parser.add_argument("--clients", default="native,aiohttp",
                        help="the gateway's upstream clients to compare (MODELPLANE_GATEWAY_UPSTREAM_CLIENT), with "
                             "the first server each; one "
                             "gateway process each, measured side by side (default native,aiohttp)")
    args = parser.parse_args()
    # One gateway process per (server, upstream client) compared, labelled "server/client": the first server with
    # every client, and every other server with the first client. The first label is the default configuration.
    servers = [c.strip() for c in args.servers.split(",") if c.strip()]
    upstream_clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    settings_of = {f"{servers[0]}/{c}": (servers[0], c) for c in upstream_clients}
    settings_of.update({f"{s}/{upstream_clients[0]}": (s, upstream_clients[0]) for s in servers[1:]})
    clients = list(settings_of)
    concurrencies = [1, 32] if args.quick else [1, 8, 32]
    # Concurrency 1 is measured interleaved (paired()), direct and one gateway at a time, for this long each.
    c1_seconds = 4.0 if args.quick else args.c1_seconds
    # Concurrency 8 and up: this many one-second windows per target, alternated (group()). MLflow's throughput
    # moves by ~4 % (one standard deviation) from one one-second window to the next here: 15 windows each put
    # the standard error of a gateway/direct ratio near 1.5 points.
    windows = 4 if args.quick else max(2, args.windows)

    import django

    django.setup()
    from tests.gateway.support import (
        GatewayProcess,
        MlflowModel,
        MlflowReplica,
        Proc,
        RedisServer,
        free_port,
        key_for,
        publish,
        route_doc,
        variant,
        wait_until,
    )

    tmp = Path(tempfile.mkdtemp(prefix="mp-bench-gateway-"))
    procs: list = []

    def stop_all(*_):
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                proc.close()
        shutil.rmtree(tmp, ignore_errors=True)

    def on_signal(signum, frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    say = lambda message: print(message, flush=True)
    try:
        say(f"cores: {os.cpu_count()}, load average at start: {load_average()}")
        say(f"starting redis-server, two MLflow scoring servers, a trivial upstream and one gateway per upstream "
            f"(server/client: {', '.join(clients)}) ...")
        redis_server = RedisServer()
        procs.append(redis_server)
        model = MlflowModel(tmp)
        blue, green = MlflowReplica(model.path), MlflowReplica(model.path)
        procs += [blue, green]
        trivial_port = free_port()
        trivial = Proc("trivial", [sys.executable, __file__, "--serve-trivial", str(trivial_port)])
        procs.append(trivial)
        gateways = {}
        for client in clients:
            gateways[client] = GatewayProcess(redis_server.url, MODELPLANE_LOG_LEVEL="WARNING",
                                              MODELPLANE_GATEWAY_SERVER=settings_of[client][0],
                                              MODELPLANE_GATEWAY_UPSTREAM_CLIENT=settings_of[client][1])
            procs.append(gateways[client])
        blue.wait_ready()
        green.wait_ready()
        trivial_url = f"http://127.0.0.1:{trivial_port}"
        rc = redis_server.client()
        publish(rc, route_doc("bench", [variant("blue", [blue.url], signature=model.signature)],
                              sampling_rate=args.sampling_rate))
        publish(rc, route_doc("trivial", [variant("blue", [trivial_url])], sampling_rate=args.sampling_rate))
        for gateway in gateways.values():
            wait_until(lambda gateway=gateway: gateway.metric("modelplane_gateway_routes") >= 2, 10,
                       "routes applied")
        load = Load(tmp)
        say(f"load generator: {load.name}; gateways (one process each, server/upstream client: pid) "
            f"{', '.join(f'{c}: {g.popen.pid}' for c, g in gateways.items())}; "
            f"{windows} alternated one-second windows per target at concurrency 8 and up (throughput: mean; "
            f"latency: medians); concurrency 1: one client sending to direct and "
            f"{'every gateway' if args.c1_together else 'one gateway'} in turn, "
            f"request by request, for {c1_seconds:g} s per gateway (percentiles over all its requests)")
        say("")

        json_headers = {"Content-Type": "application/json"}

        def group(direct_url, direct_headers, gateway_path, gateway_headers, body, concurrency, windows=windows):
            """Direct and through each gateway in one-second windows, alternated (the order rotating each
            window), ``windows`` windows each: throughput is the mean over a target's windows (its requests over
            its seconds, with the windows' standard deviation, for the ratio's standard error), p50 and p99 the
            medians of its windows, and each gateway's CPU time per request it answered. Short windows, many of
            them: MLflow's own throughput drifts by 10-20 % from one few-second stretch to the next here, and
            every target then gets its share of each stretch. Concurrency 1: interleaved request by request
            instead (see paired())."""
            if concurrency == 1:
                return group_paired(direct_url, direct_headers, gateway_path, gateway_headers, body)
            targets = ["direct", *clients]
            results = {t: [] for t in targets}
            cpu = dict.fromkeys(clients, 0.0)
            for i in range(windows):
                for target in targets[i % len(targets):] + targets[:i % len(targets)]:
                    if target == "direct":
                        results[target].append(load.run(direct_url, body, direct_headers, concurrency, 1))
                        continue
                    gateway = gateways[target]
                    cpu0 = cpu_seconds(gateway.popen.pid)
                    results[target].append(load.run(gateway.url + gateway_path, body, gateway_headers,
                                                    concurrency, 1))
                    cpu[target] += cpu_seconds(gateway.popen.pid) - cpu0

            def summary(rs):
                rps = [r.rps for r in rs]
                return Result(statistics.fmean(rps), statistics.median(r.p50 for r in rs),
                              statistics.median(r.p99 for r in rs), sum(r.failed for r in rs),
                              {"rps_sd": statistics.stdev(rps) if len(rps) > 1 else 0.0, "n": len(rps)})

            direct = summary(results["direct"])
            return ({c: direct for c in clients}, {c: summary(results[c]) for c in clients},
                    {c: cpu[c] / max(1.0, sum(r.rps for r in results[c])) * 1e6 for c in clients})

        def group_paired(direct_url, direct_headers, gateway_path, gateway_headers, body, pause_ms=0.0):
            """Concurrency 1: for each gateway in turn, direct and that gateway interleaved request by request for
            c1_seconds (with ``pause_ms`` of nothing after each request, if given). One gateway per run, as in a
            deployment, where one gateway stands between client and model server: interleaving several gateways'
            requests would run each on caches the others had just evicted (measured: 1 gateway +0.18-0.20 ms,
            2 gateways +0.31-0.36 ms each, same code, same run). Each gateway gets its own direct baseline.
            With --c1-together: every gateway in one rotation with direct instead, for c1_seconds x gateways (how
            this script measured before 2026-12-06 06:30; shows the effect above)."""
            (tmp / "paired-body.json").write_bytes(body)
            rounds = [clients] if args.c1_together else [[c] for c in clients]
            directs, throughs, cpu = {}, {}, {}
            for group_clients in rounds:
                spec = [{"url": direct_url, "headers": direct_headers}]
                spec += [{"url": gateways[c].url + gateway_path, "headers": gateway_headers} for c in group_clients]
                (tmp / "paired.json").write_text(json.dumps(spec))
                cpu0 = {c: cpu_seconds(gateways[c].popen.pid) for c in group_clients}
                out = subprocess.run([sys.executable, __file__, "--paired", str(tmp / "paired.json"),
                                      str(tmp / "paired-body.json"), str(c1_seconds * len(group_clients)),
                                      str(pause_ms)], capture_output=True, text=True, check=True).stdout
                used = {c: cpu_seconds(gateways[c].popen.pid) - cpu0[c] for c in group_clients}
                data = json.loads(out.strip().splitlines()[-1])

                def result(i, data=data):
                    latencies = sorted(data["latencies"][i])
                    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
                    return Result(1000.0 / statistics.fmean(latencies), pick(0.50), pick(0.99), data["failed"][i],
                                  {"count": len(latencies)})

                for k, c in enumerate(group_clients):
                    directs[c], throughs[c] = result(0), result(k + 1)
                    cpu[c] = used[c] / max(1, throughs[c].extra["count"]) * 1e6
            return directs, throughs, cpu

        def line(upstream, n_rows, concurrency, client, direct, through, cpu):
            say(f"{upstream:<8} {n_rows:>4} {concurrency:>4} {client:<14} | {direct.rps:>10.0f} {through.rps:>11.0f} "
                f"{through.rps / direct.rps:>6.2f} | {direct.p50:>10.2f} {through.p50:>8.2f} "
                f"{through.p50 - direct.p50:>+7.2f} | {direct.p99:>10.2f} {through.p99:>8.2f} "
                f"{through.p99 - direct.p99:>+7.2f} | {cpu:>8.0f}us {direct.failed + through.failed:>6}")

        rows: list[tuple] = []  # (upstream, rows, concurrency, client, direct, through, cpu)
        header = (f"{'upstream':<8} {'rows':>4} {'conc':>4} {'gateway':<14} | {'direct r/s':>10} {'gateway r/s':>11} "
                  f"{'ratio':>6} | {'p50 direct':>10} {'gateway':>8} {'added':>7} | {'p99 direct':>10} "
                  f"{'gateway':>8} {'added':>7} | {'gw CPU/req':>10} {'failed':>6}")
        say(header)
        say("-" * len(header))
        for n_rows in (1, 100):
            body = body_rows(n_rows)
            gateway_path = "/v1/deployments/bench/invocations"
            gw_headers = {**json_headers, "Authorization": f"Bearer {key_for('bench')}"}
            load.run(blue.url + "/invocations", body, json_headers, 8, 1)  # warm-up
            for gateway in gateways.values():
                load.run(gateway.url + gateway_path, body, gw_headers, 8, 1)
            for concurrency in concurrencies:
                direct, through, cpu = group(blue.url + "/invocations", json_headers, gateway_path, gw_headers,
                                             body, concurrency)
                for client in clients:
                    rows.append(("mlflow", n_rows, concurrency, client, direct[client], through[client], cpu[client]))
                    line("mlflow", n_rows, concurrency, client, direct[client], through[client], cpu[client])

        trivial_body = b'{"inputs": [[1.0, 2.0, 3.0]]}'
        trivial_path = "/v1/deployments/trivial/invocations"
        trivial_headers = {**json_headers, "Authorization": f"Bearer {key_for('trivial')}"}
        for gateway in gateways.values():
            load.run(gateway.url + trivial_path, trivial_body, trivial_headers, 32, 1)
        for concurrency in (1, 32, 64):
            direct, through, cpu = group(trivial_url + "/invocations", json_headers, trivial_path, trivial_headers,
                                         trivial_body, concurrency, windows=max(2, windows // 3))
            for client in clients:
                rows.append(("trivial", 1, concurrency, client, direct[client], through[client], cpu[client]))
                line("trivial", 1, concurrency, client, direct[client], through[client], cpu[client])
        # The same c=1 path with the machine left idle for 5 ms after each request, as it is while a model server
        # works: what the gateway's latency becomes after an idle pause, with no model server in it.
        idle_direct, idle_through, _ = group_paired(trivial_url + "/invocations", json_headers, trivial_path,
                                                    trivial_headers, trivial_body, pause_ms=5.0)
        idle_added = {c: idle_through[c].p50 - idle_direct[c].p50 for c in clients}

        # Blue-green: both variants ready; weight moves 100/0 -> 0/100 -> 100/0 in the middle of steady load,
        # once through each gateway.
        say("")
        switch_seconds = 9.0
        switches = {}
        for generation_base, client in enumerate(clients):
            gateway = gateways[client]
            generation = 1 + 10 * generation_base
            bg = route_doc("bluegreen", [variant("blue", [blue.url], signature=model.signature, weight=100),
                                         variant("green", [green.url], signature=model.signature, weight=0)],
                           sampling_rate=args.sampling_rate, generation=generation)
            publish(rc, bg)
            wait_until(lambda gateway=gateway: gateway.metric("modelplane_gateway_routes") >= 3, 10,
                       "blue-green route applied")
            time.sleep(0.5)  # every gateway has this generation before the load starts
            body = body_rows(1)
            bg_headers = {**json_headers, "Authorization": f"Bearer {key_for('bluegreen')}"}
            body_file = tmp / "bg.json"
            body_file.write_bytes(body)
            generator = subprocess.Popen([sys.executable, __file__, "--loadgen",
                                          f"{gateway.url}/v1/deployments/bluegreen/invocations", str(body_file),
                                          json.dumps(bg_headers), "8", str(switch_seconds)],
                                         stdout=subprocess.PIPE, text=True)
            time.sleep(switch_seconds / 3)
            publish(rc, {**bg, "generation": generation + 1,
                         "variants": [variant("blue", [blue.url], signature=model.signature, weight=0),
                                      variant("green", [green.url], signature=model.signature, weight=100)]})
            switched_at = time.time()
            time.sleep(switch_seconds / 3)
            publish(rc, {**bg, "generation": generation + 2,
                         "variants": [variant("blue", [blue.url], signature=model.signature, weight=100),
                                      variant("green", [green.url], signature=model.signature, weight=0)]})
            back_at = time.time()
            out, _ = generator.communicate(timeout=switch_seconds + 60)
            switch = json.loads(out.strip().splitlines()[-1])
            phases = {"before": {}, "switched": {}, "back": {}}
            for at, name in switch["variants"]:
                phase = "before" if at < switched_at else "switched" if at < back_at else "back"
                phases[phase][name] = phases[phase].get(name, 0) + 1
            switches[client] = sum(switch["failures"].values())
            say(f"blue-green switch under load, gateway {client} (concurrency 8, {switch_seconds:g} s, MLflow both "
                f"sides): {switch['count']} requests, {switches[client]} failed {switch['failures'] or ''}")
            say(f"  answered by: before the switch {phases['before']}, after 100->0/0->100 {phases['switched']}, "
                f"after switching back {phases['back']}")

        # Goals, for each client.
        mark = lambda ok: "PASS" if ok else "MISS"
        summary = {}
        for client in clients:
            mine = [r for r in rows if r[3] == client]
            say("")
            say(f"goals (issue 5), gateway {client} (server/upstream client):")
            c1 = [r for r in mine if r[0] == "mlflow" and r[2] == 1]
            added_p50 = statistics.median(r[5].p50 - r[4].p50 for r in c1)
            added_p99 = statistics.median(r[5].p99 - r[4].p99 for r in c1)
            say(f"  c=1 adds <= 0.5 ms p50: {mark(all(r[5].p50 - r[4].p50 <= 0.5 for r in c1))} "
                f"(added {', '.join(f'{r[5].p50 - r[4].p50:+.2f}' for r in c1)} ms for 1 and 100 rows; median "
                f"{added_p50:+.2f})")
            say(f"  c=1 adds <= 1.5 ms p99: {mark(all(r[5].p99 - r[4].p99 <= 1.5 for r in c1))} "
                f"(added {', '.join(f'{r[5].p99 - r[4].p99:+.2f}' for r in c1)} ms; median {added_p99:+.2f})")
            loaded = [r for r in mine if r[0] == "mlflow" and r[2] > 1]
            say(f"  c=8/32 keeps >= 95% of direct throughput: "
                f"{mark(all(r[5].rps >= 0.95 * r[4].rps for r in loaded))} "
                f"({', '.join(f'{r[1]}r/c{r[2]} {r[5].rps / r[4].rps:.0%} +-{ratio_se(r[4], r[5]):.1%}' for r in loaded)}; "
                f"+- one standard error, from the windows' spread)")
            ceiling = [r for r in mine if r[0] == "trivial"]
            top = max(ceiling, key=lambda r: r[5].rps)
            best = top[5].rps
            trivial_c1 = next(r for r in ceiling if r[2] == 1)
            say(f"  >= 5000 req/s to a trivial upstream from one gateway process: {mark(best >= 5000)} "
                f"({best:.0f} req/s at c={top[2]}; gateway CPU {top[6]:.0f} us/request)")
            say(f"  c=1 to the trivial upstream adds {trivial_c1[5].p50 - trivial_c1[4].p50:+.2f} ms p50 "
                f"back to back (the gateway's own latency, no model in it), {idle_added[client]:+.2f} ms with 5 ms "
                f"idle after each request (the same path after an idle pause, as in front of a model server)")
            say(f"  0 failed requests in the blue-green switch: {mark(switches[client] == 0)} ({switches[client]})")
            summary[client] = {"best": best, "mlflow_c1_p50": added_p50,
                               "trivial_c1_p50": trivial_c1[5].p50 - trivial_c1[4].p50,
                               "cpu": top[6]}
        first = clients[0]
        for other in clients[1:]:
            n, a = summary[first], summary[other]
            say("")
            say(f"gateway {first} vs {other} (same run, same machine):")
            say(f"  trivial-upstream ceiling: {n['best']:.0f} vs {a['best']:.0f} req/s "
                f"(x{n['best'] / a['best']:.2f})")
            say(f"  gateway CPU per request at each one's ceiling: {n['cpu']:.0f} vs {a['cpu']:.0f} us "
                f"(x{n['cpu'] / a['cpu']:.2f})")
            say(f"  c=1 added p50, trivial upstream: {n['trivial_c1_p50']:+.2f} vs {a['trivial_c1_p50']:+.2f} ms; "
                f"MLflow (median of 1 and 100 rows): {n['mlflow_c1_p50']:+.2f} vs {a['mlflow_c1_p50']:+.2f} ms")
        sent = dropped = 0.0
        for gateway in gateways.values():
            dropped += gateway.metric("modelplane_gateway_records_dropped_total")
            sent += gateway.metric("modelplane_gateway_records_sent_total")
        say(f"  prediction records written to Redis: {sent:.0f}, dropped {dropped:.0f}")
        say("")
        say(f"load average at the end: {load_average()} (2 cores shared by load generator, gateways and upstream)")
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-trivial":
        serve_trivial(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--paired":
        paired(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
    elif len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        loadgen(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit(main())
