# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DAY ?= 2026-11-26

.PHONY: demo test bench clean

$(BIN)/newsletter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/newsletter
	$(BIN)/newsletter subscribers import subscribers/sample.csv
	$(BIN)/newsletter subscribers count
	$(BIN)/newsletter send --date $(DEMO_DAY)
	@echo
	@echo "Open outbox/$(DEMO_DAY)/issue.html in a browser to see the issue;"
	@echo "outbox/$(DEMO_DAY)/mail/new/ holds one .eml per active subscriber (a Maildir any mail client opens)."

test: $(BIN)/newsletter
	$(BIN)/python -m pytest -q

bench: $(BIN)/newsletter
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) outbox/20* subscribers/*.db subscribers/*.db-* 
