"""`make bench`: the platform's speed and scale as ratios against baselines measured in the same
run on the same machine, judged against targets (bench/report.py). `python -m bench` is the
driver; each figure is a module of its own. Benchmarks, not tests: nothing here fails on a timing."""
