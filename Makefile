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
DATADIR ?= $(PREFIX)/share
DOCDIR ?= $(DATADIR)/doc/plugvault
UNITDIR ?= $(PREFIX)/lib/systemd/system
# Lint tools built from the module proxy, pinned, kept out of the source tree's history.
TOOLS := $(CURDIR)/.cache/tools
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TOOLS)/staticcheck

# Debian packages the tests need (installed by `make deps`, which .ci/run calls).
# libdbus-1-dev ships the D-Bus DTDs (busconfig, introspect); polkitd ships policyconfig-1.dtd;
# systemd ships systemd-analyze (unit verification).
DEB_TEST_DEPS := dbus-daemon dbus libdbus-1-dev systemd cryptsetup-bin btrfs-progs e2fsprogs xfsprogs util-linux psmisc \
	libxml2-utils shellcheck rsync gcc pkg-config libgl1-mesa-dev libx11-dev libxcursor-dev \
	libxrandr-dev libxinerama-dev libxi-dev libxxf86vm-dev xvfb xdotool imagemagick polkitd \
	qemu-system-x86 mmdebstrap ca-certificates desktop-file-utils lintian

.PHONY: all build build-service deb test check deps tools lint fmt test-unit install uninstall clean help bench e2e test-vm demo torture

all: build

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

build: build-service ## build plugvaultd, plugvault and plugvault-tray into bin/
	$(GO) build -race -ldflags '$(LDFLAGS)' -o $(BIN)/ ./tray/cmd/plugvault-tray

build-service: ## build plugvaultd, plugvault-engine and plugvault (static) into bin/
	mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./service/cmd/...

# The Debian package: the service, the engine and the CLI, built static as for `build`, staged
# with `install` and packed by service/debian/build-deb.sh. The tray (cgo, fyne) is not in it:
# `build` makes a -race tray for the tests, which a release must not ship.
DEBDIR ?= $(CURDIR)/dist
DEBWORK := $(CURDIR)/.cache/deb
DEB_VERSION ?= $(shell service/debian/version.sh '$(VERSION)')

deb: ## build $(DEBDIR)/plugvault_<version>_amd64.deb (service and CLI; DEB_VERSION overrides the version)
	rm -rf $(DEBWORK) && mkdir -p $(DEBWORK)/bin
	@# -s -w: no symbol table or DWARF in a release binary (only the link step differs from build).
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS) -s -w' -o $(DEBWORK)/bin/ ./service/cmd/...
	$(MAKE) --no-print-directory install DESTDIR=$(DEBWORK)/stage PREFIX=/usr SYSCONFDIR=/etc BIN=$(DEBWORK)/bin
	service/debian/build-deb.sh $(DEBWORK)/stage '$(DEB_VERSION)' $(DEBDIR)

deps: ## install the Debian packages and pinned Go tools the tests and lint need (root)
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_TEST_DEPS)
	$(GO) mod download
	$(MAKE) tools

tools: $(STATICCHECK) ## build the pinned lint tools into .cache/tools

$(STATICCHECK):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

check: deps lint test ## the README's test command: install test deps, lint, run every test level (VM included, with the short torture pass)
	$(MAKE) e2e E2E_EXTRA=-torture-short E2E_TIMEOUT=90m

lint: $(STATICCHECK) ## gofmt, go vet, staticcheck, shellcheck, xmllint against Debian's DTDs
	@out=$$(gofmt -l service tray); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	shellcheck .ci/run service/debian/postinst service/debian/prerm service/debian/postrm $$(find . -name '*.sh' -not -path './.git/*' -not -path './.cache/*')
	xmllint --noout --nonet --dtdvalid /usr/share/xml/dbus-1/introspect.dtd service/api/org.plugvault.PlugVault1.xml
	xmllint --noout --nonet --dtdvalid /usr/share/polkit-1/policyconfig-1.dtd polkit/*.policy
	@# The bus policy needs Debian's busconfig.dtd plus the attributes it lacks; the test knows them.
	$(GO) test $(GOTESTFLAGS) -run 'TestDBusPolicyIsValid|TestSystemdUnit|TestSystemdAnalyzeVerify|TestDependency|TestUnprivileged|TestOnlySysexec|TestDebPackage' ./service/internal/packaging/

# The VM scenarios (service/e2e) are the e2e target's: they need -run-vm-tests and a guest.
test: ## run unit, bus, root and GUI tests (root levels need root; under CI=true nothing may skip)
	PLUGVAULT_TEST_ROOT=$${PLUGVAULT_TEST_ROOT-$$( [ $$(id -u) = 0 ] && echo 1 )} \
		$(GO) test $(GOTESTFLAGS) $$($(GO) list ./... | grep -v '/service/e2e')

test-unit: ## unit and bus tests only (no root needed)
	$(GO) test $(GOTESTFLAGS) $$($(GO) list ./... | grep -v '/service/e2e')

bench: ## compare the backup engine with rsync --link-dest, rsync --inplace + btrfs snapshots, cp -a and a stat walk (root; several GB of sparse images in /var/tmp)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./service/cmd/plugvault-engine
	$(GO) run ./service/internal/backup/bench -engine $(CURDIR)/$(BIN)/plugvault-engine $(BENCHFLAGS)

# The VM tests: a Debian 12 guest under QEMU (TCG) with real systemd, udev, dm-crypt and
# polkit; virtual USB sticks plugged and pulled through QMP. The guest image is cached outside
# the repository (E2E_CACHE, default /var/cache/plugvault-e2e for root); the report goes to
# e2e-out/report.txt. Needs root; host requirements in service/e2e/README.md.
E2E_TIMEOUT ?= 25m
E2E_CACHE ?=
E2E_EXTRA ?=
E2E_FLAGS := -run-vm-tests -e2e-out=$(CURDIR)/e2e-out $(if $(E2E_CACHE),-e2e-cache=$(E2E_CACHE)) $(E2E_EXTRA)
# The whole torture suite runs alone in its own boot (service/e2e/README.md gives its duration).
TORTURE_TIMEOUT ?= 300m

e2e: ## run the QEMU guest tests (root): plug, unlock, back up, pull, power cut; report in e2e-out/report.txt
	$(GO) test $(GOTESTFLAGS) -v -timeout $(E2E_TIMEOUT) ./service/e2e $(E2E_FLAGS); \
		status=$$?; cat e2e-out/report.txt $(if $(E2E_EXTRA),e2e-out/torture.txt) 2>/dev/null; exit $$status

test-vm: e2e ## same as e2e

torture: ## the torture suite in the QEMU guest (root): yanks, kills, power cuts, plug cycles; e2e-out/torture.txt
	$(GO) test $(GOTESTFLAGS) -v -timeout $(TORTURE_TIMEOUT) ./service/e2e $(E2E_FLAGS) -torture -run 'TestTorture'; \
		status=$$?; cat e2e-out/torture.txt 2>/dev/null; exit $$status

demo: ## the main job: boot a guest, plug a virtual stick and narrate a backup to it (root)
	$(GO) run ./service/e2e/cmd/plugvault-demo $(if $(E2E_CACHE),-cache=$(E2E_CACHE))

fmt: ## gofmt every Go file
	gofmt -w service tray

install: ## install into $(DESTDIR)$(PREFIX) and $(DESTDIR)$(SYSCONFDIR); never touches an existing config.toml
	test -x $(BIN)/plugvaultd || { echo "run make build first"; exit 1; }
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/plugvaultd $(DESTDIR)$(LIBEXECDIR)/plugvaultd
	install -m 0755 $(BIN)/plugvault-engine $(DESTDIR)$(LIBEXECDIR)/plugvault-engine
	install -m 0755 $(BIN)/plugvault $(DESTDIR)$(PREFIX)/bin/plugvault
	install -d $(DESTDIR)$(DATADIR)/bash-completion/completions
	$(BIN)/plugvault completion bash > $(DESTDIR)$(DATADIR)/bash-completion/completions/plugvault
	if [ -f $(BIN)/plugvault-tray ]; then install -m 0755 $(BIN)/plugvault-tray $(DESTDIR)$(PREFIX)/bin/plugvault-tray; fi
	install -D -m 0644 service/systemd/plugvaultd.service $(DESTDIR)$(UNITDIR)/plugvaultd.service
	install -D -m 0644 service/systemd/plugvault.catalog $(DESTDIR)$(PREFIX)/lib/systemd/catalog/plugvault.catalog
	install -D -m 0644 dbus-policy/org.plugvault.PlugVault1.conf $(DESTDIR)$(DATADIR)/dbus-1/system.d/org.plugvault.PlugVault1.conf
	install -D -m 0644 dbus-policy/org.plugvault.PlugVault1.service $(DESTDIR)$(DATADIR)/dbus-1/system-services/org.plugvault.PlugVault1.service
	install -D -m 0644 polkit/org.plugvault.policy $(DESTDIR)$(DATADIR)/polkit-1/actions/org.plugvault.policy
	install -D -m 0644 service/internal/config/example.toml $(DESTDIR)$(DOCDIR)/config.toml.example
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@# /etc/plugvault/config.toml is the administrator's (or plugvault enroll's): never installed here.
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/plugvault
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/plugvault/keys
	install -D -m 0644 desktop/plugvault-tray.desktop $(DESTDIR)$(SYSCONFDIR)/xdg/autostart/plugvault-tray.desktop
	install -D -m 0644 desktop/plugvault.desktop $(DESTDIR)$(DATADIR)/applications/plugvault.desktop
	for f in desktop/icons/hicolor/*/apps/*.png; do \
		install -D -m 0644 "$$f" "$(DESTDIR)$(DATADIR)/icons/$${f#desktop/icons/}"; done

uninstall: ## remove what install put there, except /etc/plugvault (configuration and keys)
	rm -f $(DESTDIR)$(LIBEXECDIR)/plugvaultd $(DESTDIR)$(LIBEXECDIR)/plugvault-engine
	-rmdir $(DESTDIR)$(LIBEXECDIR)
	rm -f $(DESTDIR)$(PREFIX)/bin/plugvault $(DESTDIR)$(PREFIX)/bin/plugvault-tray
	rm -f $(DESTDIR)$(DATADIR)/bash-completion/completions/plugvault
	rm -f $(DESTDIR)$(UNITDIR)/plugvaultd.service $(DESTDIR)$(PREFIX)/lib/systemd/catalog/plugvault.catalog
	rm -f $(DESTDIR)$(DATADIR)/dbus-1/system.d/org.plugvault.PlugVault1.conf
	rm -f $(DESTDIR)$(DATADIR)/dbus-1/system-services/org.plugvault.PlugVault1.service
	rm -f $(DESTDIR)$(DATADIR)/polkit-1/actions/org.plugvault.policy
	rm -rf $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(SYSCONFDIR)/xdg/autostart/plugvault-tray.desktop $(DESTDIR)$(DATADIR)/applications/plugvault.desktop
	for f in desktop/icons/hicolor/*/apps/*.png; do rm -f "$(DESTDIR)$(DATADIR)/icons/$${f#desktop/icons/}"; done

clean: ## remove build output and the lint tools
	rm -rf $(BIN) .cache
