package packaging

import (
	"encoding/xml"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

// The DTDs as Debian installs them: libdbus-1-dev ships the dbus ones, polkitd policyconfig.
const (
	busconfigDTD  = "/usr/share/xml/dbus-1/busconfig.dtd"
	introspectDTD = "/usr/share/xml/dbus-1/introspect.dtd"
	polkitDTD     = "/usr/share/polkit-1/policyconfig-1.dtd"
)

// busconfigAttrList declares the <allow>/<deny> attributes that dbus-daemon 1.14 accepts
// (dbus-daemon(1), "The <policy> element"; each name is in the daemon's parser) but that
// Debian's busconfig.dtd from the same release still lacks: Debian's own /usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf fails
// plain validation for send_interface. XML merges repeated ATTLIST declarations, so appending
// these keeps every check of the stock DTD and adds only the missing attributes. That
// dbus-daemon itself accepts our file is proven by TestBusPolicy, which loads it.
const busconfigAttrList = `
          send_interface CDATA #IMPLIED send_member CDATA #IMPLIED send_error CDATA #IMPLIED
          send_destination CDATA #IMPLIED send_destination_prefix CDATA #IMPLIED
          send_path CDATA #IMPLIED send_type CDATA #IMPLIED send_broadcast CDATA #IMPLIED
          send_requested_reply CDATA #IMPLIED
          receive_interface CDATA #IMPLIED receive_member CDATA #IMPLIED
          receive_error CDATA #IMPLIED receive_sender CDATA #IMPLIED receive_path CDATA #IMPLIED
          receive_type CDATA #IMPLIED receive_requested_reply CDATA #IMPLIED
          eavesdrop CDATA #IMPLIED own_prefix CDATA #IMPLIED group CDATA #IMPLIED>
`

var busconfigAttrs = "\n<!ATTLIST allow" + busconfigAttrList + "<!ATTLIST deny" + busconfigAttrList

func requireFile(t *testing.T, path, pkg string) {
	t.Helper()
	_, err := os.Stat(path)
	apitest.Require(t, err == nil, path+" is missing: install the Debian package "+pkg)
}

func xmllint(t *testing.T, dtd, file string) {
	t.Helper()
	bin := apitest.RequireTool(t, "xmllint")
	// --nonet: the DOCTYPE's http URL is never fetched; --dtdvalid names the local DTD.
	out, err := exec.Command(bin, "--noout", "--nonet", "--dtdvalid", dtd, file).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("xmllint --dtdvalid %s %s: %v\n%s", filepath.Base(dtd), file, err, out)
	}
}

func TestDBusPolicyIsValid(t *testing.T) {
	requireFile(t, busconfigDTD, "libdbus-1-dev")
	stock, err := os.ReadFile(busconfigDTD)
	if err != nil {
		t.Fatal(err)
	}
	dtd := filepath.Join(t.TempDir(), "busconfig.dtd")
	if err := os.WriteFile(dtd, append(stock, busconfigAttrs...), 0o644); err != nil {
		t.Fatal(err)
	}
	confs, _ := filepath.Glob(filepath.Join(repoRoot(t), "dbus-policy", "*.conf"))
	if len(confs) == 0 {
		t.Fatal("no dbus-policy/*.conf")
	}
	for _, c := range confs {
		xmllint(t, dtd, c)
	}
	// The augmented DTD still rejects what dbus-daemon rejects: an unknown attribute.
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><policy context="default"><allow send_destinaton="org.plugvault.PlugVault1"/></policy></busconfig>`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := apitest.RequireTool(t, "xmllint")
	if out, err := exec.Command(bin, "--noout", "--nonet", "--dtdvalid", dtd, bad).CombinedOutput(); err == nil {
		t.Fatalf("a misspelt attribute passed validation:\n%s", out)
	}
}

func TestIntrospectionXMLIsValid(t *testing.T) {
	requireFile(t, introspectDTD, "libdbus-1-dev")
	xmllint(t, introspectDTD, filepath.Join(repoRoot(t), "service", "api", "org.plugvault.PlugVault1.xml"))
}

func TestPolkitPolicyIsValid(t *testing.T) {
	requireFile(t, polkitDTD, "polkitd")
	policy := filepath.Join(repoRoot(t), "polkit", "org.plugvault.policy")
	xmllint(t, polkitDTD, policy)

	// The actions are exactly those the daemon checks (api.MethodActions, api.OtherUserActions), each with a
	// message and explicit defaults.
	data, err := os.ReadFile(policy)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Actions []struct {
			ID       string `xml:"id,attr"`
			Message  string `xml:"message"`
			Defaults struct {
				Any, Inactive, Active string
			} `xml:"defaults"`
		} `xml:"action"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, a := range doc.Actions {
		got = append(got, a.ID)
		if strings.TrimSpace(a.Message) == "" {
			t.Errorf("action %s has no message", a.ID)
		}
	}
	for _, id := range append(slices.Collect(maps.Values(api.MethodActions)), slices.Collect(maps.Values(api.OtherUserActions))...) {
		if !slices.Contains(want, id) {
			want = append(want, id)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("polkit actions %v, the daemon checks %v", got, want)
	}
}

// TestPolkitDefaults pins each action's defaults: a change here is a security decision and
// must come with its reason in the policy file's comments.
func TestPolkitDefaults(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "polkit", "org.plugvault.policy"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Actions []struct {
			ID       string `xml:"id,attr"`
			Defaults struct {
				Any      string `xml:"allow_any"`
				Inactive string `xml:"allow_inactive"`
				Active   string `xml:"allow_active"`
			} `xml:"defaults"`
		} `xml:"action"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	admin := map[string]bool{api.ActionEnroll: true, api.ActionConfigure: true, api.ActionForget: true, api.ActionManageOtherUsersDrive: true}
	for _, a := range doc.Actions {
		want := [3]string{"auth_admin", "auth_admin", "yes"}
		if admin[a.ID] {
			want = [3]string{"auth_admin", "auth_admin", "auth_admin_keep"}
		}
		got := [3]string{a.Defaults.Any, a.Defaults.Inactive, a.Defaults.Active}
		if got != want {
			t.Errorf("%s defaults (any, inactive, active) = %v, want %v", a.ID, got, want)
		}
	}
}
