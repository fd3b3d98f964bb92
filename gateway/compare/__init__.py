"""`gateway compare`: one model on the three frameworks (JAX runtime, TF Serving, TorchServe) through the
gateway, measured in interleaved rounds, written as a table, `figures.json`, `report.md` and `chart.png`.

- `run`: the measurement on a running `LocalStack` (`compare`), and the restarts for start-to-ready;
- `load`: the gRPC clients (concurrency 1 latency, closed-loop throughput);
- `procfs`: CPU and RSS of a process tree from /proc;
- `stats`: percentiles, median and spread;
- `report`: the table and the files (matplotlib only there, imported when the chart is drawn);
- `command`: the CLI's entry: start a stack, compare, write.

The package imports no ML framework (the runtimes run in their own processes).
"""
