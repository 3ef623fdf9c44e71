# rvc-lora developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch is installed first, so the package's torch range is already met and
# pip never pulls a multi-GB CUDA build on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
# Where pip finds that wheel; e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu on a machine
# whose default index would give a CUDA build.
TORCH_INDEX ?=
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: help install test test-fast bench demo format lint clean readme-tables golden-fairseq \
	reproduce-paper-table lr-grid demo-corpus paper-voices pretrain-tiny mutation

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

# FCPE's pitch weights (f0_method=fcpe), extracted from the torchfcpe wheel on PyPI and
# sha256-checked. Order-only on the venv: a reinstall does not fetch them again.
models/fcpe_c_v001.pt: | $(VENV)/.installed
	$(VENV)/bin/rvc-lora download fcpe

install: $(VENV)/.installed models/fcpe_c_v001.pt ## create .venv, install the package (editable) with dev tools, fetch FCPE's weights

test: install ## run the whole test suite, slow tests included
	$(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

test-fast: install ## run the tests without the `slow` marker
	$(PY) -m pytest -n $(JOBS) -m "not slow" $(PYTEST_ARGS)

demo: install ## adapter for a demo voice, convert, score, plot, export (CPU, a few minutes)
	$(PY) scripts/demo.py

demo-corpus: install ## remake data/demo/ with flite and espeak-ng (apt-get install flite espeak-ng)
	$(PY) scripts/make_demo_corpus.py

paper-voices: install ## remake data/demo/voices/ (the paper table's 3 held-out target voices)
	$(PY) scripts/make_paper_voices.py

# The shipped tiny encoder and base (data/pretrained/): content encoder on the parallel corpus,
# then RVC-style full pretraining of G and D on every demo voice but the target.
PRETRAIN_DIR ?= outputs/pretrain_tiny
pretrain-tiny: install ## remake data/pretrained/ (encoder + tiny base; CPU, about 30 min)
	$(PY) scripts/pretrain_tiny_encoder.py
	$(PY) train.py experiment=pretrain_tiny hydra.run.dir=$(PRETRAIN_DIR)
	$(PY) scripts/ship_tiny_base.py $(PRETRAIN_DIR)

bench: install ## run bench/ and keep each script's output in results/bench/ (CPU; idle machine)
	$(PY) scripts/run_bench.py

# The paper table: three held-out voices x training-audio budgets x full fine-tuning (D trained
# and frozen) and LoRA, held-out scoring, early stop, report into outputs/paper_table/.
# PROFILE=quick: fewer cells, one seed; PROFILE=full: v2_40k on a GPU. SEEDS=... replaces the
# profile's seeds (tiny: 0,1,2).
SEEDS ?=
PROFILE ?= tiny
reproduce-paper-table: install ## sweep, score and report the paper table (PROFILE=quick|full, SEEDS=0,1,2, LAUNCHER=slurm)
	$(PY) scripts/reproduce_paper_table.py $(if $(SEEDS),--seeds "$(SEEDS)") --profile "$(PROFILE)" $(if $(LAUNCHER),--launcher "$(LAUNCHER)")

LRS ?= 2e-4,5e-4,1e-3,2e-3,4e-3,8e-3
lr-grid: install ## the learning-rate grid behind the paper table's rates (LRS=..., SEEDS=0)
	$(PY) scripts/reproduce_paper_table.py --lrs "$(LRS)" $(if $(SEEDS),--seeds "$(SEEDS)") --profile "$(PROFILE)"

# Every figure in README.md is rendered from results/ (written by demo, reproduce-paper-table,
# lr-grid, bench and scripts/lora_size_table.py), never typed; a test fails when they differ.
readme-tables: install ## rewrite README.md's generated blocks from results/
	$(PY) scripts/readme_tables.py

# Mutation testing (docs/mutation.md; not in CI): mutmut over lora/layers.py, lora/io.py,
# lora/config.py, training/losses.py and report/claims.py ([tool.mutmut] in pyproject.toml), each
# mutant against the fast tests that run its function. A clean run each time: mutmut's cache
# keeps verdicts of unchanged functions even when the tests changed. One thread per worker, as
# `make test` does. MUTMUT_ARGS=name-glob reruns chosen mutants (without the clean start).
MUTMUT_ARGS ?=
mutation: install ## mutation score of the LoRA core, losses and claims (~10 min on 2 cores)
	@$(PY) -c "import mutmut" 2>/dev/null || $(PIP) install -q -e ".[mutation]"
	$(if $(MUTMUT_ARGS),,rm -rf mutants)
	mkdir -p mutants
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m mutmut run --max-children $(JOBS) $(MUTMUT_ARGS) \
		> mutants/run.log 2>&1 || (tail -n 40 mutants/run.log; exit 1)
	$(PY) scripts/mutation_score.py

format: install ## format and lint-fix the code
	$(PY) -m ruff format src tests bench scripts *.py
	$(PY) -m ruff check --fix src tests bench scripts *.py

lint: install ## lint without changing files
	$(PY) -m ruff check src tests bench scripts *.py

# fairseq, only to make the parity fixture (tests/fixtures/fairseq_hubert/), in its own venv:
# the fork fairseq-fixed pins hydra-core/omegaconf and lists torchaudio (whose wheels need a
# CUDA torch), so it is installed with --no-deps plus its other listed dependencies; its C
# extensions build from source against the torch already there (~3 min on 2 cores).
FAIRSEQ_VENV ?= .venv-fairseq
FAIRSEQ_SPEC ?= fairseq-fixed==0.12.3.1
FAIRSEQ_DEPS := "setuptools<81" wheel cffi cython "hydra-core==1.3.2" "omegaconf==2.3.0" \
	"numpy>=1.21.3" regex "sacrebleu>=1.4.12" tqdm bitarray scikit-learn packaging

$(FAIRSEQ_VENV)/.installed:
	$(PYTHON) -m venv $(FAIRSEQ_VENV)
	$(FAIRSEQ_VENV)/bin/python -m pip install -q --upgrade pip
	$(FAIRSEQ_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(FAIRSEQ_VENV)/bin/python -m pip install -q $(FAIRSEQ_DEPS)
	$(FAIRSEQ_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation "$(FAIRSEQ_SPEC)"
	touch $@

golden-fairseq: $(FAIRSEQ_VENV)/.installed ## remake the fairseq parity fixture with fairseq itself
	$(FAIRSEQ_VENV)/bin/python tests/fixtures/make_fairseq_golden.py

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
