#!/usr/bin/env python
"""The inference gateway's cost: a real MLflow scoring server called directly against the same server through
the gateway, the gateway's own ceiling against a trivial upstream, and a blue-green switch under load.

    python benchmarks/gateway.py [--duration 5] [--sampling-rate 1.0] [--quick]

Everything it uses is its own and is stopped at the end (also on Ctrl-C, SIGTERM or an error):

1. a redis-server on a free port (no persistence): the routing table and the prediction stream;
2. two real MLflow scoring servers (``mlflow models serve --env-manager local --workers 1``) of a small
   scikit-learn model with a column signature (amount: double, age: long; note: optional string), the same
   model as tests/gateway: "blue" (every direct/gateway comparison) and "green" (the blue-green switch);
3. a trivial upstream (uvloop + httptools, a fixed 20-byte answer, ~50 000 req/s on one core here): the
   gateway's own ceiling, where the model costs nothing;
4. ``manage.py gateway`` (one process), the routes published the control plane's way (HSET + PUBLISH), with
   the model's signature (so every request is checked) and ``--sampling-rate`` (default 1.0: every record
   carries inputs and outputs, the most work for the gateway).

Load comes from ``wrk`` (one thread; C, a few percent of a core) when it is installed, else from an aiohttp
client in a separate process. Each line is the median of ``--repeat`` measurements of ``--duration`` seconds,
direct and through-gateway alternated (a busy machine slows both alike), at concurrency 1, 8 and 32 with 1-row
and 100-row ``dataframe_split`` bodies, after a one-second warm-up.

Printed: requests/s, p50 and p99 latency (ms), gateway/direct ratios, the gateway's CPU time per request, and
each goal with PASS or MISS: at c=1 the gateway adds at most 0.5 ms to p50 and 1.5 ms to p99; at c=8 and 32 it
keeps at least 95% of direct throughput; one gateway process passes at least 5 000 req/s to a trivial upstream;
the blue-green switch fails no request. The machine has 2 cores, shared by the load generator, the gateway and
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


def median_result(results: list[Result]) -> Result:
    return Result(statistics.median(r.rps for r in results), statistics.median(r.p50 for r in results),
                  statistics.median(r.p99 for r in results), sum(r.failed for r in results))


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
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per figure, direct and gateway alternated; medians (default 3)")
    parser.add_argument("--sampling-rate", type=float, default=1.0, help="the routes' sampling rate (default 1)")
    parser.add_argument("--quick", action="store_true", help="2-second measurements, c=1 and 32 only")
    args = parser.parse_args()
    duration = 2.0 if args.quick else args.duration
    repeat = 1 if args.quick else args.repeat
    concurrencies = [1, 32] if args.quick else [1, 8, 32]

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
        say("starting redis-server, two MLflow scoring servers, a trivial upstream and the gateway ...")
        redis_server = RedisServer()
        procs.append(redis_server)
        model = MlflowModel(tmp)
        blue, green = MlflowReplica(model.path), MlflowReplica(model.path)
        procs += [blue, green]
        trivial_port = free_port()
        trivial = Proc("trivial", [sys.executable, __file__, "--serve-trivial", str(trivial_port)])
        procs.append(trivial)
        gateway = GatewayProcess(redis_server.url, MODELPLANE_LOG_LEVEL="WARNING")
        procs.append(gateway)
        blue.wait_ready()
        green.wait_ready()
        trivial_url = f"http://127.0.0.1:{trivial_port}"
        rc = redis_server.client()
        publish(rc, route_doc("bench", [variant("blue", [blue.url], signature=model.signature)],
                              sampling_rate=args.sampling_rate))
        publish(rc, route_doc("trivial", [variant("blue", [trivial_url])], sampling_rate=args.sampling_rate))
        for name in ("bench", "trivial"):
            wait_until(lambda name=name: gateway.metric("modelplane_gateway_routes") >= 2, 10, "routes applied")
        load = Load(tmp)
        say(f"load generator: {load.name}; gateway pid {gateway.popen.pid}; {duration:g} s per measurement, "
            f"{repeat} alternated direct/gateway measurements per line (medians)")
        say("")

        json_headers = {"Content-Type": "application/json"}

        def pair(direct_url, direct_headers, gateway_url, gateway_headers, body, concurrency):
            """Direct and through the gateway, alternated --repeat times; medians of each figure, and the
            gateway's CPU time per request it answered."""
            directs, throughs, cpu, answered = [], [], 0.0, 0
            for _ in range(repeat):
                directs.append(load.run(direct_url, body, direct_headers, concurrency, duration))
                cpu0 = cpu_seconds(gateway.popen.pid)
                throughs.append(load.run(gateway_url, body, gateway_headers, concurrency, duration))
                cpu += cpu_seconds(gateway.popen.pid) - cpu0
                answered += throughs[-1].rps * duration
            return median_result(directs), median_result(throughs), cpu / max(1, answered) * 1e6
        rows: list[tuple] = []
        header = (f"{'upstream':<10} {'rows':>4} {'conc':>4} | {'direct r/s':>10} {'gateway r/s':>11} {'ratio':>6} | "
                  f"{'p50 direct':>10} {'gateway':>8} {'added':>7} | {'p99 direct':>10} {'gateway':>8} "
                  f"{'added':>7} | {'gw CPU/req':>10} {'failed':>6}")
        say(header)
        say("-" * len(header))
        for n_rows in (1, 100):
            body = body_rows(n_rows)
            gateway_url = f"{gateway.url}/v1/deployments/bench/invocations"
            gw_headers = {**json_headers, "Authorization": f"Bearer {key_for('bench')}"}
            load.run(blue.url + "/invocations", body, json_headers, 8, 1)  # warm-up
            load.run(gateway_url, body, gw_headers, 8, 1)
            for concurrency in concurrencies:
                direct, through, cpu = pair(blue.url + "/invocations", json_headers, gateway_url, gw_headers,
                                            body, concurrency)
                rows.append(("mlflow", n_rows, concurrency, direct, through, cpu))
                say(f"{'mlflow':<10} {n_rows:>4} {concurrency:>4} | {direct.rps:>10.0f} {through.rps:>11.0f} "
                    f"{through.rps / direct.rps:>6.2f} | {direct.p50:>10.2f} {through.p50:>8.2f} "
                    f"{through.p50 - direct.p50:>+7.2f} | {direct.p99:>10.2f} {through.p99:>8.2f} "
                    f"{through.p99 - direct.p99:>+7.2f} | {cpu:>8.0f}us {direct.failed + through.failed:>6}")

        trivial_body = b'{"inputs": [[1.0, 2.0, 3.0]]}'
        trivial_gw = f"{gateway.url}/v1/deployments/trivial/invocations"
        trivial_headers = {**json_headers, "Authorization": f"Bearer {key_for('trivial')}"}
        load.run(trivial_gw, trivial_body, trivial_headers, 32, 1)
        ceiling = []
        for concurrency in (1, 32, 64):
            direct, through, cpu = pair(trivial_url + "/invocations", json_headers, trivial_gw, trivial_headers,
                                        trivial_body, concurrency)
            ceiling.append((concurrency, direct, through, cpu))
            say(f"{'trivial':<10} {1:>4} {concurrency:>4} | {direct.rps:>10.0f} {through.rps:>11.0f} "
                f"{through.rps / direct.rps:>6.2f} | {direct.p50:>10.2f} {through.p50:>8.2f} "
                f"{through.p50 - direct.p50:>+7.2f} | {direct.p99:>10.2f} {through.p99:>8.2f} "
                f"{through.p99 - direct.p99:>+7.2f} | {cpu:>8.0f}us {direct.failed + through.failed:>6}")

        # Blue-green: both variants ready; weight moves 100/0 -> 0/100 -> 100/0 in the middle of steady load.
        say("")
        switch_seconds = max(9.0, 3 * duration)
        bg = route_doc("bluegreen", [variant("blue", [blue.url], signature=model.signature, weight=100),
                                     variant("green", [green.url], signature=model.signature, weight=0)],
                       sampling_rate=args.sampling_rate)
        publish(rc, bg)
        wait_until(lambda: gateway.metric("modelplane_gateway_routes") >= 3, 10, "blue-green route applied")
        body = body_rows(1)
        bg_headers = {**json_headers, "Authorization": f"Bearer {key_for('bluegreen')}"}
        body_file = tmp / "bg.json"
        body_file.write_bytes(body)
        generator = subprocess.Popen([sys.executable, __file__, "--loadgen",
                                      f"{gateway.url}/v1/deployments/bluegreen/invocations", str(body_file),
                                      json.dumps(bg_headers), "8", str(switch_seconds)],
                                     stdout=subprocess.PIPE, text=True)
        time.sleep(switch_seconds / 3)
        publish(rc, {**bg, "generation": 2,
                     "variants": [variant("blue", [blue.url], signature=model.signature, weight=0),
                                  variant("green", [green.url], signature=model.signature, weight=100)]})
        switched_at = time.time()
        time.sleep(switch_seconds / 3)
        publish(rc, {**bg, "generation": 3,
                     "variants": [variant("blue", [blue.url], signature=model.signature, weight=100),
                                  variant("green", [green.url], signature=model.signature, weight=0)]})
        back_at = time.time()
        out, _ = generator.communicate(timeout=switch_seconds + 60)
        switch = json.loads(out.strip().splitlines()[-1])
        phases = {"before": {}, "switched": {}, "back": {}}
        for at, name in switch["variants"]:
            phase = "before" if at < switched_at else "switched" if at < back_at else "back"
            phases[phase][name] = phases[phase].get(name, 0) + 1
        switch_failed = sum(switch["failures"].values())
        say(f"blue-green switch under load (concurrency 8, {switch_seconds:g} s, MLflow both sides): "
            f"{switch['count']} requests, {switch_failed} failed {switch['failures'] or ''}")
        say(f"  answered by: before the switch {phases['before']}, after 100->0/0->100 {phases['switched']}, "
            f"after switching back {phases['back']}")

        # Goals.
        say("")
        say("goals (issue 5):")
        c1 = [r for r in rows if r[2] == 1]
        added_p50 = statistics.median(r[4].p50 - r[3].p50 for r in c1)
        added_p99 = statistics.median(r[4].p99 - r[3].p99 for r in c1)
        mark = lambda ok: "PASS" if ok else "MISS"
        say(f"  c=1 adds <= 0.5 ms p50: {mark(all(r[4].p50 - r[3].p50 <= 0.5 for r in c1))} "
            f"(added {', '.join(f'{r[4].p50 - r[3].p50:+.2f}' for r in c1)} ms for 1 and 100 rows; median "
            f"{added_p50:+.2f})")
        say(f"  c=1 adds <= 1.5 ms p99: {mark(all(r[4].p99 - r[3].p99 <= 1.5 for r in c1))} "
            f"(added {', '.join(f'{r[4].p99 - r[3].p99:+.2f}' for r in c1)} ms; median {added_p99:+.2f})")
        loaded = [r for r in rows if r[2] > 1]
        say(f"  c=8/32 keeps >= 95% of direct throughput: {mark(all(r[4].rps >= 0.95 * r[3].rps for r in loaded))} "
            f"({', '.join(f'{r[1]}r/c{r[2]} {r[4].rps / r[3].rps:.0%}' for r in loaded)})")
        best = max(c[2].rps for c in ceiling)
        say(f"  >= 5000 req/s to a trivial upstream from one gateway process: {mark(best >= 5000)} "
            f"({best:.0f} req/s; gateway CPU {ceiling[-1][3]:.0f} us/request)")
        say(f"  0 failed requests in the blue-green switch: {mark(switch_failed == 0)} ({switch_failed})")
        dropped = gateway.metric("modelplane_gateway_records_dropped_total")
        sent = gateway.metric("modelplane_gateway_records_sent_total")
        say(f"  prediction records written to Redis: {sent:.0f}, dropped {dropped:.0f}")
        say("")
        say(f"load average at the end: {load_average()} (2 cores shared by load generator, gateway and upstream)")
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-trivial":
        serve_trivial(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        loadgen(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit(main())
