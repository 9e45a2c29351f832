package daemon

import (
	"encoding/xml"
	"fmt"

	"github.com/godbus/dbus/v5/introspect"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/props"
)

// peerData describes org.freedesktop.DBus.Peer, which godbus answers on every object.
var peerData = introspect.Interface{
	Name: "org.freedesktop.DBus.Peer",
	Methods: []introspect.Method{
		{Name: "Ping"},
		{Name: "GetMachineId", Args: []introspect.Arg{{Name: "machine_uuid", Type: "s", Direction: "out"}}},
	},
}

// introspection returns each object's introspection data, by interface: the contract's
// description of that interface (names, argument names, access) taken from api.IntrospectXML,
// plus the standard interfaces the object serves. Serving the whole contract on every object
// would claim that the Manager is also a Drive, and generic clients (busctl, d-feet) would
// then ask it for Drive properties.
func introspection() (map[string]string, error) {
	var node introspect.Node
	if err := xml.Unmarshal([]byte(api.IntrospectXML), &node); err != nil {
		return nil, fmt.Errorf("internal error: cannot parse the contract XML: %w", err)
	}
	out := map[string]string{}
	for _, iface := range node.Interfaces {
		n := introspect.Node{Interfaces: []introspect.Interface{iface, introspect.IntrospectData, props.IntrospectData, peerData}}
		b, err := xml.MarshalIndent(n, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("internal error: cannot marshal introspection data: %w", err)
		}
		out[iface.Name] = introspect.IntrospectDeclarationString + string(b) + "\n"
	}
	for _, want := range []string{api.ManagerInterface, api.DriveInterface} {
		if out[want] == "" {
			return nil, fmt.Errorf("internal error: the contract XML does not describe %s", want)
		}
	}
	return out, nil
}
