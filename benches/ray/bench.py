"""Ray's side of `cargo xtask bench-ray`: the metrics of `ray microbenchmark`
that `ferray microbenchmark` also measures, with Ray's own remote functions,
actor and timing helper (`ray._private.ray_perf`, `ray_microbenchmark_helpers`),
and the three whole workloads of `ferray microbenchmark` (`workload_*`) in the
same shapes. Prints `NAME VALUE UNIT` lines with ferray's names.

Needs Ray 2.60 (`pip install "ray[default]==2.60.0" numpy`). Ray's own
`timeit` sleeps before each metric to let noisy neighbours settle; here that
sleep is `WARMUP_SLEEP` seconds instead of Ray's 10, and each metric is still
its warm-up second and four runs of two seconds.
"""

import contextlib
import os
import sys
import time

import numpy as np
import ray
from ray._private.ray_microbenchmark_helpers import timeit
from ray._private.ray_perf import Actor, small_value

WARMUP_SLEEP = float(os.environ.get("FERRAY_RAY_WARMUP_SLEEP", "2"))


@ray.remote
def seven():
    return 7


@ray.remote
def add_one(x):
    return x + 1


@ray.remote
def tree(depth, width):
    if depth == 0:
        return 1
    return 1 + sum(ray.get([tree.remote(depth - 1, width) for _ in range(width)]))


def emit(name, value, unit):
    if value >= 100:
        print(f"{name} {value:.0f} {unit}", flush=True)
    else:
        print(f"{name} {value:.3f} {unit}", flush=True)


def rate(name, fn, multiplier=1):
    # Ray's timeit prints a line of its own: to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        out = timeit(name, fn, multiplier, warmup_time_sec=WARMUP_SLEEP)
    if out and out[0]:
        emit(name.replace(" ", "_").replace(":", "_"), out[0][1], "per_second")


def workload(name, fn, warm, args, expect):
    fn(*warm)
    start = time.perf_counter()
    got = fn(*args)
    secs = time.perf_counter() - start
    if got != expect:
        sys.exit(f"{name}: got {got}, not {expect}")
    emit(name, secs, "seconds")


def main():
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    try:
        value = ray.put(0)
        arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)

        def tasks_sync():
            ray.get(small_value.remote())

        def tasks_async():
            ray.get([small_value.remote() for _ in range(1000)])

        actors = [Actor.remote() for _ in range(4)]

        def multi_task():
            ray.get([a.small_value_batch.remote(10000) for a in actors])

        a = Actor.remote()

        def actor_sync():
            ray.get(a.small_value.remote())

        def actor_async():
            ray.get([a.small_value.remote() for _ in range(1000)])

        def wait_1k():
            not_ready = [small_value.remote() for _ in range(1000)]
            fetch_local = True
            for _ in range(1000):
                _ready, not_ready = ray.wait(not_ready, fetch_local=fetch_local)
                fetch_local = False

        rate("single client tasks sync", tasks_sync)
        rate("single client tasks async", tasks_async, 1000)
        rate("multi client tasks async", multi_task, 10000 * 4)
        rate("1:1 actor calls sync", actor_sync)
        rate("1:1 actor calls async", actor_async, 1000)
        rate("single client wait 1k refs", wait_1k)
        rate("single client tasks and get batch", tasks_async)
        rate("single client put calls", lambda: ray.put(0))
        rate("single client get calls", lambda: ray.get(value))
        rate("single client put gigabytes", lambda: ray.put(arr), 8 * 0.1)

        def independent(n):
            return sum(ray.get([seven.remote() for _ in range(n)]))

        def chain(n):
            r = add_one.remote(0)
            for _ in range(n - 1):
                r = add_one.remote(r)
            return ray.get(r)

        def tree_of(depth, width):
            return ray.get(tree.remote(depth, width))

        workload("workload_independent_tasks_20000", independent, (1000,), (20000,), 140000)
        workload("workload_chain_2000", chain, (100,), (2000,), 2000)
        workload("workload_tree_1365", tree_of, (3, 4), (5, 4), 1365)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
