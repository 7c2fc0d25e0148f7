# Everyday commands; each is a thin alias of `python3 dev.py ...` (which needs no make).
.PHONY: help venv demo test
help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
venv:  ## create .venv pinned by constraints.txt
	python3 dev.py venv
demo:  ## run the whole job on the embedded offline photos
	python3 dev.py demo
test:  ## run the test suite (what .ci/run calls)
	python3 dev.py test
