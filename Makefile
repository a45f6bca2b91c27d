# Two commands do everything on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT_UPDATED := /tmp/.sluice-apt-updated
TAP_FLAGS ?=

.PHONY: run test setup system-deps browser-deps lint typecheck bench clean-data dashboard

run: setup dashboard
	node bin/sluice.js serve

test: setup browser-deps lint typecheck dashboard
	npx tap $(TAP_FLAGS)

bench: setup
	node --import tsx bench/run.ts

setup: system-deps node_modules/.installed

# The dashboard `sluice serve` shows at /: web/src bundled by esbuild into web/dist, rebuilt when a source changes.
DASHBOARD := web/dist/index.html
dashboard: $(DASHBOARD)
$(DASHBOARD): node_modules/.installed web/build.ts $(shell find web/src -type f)
	node --import tsx web/build.ts

# Installs when package.json or the lock changed; better-sqlite3 builds from source here (about a minute).
# `npm install` rather than `npm ci`: it takes the locked versions too, and does not refuse a lock that lists
# only this platform's optional binaries (biome's, esbuild's).
node_modules/.installed: package.json package-lock.json
	npm install --no-fund --no-audit
	touch $@

$(APT_UPDATED):
	$(SUDO) apt-get update -qq
	touch $@

system-deps:
	@command -v nats-server >/dev/null || { $(MAKE) $(APT_UPDATED) && $(SUDO) apt-get install -y -qq nats-server; }

# Debian's Chromium for the browser tests (playwright-core drives it; it never downloads a browser).
browser-deps:
	@command -v chromium >/dev/null || { $(MAKE) $(APT_UPDATED) && $(SUDO) apt-get install -y -qq chromium; }
	@command -v sftp >/dev/null || { $(MAKE) $(APT_UPDATED) && $(SUDO) apt-get install -y -qq openssh-client; }
	@command -v sshpass >/dev/null || { $(MAKE) $(APT_UPDATED) && $(SUDO) apt-get install -y -qq sshpass; }

lint: node_modules/.installed
	npx biome check .

typecheck: node_modules/.installed
	npx tsc --noEmit

clean-data:
	rm -rf data
