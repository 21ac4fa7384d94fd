package egress

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Rule names the configuration rule behind a refusal; the handler shows it
// to the client and logs it. RuleNone means allowed.
type Rule string

// The rules a destination can be refused by.
const (
	RuleNone                Rule = ""
	RuleConnectPorts        Rule = "connect_ports"
	RuleHTTPPorts           Rule = "http_ports"
	RuleDenyDestination     Rule = "deny_destination"
	RuleBlockList           Rule = "block_list"
	RuleAllowDestination    Rule = "allow_destination"
	RulePrivateDestinations Rule = "private_destinations"
	RuleInvalidDestination  Rule = "invalid_destination"
	RuleUnresolved          Rule = "unresolved"
)

// Kind is the kind of proxy request, which selects the allowed ports.
type Kind int

// The kinds of proxy requests.
const (
	Connect  Kind = iota // CONNECT host:port
	Absolute             // GET http://host/path
)

// Policy decides which destinations a proxy may connect to. Its fields are
// set once before use; the block list may be replaced at any time.
type Policy struct {
	// AllowNames and AllowPrefixes, when either is non-empty, restrict
	// destinations to the names listed, or to addresses in the ranges.
	AllowNames    Names
	AllowPrefixes []netip.Prefix
	// DenyNames and DenyPrefixes refuse destinations by name or address.
	DenyNames    Names
	DenyPrefixes []netip.Prefix
	// AllowPrivate lets destinations in the private ranges through;
	// otherwise only addresses in AllowPrefixes may be private.
	AllowPrivate bool
	// ConnectPorts and HTTPPorts are the ports CONNECT and absolute-form
	// requests may reach.
	ConnectPorts []uint16
	HTTPPorts    []uint16

	blocked atomic.Pointer[Names]
}

// SetBlockList replaces the block list (nil clears it). Safe to call while
// the policy is in use.
func (p *Policy) SetBlockList(n *Names) { p.blocked.Store(n) }

// BlockList returns the block list in use.
func (p *Policy) BlockList() *Names { return p.blocked.Load() }

// Resolver looks up a name's addresses (*net.Resolver does).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Decision is the outcome of Decide.
type Decision struct {
	// Rule is RuleNone when the destination is allowed.
	Rule Rule
	// Host is the normalised destination host.
	Host Host
	// Addrs are the addresses to dial, in order; every one passed the
	// policy. They are the only addresses the caller may connect to.
	Addrs []netip.Addr
	// Err is the parse or resolution error behind RuleInvalidDestination
	// and RuleUnresolved.
	Err error
}

// Allowed reports whether the destination may be dialled.
func (d Decision) Allowed() bool { return d.Rule == RuleNone }

// localhost is what "localhost" and its subdomains mean (RFC 6761): they
// never go to DNS, so no resolver can make them anything but loopback.
var localhost = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}

// Decide checks a destination before any connection: the port, the name
// (deny list, block list, allow list), then every address the name
// resolves to (a name with one refused address is refused). The addresses
// in an allowed Decision are those checked: dialling them, and nothing
// else, leaves no room for DNS rebinding between the check and the dial.
func (p *Policy) Decide(ctx context.Context, r Resolver, kind Kind, host string, port uint16) Decision {
	ports, portRule := p.ConnectPorts, RuleConnectPorts
	if kind == Absolute {
		ports, portRule = p.HTTPPorts, RuleHTTPPorts
	}
	h, err := ParseHost(host)
	if err != nil {
		return Decision{Rule: RuleInvalidDestination, Err: err}
	}
	d := Decision{Host: h}
	if !slices.Contains(ports, port) {
		d.Rule = portRule
		return d
	}
	nameAllowed := false
	if h.Name != "" {
		if p.DenyNames.Match(h.Name) {
			d.Rule = RuleDenyDestination
			return d
		}
		if p.BlockList().Match(h.Name) {
			d.Rule = RuleBlockList
			return d
		}
		nameAllowed = p.AllowNames.Match(h.Name)
		if p.restricted() && !nameAllowed && len(p.AllowPrefixes) == 0 {
			d.Rule = RuleAllowDestination // no address could be allowed
			return d
		}
	}
	addrs := []netip.Addr{h.IP}
	switch {
	case h.IP.IsValid():
	case h.Name == "localhost" || hasSuffixLabel(h.Name, "localhost"):
		addrs = localhost
	default:
		addrs, err = r.LookupNetIP(ctx, "ip", h.Name)
		if err == nil && len(addrs) == 0 {
			err = errors.New("no addresses")
		}
		if err != nil {
			d.Rule, d.Err = RuleUnresolved, err
			return d
		}
	}
	d.Addrs = make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if rule := p.checkAddr(a, nameAllowed); rule != RuleNone {
			d.Rule, d.Addrs = rule, nil
			return d
		}
		if !slices.Contains(d.Addrs, a) {
			d.Addrs = append(d.Addrs, a)
		}
	}
	return d
}

// restricted reports whether allow_destination limits destinations.
func (p *Policy) restricted() bool {
	return p.AllowNames.Len() > 0 || len(p.AllowPrefixes) > 0
}

// checkAddr checks one address: deny ranges, then the private ranges (only
// an allow range lets a private address through: an allowed name does not,
// or any name could be pointed at the proxy's network), then the allow list.
func (p *Policy) checkAddr(a netip.Addr, nameAllowed bool) Rule {
	if !a.IsValid() {
		return RuleInvalidDestination
	}
	if containsIP(p.DenyPrefixes, a) {
		return RuleDenyDestination
	}
	inAllow := containsIP(p.AllowPrefixes, a)
	if !p.AllowPrivate && !inAllow && IsPrivate(a) {
		return RulePrivateDestinations
	}
	if p.restricted() && !nameAllowed && !inAllow {
		return RuleAllowDestination
	}
	return RuleNone
}

func hasSuffixLabel(name, suffix string) bool {
	return len(name) > len(suffix) && name[len(name)-len(suffix)-1] == '.' && name[len(name)-len(suffix):] == suffix
}
