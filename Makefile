# The two commands of the README, plus helpers. Each installs what it needs into .venv.
.PHONY: up test bench bench-frameworks compare proto lint

up:        ## run the whole local stack (JAX runtime, TF Serving, TorchServe, gateway) until Ctrl-C; ARGS=--no-torchserve ...
	bash scripts/up.sh $(ARGS)

test:      ## ruff + mypy + the whole pytest suite
	bash scripts/test.sh

bench:     ## gateway-added latency and batched-runtime throughput (prints figures)
	bash scripts/venv.sh test && bash scripts/install_tools.sh && .venv/bin/python bench/bench.py && .venv/bin/python bench/rest_listener.py

bench-frameworks:  ## TF Serving vs the JAX runtime on one model, direct and through the gateway
	bash scripts/venv.sh test && .venv/bin/python bench/frameworks.py

compare:   ## the same model on the JAX runtime, TF Serving and TorchServe through the gateway: table, JSON, report, chart; ARGS=--rounds 5 ...
	bash scripts/venv.sh test && .venv/bin/python -m gateway compare $(ARGS)

proto:     ## regenerate gateway/proto (OIP from inference.proto, TF Serving's tree from the official stubs)
	bash scripts/venv.sh test && .venv/bin/python scripts/gen_proto.py all
