"""Performance benchmarks: run by hand (see bench_exporter), not collected by pytest."""
