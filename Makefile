# The user interface. `make pretrain` runs every stage on a sample corpus it builds
# itself; `make test` runs the test suite. Every stage takes CONFIG=file.yaml and
# ARGS="key=value ...", e.g.  make dedup ARGS="minhash.threshold=0.7"

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# The project's command (installed by setup): one subcommand per stage, `$(CLI) --help` lists them.
CLI        := $(VENV)/bin/slimpajama-btlm
TORCH_SPEC ?= torch==2.13.0
CONFIG     ?=
ARGS       ?=
PYTEST_ARGS ?=

# Default outputs of each stage; a stage is complete when its manifest exists.
SAMPLE_DIR ?= data/sample
DEDUP_DIR  ?= data/dedup
TOKENS_DIR ?= data/tokens

SAMPLE_DONE := $(SAMPLE_DIR)/manifest.json
DEDUP_DONE  := $(DEDUP_DIR)/manifest.json
TOKENS_DONE := $(TOKENS_DIR)/manifest.json

# With a custom CONFIG the upstream stage is the user's business, not the demo's.
upstream = $(if $(CONFIG),,$(1))
config_flag = $(if $(CONFIG),--config $(CONFIG),)

.PHONY: help setup test test-fast corpus dedup tokenize pretrain stats coord-check mup-sweep eval decontaminate bench gguf-check clean

help:
	@echo "make setup      create .venv (torch pinned by TORCH_SPEC=$(TORCH_SPEC)), install the project"
	@echo "make test       run the test suite"
	@echo "make corpus     build the sample corpus in $(SAMPLE_DIR)"
	@echo "make dedup      normalize, filter, MinHash-LSH dedup -> $(DEDUP_DIR)"
	@echo "make tokenize   GPT-2 BPE, split, pack 2048/8192 Arrow shards -> $(TOKENS_DIR)"
	@echo "make pretrain   train the demo BTLM (runs every earlier stage if needed)"
	@echo "make stats      shard statistics of $(TOKENS_DIR)"
	@echo "make eval       lm-evaluation-harness on a checkpoint (CKPT=dir, default the newest of runs/demo; TASKS=a,b)"
	@echo "make decontaminate  13-gram overlap of $(DEDUP_DIR)/corpus with evaluation sets -> data/decontam"
	@echo "make coord-check  muP coordinate check on $(TOKENS_DIR)"
	@echo "make mup-sweep    learning-rate transfer across width on $(TOKENS_DIR)"
	@echo "Options: CONFIG=path.yaml ARGS=\"key=value ...\""
	@echo "Each stage is a subcommand of $(CLI) (after setup; --help lists them)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# --- stages -------------------------------------------------------------------------

$(SAMPLE_DONE): | setup
	$(CLI) corpus

$(DEDUP_DONE): $(SAMPLE_DONE)
	$(CLI) dedup

$(TOKENS_DONE): $(DEDUP_DONE)
	$(CLI) tokenize

corpus: setup
	$(CLI) corpus $(config_flag) $(ARGS)

dedup: setup $(call upstream,$(SAMPLE_DONE))
	$(CLI) dedup $(config_flag) $(ARGS)

tokenize: setup $(call upstream,$(DEDUP_DONE))
	$(CLI) tokenize $(config_flag) $(ARGS)

pretrain: setup $(call upstream,$(TOKENS_DONE))
	$(CLI) pretrain $(config_flag) $(ARGS)

stats: setup $(call upstream,$(TOKENS_DONE))
	$(CLI) stats $(if $(CONFIG),$(CONFIG),$(TOKENS_DIR)) $(ARGS)

# The scaling experiments read the token shards, built first like pretrain's.
coord-check: setup $(call upstream,$(TOKENS_DONE))
	$(CLI) coord-check $(config_flag) $(ARGS)

mup-sweep: setup $(call upstream,$(TOKENS_DONE))
	$(CLI) mup-sweep $(config_flag) $(ARGS)

# lm-evaluation-harness, offline: CKPT=checkpoint folder (default: the newest of runs/demo/checkpoints),
# TASKS=comma-separated lm-eval task names, task YAMLs or folders (default: the shipped holdout task).
CKPT  ?=
TASKS ?=
# (lm-eval comes with the dev extra that setup installs; elsewhere: pip install -e ".[eval]").
eval: setup
	$(CLI) eval $(config_flag) $(if $(CKPT),checkpoint=$(CKPT)) $(if $(TASKS),"tasks=[$(TASKS)]") $(ARGS)

# Word 13-gram decontamination of the cleaned corpus against evaluation sets -> data/decontam
# (default: the shipped holdout task, its items first built from the token shards into
# EVAL_TASKS). Other sets: ARGS="eval_sets=[hellaswag,path/items.jsonl:question]".
# In the chain: make tokenize ARGS="input=data/decontam/corpus"; the clean score:
# make eval ARGS="decontamination=data/decontam".
EVAL_TASKS ?= data/eval_tasks
decontaminate: setup $(call upstream,$(TOKENS_DONE))
	$(if $(CONFIG),,$(PY) -m train.harness export_tasks=$(EVAL_TASKS))
	$(PY) -m pipeline.decontaminate $(config_flag) $(ARGS)

# Side-by-side benchmarks against the reference tools (bench extra); not part of CI.
bench: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/bench_normalize.py
	$(PY) bench/bench_minhash.py
	$(PY) bench/dedup_quality.py
	$(PY) bench/bench_tokenize.py $(SAMPLE_DIR)
	$(PY) bench/bench_model.py
	$(PY) bench/bench_train.py

# GGUF export run in llama.cpp against PyTorch (table of size, logits, perplexity, memory);
# not part of CI. llama-cpp-python builds from source (~14 min on 2 cores the first time):
# portable flags, since the native build can emit instructions the CPU lacks (SIGILL).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
gguf-check: setup $(call upstream,$(TOKENS_DONE))
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -e ".[gguf,llama]"
	$(PY) bench/gguf_check.py $(ARGS)

clean:
	rm -rf data runs
