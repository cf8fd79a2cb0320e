# facecluster: everything here calls the `facecluster` console script or pytest.
# `make run` sets up and runs the main job on the embedded default; `make test` sets up and runs every check.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
SOURCE ?= $(SHARED)/data/photos

# Tests and the demo read the real models from ../shared when it is there; users run `facecluster models pull`.
ifneq ($(wildcard $(SHARED)/models/MANIFEST.json),)
export FACECLUSTER_MODELS_DIR ?= $(abspath $(SHARED)/models)
endif

.PHONY: help setup run ingest check detect faces-backfill faces-cluster faces-cluster-dual faces-assign faces-stats faces-pipeline-dual faces-train-matching faces-pipeline-full train-rollback eval-train serve assign eval-cluster bench-cluster bench-serve bench-scale test test-fast lint format typecheck pytest dev models-verify eval-verify eval-detect eval-enrol bench-engine bench-ingest clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/.installed ## create .venv and install the project with its test tools

run: setup ## the main job on the embedded default: the pipeline over SOURCE
	$(BIN)/facecluster pipeline $(SOURCE)

ingest: setup ## ingest SOURCE (LIBRARY=, LIMIT=, FORCE=1)
	$(BIN)/facecluster ingest $(SOURCE) $(if $(LIBRARY),--library $(LIBRARY)) $(if $(LIMIT),--limit $(LIMIT)) $(if $(FORCE),--force)

check: setup ## MongoDB faces against Qdrant points (REPAIR=1 to repair)
	$(BIN)/facecluster check $(if $(LIBRARY),--library $(LIBRARY)) $(if $(REPAIR),--repair)

# The first seed's face targets. LIBRARY defaults to what ingest names it: bucket/prefix for s3://bucket/prefix,
# else the folder's name.
LIBRARY ?= $(if $(filter s3://%,$(SOURCE)),$(patsubst %/,%,$(patsubst s3://%,%,$(SOURCE))),$(notdir $(abspath $(SOURCE))))
CLUSTER_OPTIONS = $(if $(PERSON_THRESHOLD),--person-threshold $(PERSON_THRESHOLD)) $(if $(UNKNOWN_METHOD),--unknown-method $(UNKNOWN_METHOD)) $(if $(UNKNOWN_MIN_SIZE),--min-cluster-size $(UNKNOWN_MIN_SIZE)) $(if $(MAX_FACES),--max-faces $(MAX_FACES))

faces-backfill: setup ## detect and embed every face of SOURCE (LIMIT=)
	$(BIN)/facecluster ingest $(SOURCE) --library $(LIBRARY) $(if $(LIMIT),--limit $(LIMIT))

faces-cluster: setup ## cluster LIBRARY's unknown faces (MAX_FACES=, UNKNOWN_METHOD=hdbscan)
	$(BIN)/facecluster cluster --library $(LIBRARY) --method $(or $(UNKNOWN_METHOD),hdbscan) $(if $(MAX_FACES),--max-faces $(MAX_FACES))

faces-cluster-dual: setup ## dual mode: known persons first, then unknown clusters (PERSON_THRESHOLD=, UNKNOWN_METHOD=, MAX_FACES=)
	$(BIN)/facecluster cluster --library $(LIBRARY) --method dual $(CLUSTER_OPTIONS)

faces-assign: setup ## incremental assignment: new faces of LIBRARY to known persons and clusters (MAX_FACES=)
	$(BIN)/facecluster match --library $(LIBRARY) $(if $(MAX_FACES),--max-faces $(MAX_FACES))

assign: setup ## assign LIBRARY's clusters to known users (STRATEGY=centroid|vote, THRESHOLD=)
	$(BIN)/facecluster assign --library $(LIBRARY) $(if $(STRATEGY),--strategy $(STRATEGY)) $(if $(THRESHOLD),--threshold $(THRESHOLD))

serve: setup ## the HTTP API on Ray Serve (HOST=, PORT=)
	$(BIN)/facecluster serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

dev: setup ## the API for development: uvicorn with reload, the engine in process, on 127.0.0.1 (PORT=)
	$(BIN)/uvicorn --factory facecluster.api.dev:app --reload --reload-dir lib --host 127.0.0.1 --port $(or $(PORT),8000)

faces-stats: setup ## persons, clusters, unclustered faces of LIBRARY
	$(BIN)/facecluster stats --library $(LIBRARY)

faces-pipeline-dual: setup ## ingest SOURCE, cluster (dual), stats (LIMIT=, PERSON_THRESHOLD=, UNKNOWN_METHOD=)
	$(BIN)/facecluster pipeline $(SOURCE) --library $(LIBRARY) $(if $(LIMIT),--limit $(LIMIT)) $(CLUSTER_OPTIONS)

TRAIN_OPTIONS = $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(MARGIN),--margin $(MARGIN)) $(if $(MIN_FACES),--min-faces $(MIN_FACES))

faces-train-matching: setup ## triplet fine-tuning on the labelled persons, re-project, switch (EPOCHS=20 MARGIN=0.2 MIN_FACES=5)
	$(BIN)/facecluster train $(TRAIN_OPTIONS)

faces-pipeline-full: setup ## ingest SOURCE, cluster, train, re-cluster, stats (EPOCHS=, MARGIN=, MIN_FACES=, LIMIT=)
	$(BIN)/facecluster pipeline $(SOURCE) --library $(LIBRARY) $(if $(LIMIT),--limit $(LIMIT)) $(CLUSTER_OPTIONS) --train $(TRAIN_OPTIONS)

train-rollback: setup ## return to the previous vector version
	$(BIN)/facecluster train --rollback

eval-train: setup ## held-out LFW persons before and after training
	$(BIN)/facecluster eval train --images $(SHARED)/data/lfw/images $(TRAIN_OPTIONS)

eval-cluster: setup ## every clustering method scored on LFW
	$(BIN)/facecluster eval cluster --images $(SHARED)/data/lfw/images

bench-serve: setup ## 32 clients posting 1-megapixel photos to /detect-face and /api/v1/faces/search for 60 s
	$(BIN)/facecluster bench serve --images $(SHARED)/data/photos/enrol

bench-cluster: setup ## clustering time and memory at 10k, 30k and 100k faces
	$(BIN)/facecluster bench cluster --images $(SHARED)/data/lfw/images

bench-scale: setup ## every library-wide operation on a library of FACES faces (default 100000) grown from LFW
	$(BIN)/facecluster bench scale --faces $(or $(FACES),100000) --images $(SHARED)/data/lfw/images

bench-ingest: setup ## model-only bound vs naive loop vs the Ray pipeline on LFW
	$(BIN)/facecluster bench ingest $(SHARED)/data/lfw/images

detect: setup ## detect every face under SOURCE, one JSON line per image
	$(BIN)/facecluster detect $(SOURCE)

test: lint typecheck pytest ## every check: ruff, mypy (strict on lib/), pytest on real models and photos

test-fast: setup ## the pure-function tests alone (engine maths, clustering rules, curation and assignment decisions, settings, contracts): under a minute
	$(BIN)/pytest -m fast -q

lint: setup ## ruff: lint and format check
	$(BIN)/ruff check lib tests jobs
	$(BIN)/ruff format --check lib tests jobs

format: setup ## ruff: fix what it can and format
	$(BIN)/ruff check --fix lib tests jobs
	$(BIN)/ruff format lib tests jobs

typecheck: setup ## mypy, strict on lib/
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

models-verify: setup ## check the model files against the registry
	$(BIN)/facecluster models verify

eval-verify: setup ## LFW DevTrain pair verification
	$(BIN)/facecluster eval verify --images $(SHARED)/data/lfw/images --pairs $(SHARED)/data/lfw/pairsDevTrain.txt

eval-detect: setup ## face recall on the annotated group photos
	$(BIN)/facecluster eval detect --images $(SHARED)/data/photos --boxes $(SHARED)/data/photos/group/face_boxes.csv

eval-enrol: setup ## same- vs different-person cosine on the enrolment photos
	$(BIN)/facecluster eval enrol --images $(SHARED)/data/photos/enrol

bench-engine: setup ## detector and embedder speed by batch size
	$(BIN)/facecluster bench engine --images $(SHARED)/data/photos/group

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
