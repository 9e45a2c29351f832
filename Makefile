# plugvault — build, test, install. `make help` lists the targets.
SHELL := /bin/bash
PREFIX  ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
LIBEXECDIR ?= $(PREFIX)/libexec/plugvault
GO ?= go
# One set of build flags for every step: changing them between steps throws the build cache
# away (fyne's cgo alone is ~3 minutes on 2 cores). Tests and the GUI test's tray binary use
# -race; the binaries for the VM guest are static (CGO_ENABLED=0) and never link fyne.
GOTESTFLAGS ?= -race -count=1
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS := -X github.com/plugvault/plugvault/service/internal/buildinfo.Version=$(VERSION)
BIN := bin

# Debian packages the tests need (installed by `make deps`, which .ci/run calls).
DEB_TEST_DEPS := dbus-daemon dbus cryptsetup-bin btrfs-progs e2fsprogs xfsprogs util-linux psmisc \
	libxml2-utils shellcheck rsync gcc pkg-config libgl1-mesa-dev libx11-dev libxcursor-dev \
	libxrandr-dev libxinerama-dev libxi-dev libxxf86vm-dev xvfb xdotool imagemagick polkitd \
	qemu-system-x86 mmdebstrap ca-certificates

.PHONY: all build test check deps lint fmt test-unit test-root install uninstall clean help bench

all: build

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

build: ## build plugvaultd, plugvault and plugvault-tray into bin/
	mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./service/cmd/...
	$(GO) build -race -ldflags '$(LDFLAGS)' -o $(BIN)/ ./tray/cmd/plugvault-tray

deps: ## install the Debian packages the tests need (root)
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_TEST_DEPS)
	$(GO) mod download

check: deps lint test ## the README's test command: install test deps, lint, run every test level

lint: ## gofmt, go vet, XML validation, shellcheck
	@out=$$(gofmt -l service tray); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -n "$$(find . -name '*.sh' -not -path './.git/*' -print -quit)" ] || [ -f .ci/run ]; then \
		shellcheck .ci/run $$(find . -name '*.sh' -not -path './.git/*'); fi

test: ## run unit, bus, root and GUI tests (root levels need root; under CI=true nothing may skip)
	PLUGVAULT_TEST_ROOT=$${PLUGVAULT_TEST_ROOT-$$( [ $$(id -u) = 0 ] && echo 1 )} \
		$(GO) test $(GOTESTFLAGS) ./...

test-unit: ## unit and bus tests only (no root needed)
	$(GO) test $(GOTESTFLAGS) ./...

bench: ## compare the backup engine with rsync --link-dest, cp -a and a stat walk (root; several GB of sparse images in /var/tmp)
	$(GO) run ./service/internal/backup/bench $(BENCHFLAGS)

fmt: ## gofmt every Go file
	gofmt -w service tray

install: ## install into $(DESTDIR)$(PREFIX) (binaries, unit, bus policy, polkit policy, desktop files)
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/plugvaultd $(DESTDIR)$(LIBEXECDIR)/plugvaultd
	install -m 0755 $(BIN)/plugvault $(DESTDIR)$(PREFIX)/bin/plugvault
	install -m 0755 $(BIN)/plugvault-engine $(DESTDIR)$(LIBEXECDIR)/plugvault-engine
	if [ -f $(BIN)/plugvault-tray ]; then install -m 0755 $(BIN)/plugvault-tray $(DESTDIR)$(PREFIX)/bin/plugvault-tray; fi
	install -D -m 0644 service/systemd/plugvaultd.service $(DESTDIR)$(PREFIX)/lib/systemd/system/plugvaultd.service
	install -D -m 0644 dbus-policy/org.plugvault.PlugVault1.conf $(DESTDIR)$(PREFIX)/share/dbus-1/system.d/org.plugvault.PlugVault1.conf
	install -D -m 0644 dbus-policy/org.plugvault.PlugVault1.service $(DESTDIR)$(PREFIX)/share/dbus-1/system-services/org.plugvault.PlugVault1.service
	install -D -m 0644 polkit/org.plugvault.policy $(DESTDIR)$(PREFIX)/share/polkit-1/actions/org.plugvault.policy

clean: ## remove build output
	rm -rf $(BIN)
