"""Ray Data's side of `cargo bench -p ferray-benches --bench data`: on the
Parquet files that benchmark made, read -> map_batches (every numeric column
times two, on pyarrow batches, as the `data-ops` guest's `double`) -> write
Parquet, in rows/s; then a groupby of `key` with count, sum, mean, min and
max of `x`, in seconds. Prints `NAME VALUE UNIT` lines.

Needs Ray 2.60 with pyarrow (`pip install "ray[data]==2.60.0"`).
Usage: python data_bench.py INPUT_DIR OUTPUT_DIR ROWS
"""

import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.aggregate import Count, Max, Mean, Min, Sum


def double(batch: pa.Table) -> pa.Table:
    for i, field in enumerate(batch.schema):
        if pa.types.is_integer(field.type) or pa.types.is_floating(field.type):
            batch = batch.set_column(i, field.name, pc.multiply(batch.column(i), 2))
    return batch


def main():
    src, out, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Warm-up: start the workers before timing.
    ray.data.range(10).map_batches(lambda b: b).materialize()

    t = time.perf_counter()
    ray.data.read_parquet(src).map_batches(double, batch_format="pyarrow").write_parquet(out)
    secs = time.perf_counter() - t
    n = ray.data.read_parquet(out).count()
    assert n == rows, (n, rows)
    print(f"ray_read_map_write {rows / secs:.0f} rows_per_second ({secs:.2f} s)")

    t = time.perf_counter()
    groups = (
        ray.data.read_parquet(src)
        .groupby("key")
        .aggregate(Count(), Sum("x"), Mean("x"), Min("x"), Max("x"))
        .take_all()
    )
    secs = time.perf_counter() - t
    assert len(groups) == min(1000, rows), len(groups)
    print(f"ray_groupby_aggregate {secs:.2f} seconds ({len(groups)} groups)")
    ray.shutdown()


if __name__ == "__main__":
    main()
