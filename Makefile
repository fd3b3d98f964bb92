# The two commands of the README, plus helpers. Each installs what it needs into .venv.
.PHONY: up test bench proto lint

up:        ## run the whole local stack (JAX runtime + gateway) until Ctrl-C
	bash scripts/up.sh

test:      ## ruff + mypy + the whole pytest suite
	bash scripts/test.sh

bench:     ## gateway-added latency and batched-runtime throughput (prints figures)
	bash scripts/venv.sh test && bash scripts/install_tools.sh && .venv/bin/python bench/bench.py && .venv/bin/python bench/rest_listener.py

proto:     ## regenerate gateway/proto from inference.proto
	.venv/bin/python scripts/gen_proto.py
