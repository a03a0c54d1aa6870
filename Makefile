# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DAY ?= 2026-11-26
DEMO_WEEK ?= 2026-W48
SAMPLE_DAYS := $(notdir $(wildcard articles/20*))
# what `newsletter fetch` writes from the sample feed (feeds/sample-wire.xml); .gitignore lists them too
SAMPLE_FEED_ARTICLES := articles/2026-11-21/ministers-agree-to-meet-on-border-detection-standards.md \
	articles/2026-11-22/treaty-secretariat-names-new-verification-chief.md \
	articles/2026-11-23/think-tank-report-urges-shared-lab-safety-register.md \
	articles/2026-11-24/tessaly-budget-adds-funds-for-customs-scanners.md \
	articles/2026-11-25/regional-forum-opens-consultation-on-incident-reporting.md \
	articles/2026-11-26/norvalen-parliament-schedules-export-control-hearing.md

.PHONY: demo test bench clean

$(BIN)/newsletter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/newsletter
	$(BIN)/newsletter subscribers import subscribers/sample.csv
	$(BIN)/newsletter subscribers import subscribers/sample-weekly.csv
	$(BIN)/newsletter subscribers count
	@for day in $(SAMPLE_DAYS); do $(BIN)/newsletter fetch --date $$day && $(BIN)/newsletter send --date $$day || exit 1; done
	$(BIN)/newsletter send --digest --week $(DEMO_WEEK)
	$(BIN)/newsletter archive
	@echo
	@echo "Look at:"
	@echo "  outbox/$(DEMO_DAY)/issue.html      the latest issue in a browser"
	@echo "  outbox/$(DEMO_DAY)/mail/new/       one .eml per active subscriber (a Maildir any mail client opens)"
	@echo "  outbox/$(DEMO_WEEK).*/mail/new/        the weekly digest: one .eml per weekly reader, one folder per set of sections"
	@echo "  outbox/site/index.html             the archive of every sample issue (or: $(BIN)/newsletter serve)"
	@echo "Next: $(BIN)/newsletter preview --date $(DEMO_DAY), $(BIN)/newsletter status --date $(DEMO_DAY),"
	@echo "      $(BIN)/newsletter preview --digest --week $(DEMO_WEEK), $(BIN)/newsletter status --digest --week $(DEMO_WEEK)"

# the whole suite on SQLite and, alongside it (one pass a core), the tests of everything that reads
# or writes the database on a throwaway PostgreSQL (tests/pg_server.py; they skip, saying why, where
# PostgreSQL is not installed); its output follows the SQLite pass's; either pass failing fails the target
test: $(BIN)/newsletter
	@NEWSLETTER_TEST_DATABASE=postgresql $(BIN)/python -m pytest -q -p no:cacheprovider >.test-postgresql.log 2>&1 & \
	postgresql=$$!; \
	echo "$(BIN)/python -m pytest -q  (the PostgreSQL pass runs alongside: .test-postgresql.log)"; \
	$(BIN)/python -m pytest -q; sqlite=$$?; \
	wait $$postgresql; pg=$$?; \
	echo; echo "NEWSLETTER_TEST_DATABASE=postgresql $(BIN)/python -m pytest -q"; cat .test-postgresql.log; \
	test $$sqlite -eq 0 && test $$pg -eq 0

# the three benchmarks at small sizes (a quick look, about a minute); README gives the full-size runs
bench: $(BIN)/newsletter
	$(BIN)/python bench/outbox.py --subscribers 2000 --runs 1 --reference-sample 50
	$(BIN)/python bench/smtp.py --subscribers 1000 --runs 1 --reference-sample 50
	$(BIN)/python bench/import_bench.py 10000

clean:
	rm -rf $(VENV) outbox/20* subscribers/*.db subscribers/*.db-* $(SAMPLE_FEED_ARTICLES)
