# adctr — the user's verbs. `make help` lists them.
EXP ?= default
# SET="section.key=value ..." overrides settings for the stages run, e.g. an ablation:
# make features train evaluate SET=features.text=false
SET ?=
# ENGINE=ray runs the stages that have a Ray version on Ray (engine.kind = "ray"; RAY_ADDRESS
# names a cluster, else a local Ray starts); the `ray` extra is installed on first use
ENGINE ?= local
OVERRIDES := $(foreach s,$(SET),--set $(s)) $(if $(filter ray,$(ENGINE)),--set engine.kind=ray)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TUNE_STAMP := $(VENV)/.tune-stamp
RAY_STAMP := $(VENV)/.ray-stamp
ENGINE_STAMP := $(if $(filter ray,$(ENGINE)),$(RAY_STAMP))
RAW := data/$(EXP)/raw/_manifest.json
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false
# torch threads spin-wait for each other by default, which is several times slower on a busy
# 2-core machine; this must be set before Python starts
export OMP_WAIT_POLICY := PASSIVE

.DEFAULT_GOAL := help
.PHONY: help features finetune understand embed train tune evaluate export replay report ui test realdata bench bench-peers lint clean distclean

help: ## list the verbs
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-11s %s\n", $$1, $$2}'
	@echo "  EXP=<name> picks experiments/<name>.toml (default: $(EXP))"
	@echo "  SET=\"section.key=value ...\" overrides settings, e.g. SET=features.text=false"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# an extra's pins (`$(1)`: tune, ray), installed on top without reinstalling the project;
# `make test` has them already through the `dev` extra
define install_extra
	$(PY) -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); \
	  print("\n".join(d["project"]["optional-dependencies"]["$(1)"]))' | \
	  $(PY) -m pip install --quiet -r /dev/stdin
endef

$(TUNE_STAMP): pyproject.toml $(STAMP)
	$(call install_extra,tune)
	@touch $(TUNE_STAMP)

$(RAY_STAMP): pyproject.toml $(STAMP)
	$(call install_extra,ray)
	@touch $(RAY_STAMP)

# with ENGINE=ray, every stage verb installs the extra first
features finetune understand embed train tune evaluate export replay: $(ENGINE_STAMP)

# raw data is rebuilt when its config or the code that writes it changes (a pulled simulator
# change must not leave last month's data in place)
RAW_CODE := $(shell find pipeline/sources -name '*.py') features/schema.py
$(RAW): experiments/$(EXP).toml $(RAW_CODE) | $(STAMP)
	$(PY) -m pipeline raw --experiment $(EXP) $(OVERRIDES)

features: $(STAMP) $(RAW) ## build raw data (when missing), embeddings and feature tables
	$(PY) -m pipeline finetune --if-needed --experiment $(EXP) $(OVERRIDES)
	$(PY) -m pipeline understand --if-needed --experiment $(EXP) $(OVERRIDES)
	$(PY) -m pipeline embed --experiment $(EXP) $(OVERRIDES)
	$(PY) -m pipeline features --experiment $(EXP) $(OVERRIDES)

finetune: $(STAMP) $(RAW) ## fine-tune the text encoder on train-period clicks (used with embed.encoder=finetuned)
	$(PY) -m pipeline finetune --experiment $(EXP) $(OVERRIDES)

understand: $(STAMP) $(RAW) ## fine-tune the query tagger on the annotations and label every query
	$(PY) -m pipeline understand --experiment $(EXP) $(OVERRIDES)

embed: $(STAMP) $(RAW) ## embed ad, query and behaviour texts (cached)
	$(PY) -m pipeline embed --experiment $(EXP) $(OVERRIDES)

train: $(STAMP) ## train the LightGBM and neural CTR/CVR models (MLflow runs)
	$(PY) -m pipeline train --experiment $(EXP) $(OVERRIDES)

tune: $(TUNE_STAMP) ## search each model's main settings on valid (Optuna); writes tune/best.toml
	$(PY) -m pipeline tune --experiment $(EXP) $(OVERRIDES)

evaluate: $(STAMP) ## compare models on test, log plots and tables, set the champion
	$(PY) -m pipeline evaluate --experiment $(EXP) $(OVERRIDES)

export: $(STAMP) ## publish the bid / placement weight table from the champion
	$(PY) -m pipeline export --experiment $(EXP) $(OVERRIDES)

replay: $(STAMP) ## offline replay of bidding strategies against the logged auctions
	$(PY) -m pipeline replay --experiment $(EXP) $(OVERRIDES)

report: $(STAMP) ## the evaluation on one self-contained page: prints (and opens) report.html
	$(PY) -m pipeline report --experiment $(EXP) $(OVERRIDES)

ui: $(STAMP) ## serve the MLflow dashboard on 127.0.0.1 (Ctrl-C stops it)
	$(PY) -m pipeline ui

test: $(STAMP) ## run the test suite
	$(PY) -m pytest

realdata: $(STAMP) ## every real-data experiment x 3 seeds: test AUC / logloss per model
	$(PY) -m pipeline.realdata $(OVERRIDES)

# SECTIONS="features scale" runs only those sections of `make bench`
SECTIONS ?=
bench: $(STAMP) ## speed and memory benchmarks, measured side by side (SECTIONS= picks some)
	$(PY) -m pipeline.bench $(SECTIONS)

# the peer library in its own venv (bench/peers-requirements.txt: DeepCTR-Torch on the same
# torch), never in .venv; `make test` does not need it
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp
$(PEERS_STAMP): bench/peers-requirements.txt
	@echo "installing bench/peers-requirements.txt into $(PEERS_VENV)"
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers-requirements.txt
	@touch $(PEERS_STAMP)

# ROWS=20000 keeps the first rows of each split only (a quick run of the whole path)
ROWS ?=
PEERS_ARGS = --experiment $(EXP) $(OVERRIDES) $(if $(ROWS),--rows $(ROWS))
bench-peers: $(STAMP) ## adctr's neural model vs DeepCTR-Torch's DCNMix on the same features, 3 seeds
	$(PY) -m pipeline.bench.peers export $(PEERS_ARGS)
	@$(MAKE) --no-print-directory --silent $(PEERS_STAMP)
	$(PY) -m pipeline.bench.peers run --python $(PEERS_VENV)/bin/python $(PEERS_ARGS)

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: ## remove generated data and the MLflow store (keeps .venv)
	rm -rf data mlruns

distclean: clean ## also remove the virtual environments
	rm -rf $(VENV) $(PEERS_VENV)
