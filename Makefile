# Every target runs on the project's pinned Node.js 24 (.tools/node), bootstrapped from the npm
# registry when missing; nothing else needs installing by hand.
SHELL := /bin/bash
ROOT := $(abspath .)
export PATH := $(ROOT)/.tools/node/bin:$(ROOT)/node_modules/.bin:$(PATH)

.PHONY: all start test typecheck unit integration bench deps node clean

all: test

node:
	@scripts/bootstrap-node.sh

# npm ci only when the lockfile changed since the last install.
node_modules/.installed: package-lock.json | node
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.installed

## Runs Myelin on its embedded default: a PostgreSQL it starts itself, data in ./data, on 127.0.0.1:8008.
start: deps
	bin/myelin cluster --embedded --data ./data --port 8008

## Runs every test against a throwaway PostgreSQL and Redis (installed from Debian packages when missing).
test: deps
	scripts/test-services.sh $(MAKE) --no-print-directory test-inner

test-inner: typecheck
	node --import tsx scripts/check-imports.ts
	mocha 'test/unit/**/*.spec.ts' 'test/integration/**/*.spec.ts'

typecheck: deps
	tsc --noEmit -p .

unit: deps
	mocha 'test/unit/**/*.spec.ts'

## Benchmarks on a durable PostgreSQL (fsync on); prints JSON lines, see scripts/bench/RESULTS.md.
bench: deps
	MYELIN_PG_DURABLE=1 scripts/test-services.sh node --import tsx scripts/bench/run.ts

clean:
	rm -rf node_modules .tools
