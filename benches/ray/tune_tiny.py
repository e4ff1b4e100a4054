"""Ray's side of `cargo xtask bench-tune`: Ray Tune 2.60 running tiny
trials (a function trainable that returns one metric at once), as
`ferray tune --trainable evaluate` does on `guest-examples/tune-quadratic`.
Prints `tune_tiny_trials_per_second VALUE per_second`: trials over the time
of `Tuner.fit()` (Ray's start-up not counted, as ferray's is not).

Ray gets its fastest settings for tiny trials: `reuse_actors=True` and no
automatic per-trial result loggers (`TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`);
with its defaults it ran 0.19 trials/s here (20 trials), with these 4.4.

Needs Ray Tune 2.60 (`pip install "ray[tune]==2.60.0"`). Usage:
`python3 tune_tiny.py [NUM_SAMPLES]` (default 500).
"""

import os
import sys
import tempfile
import time

import ray
from ray import tune


def trainable(config):
    # The same arithmetic as tune-quadratic's `evaluate`: 20 steps of
    # gradient descent with momentum on (w - 3)^2.
    w, v = 0.0, 0.0
    for _ in range(20):
        v = config["momentum"] * v - config["lr"] * 2.0 * (w - 3.0)
        w += v
    return {"loss": (w - 3.0) ** 2 + (config["width"] - 32) ** 2 / 1000.0, "w": w}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    space = {
        "lr": tune.loguniform(0.001, 1.5),
        "momentum": tune.choice([0.0, 0.5]),
        "width": tune.randint(8, 64),
    }
    with tempfile.TemporaryDirectory() as d:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=n, metric="loss", mode="min", reuse_actors=True
            ),
            run_config=tune.RunConfig(storage_path=d, verbose=0),
        )
        start = time.perf_counter()
        grid = tuner.fit()
        secs = time.perf_counter() - start
    assert len(grid) == n, len(grid)
    print(f"tune_tiny_trials_per_second {n / secs:.1f} per_second", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    main()
