"""Ray Serve's equivalent of guest-examples/serve-hello, for the serve benchmark.

    python3 benches/ray/serve_hello.py &          # prints "ready" when it serves
    FERRAY_SERVE_BENCH_URL=http://127.0.0.1:8000/hello cargo bench -p ferray-benches --bench serve

One replica per CPU, max_ongoing_requests 64, as the ferray side; needs
`pip install "ray[serve]==2.60.0"`.
"""

import os
import time

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import PlainTextResponse

CPUS = os.cpu_count() or 2


@serve.deployment(
    num_replicas=CPUS,
    max_ongoing_requests=64,
    ray_actor_options={"num_cpus": 1},
)
class Hello:
    async def __call__(self, request: Request) -> PlainTextResponse:
        name = request.query_params.get("name", "world")
        return PlainTextResponse(f"Hello, {name}! (path {request.url.path})\n")


if __name__ == "__main__":
    # The proxy and the controller need CPUs of their own on top of the replicas'.
    ray.init(num_cpus=CPUS + 2, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(Hello.bind(), route_prefix="/hello")
    print("ready", flush=True)
    while True:
        time.sleep(3600)
