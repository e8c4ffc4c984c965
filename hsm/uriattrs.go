package hsm

import (
	"fmt"
	"net/url"
	"strings"
)

// URIAttr is one attribute of a key URI: a path attribute (before "?",
// separated by ";") or a query attribute (after "?", separated by "&").
type URIAttr struct {
	Key, Value string
	Query      bool
}

// SplitURI splits an RFC 7512-style URI ("scheme:k=v;k=v?k=v&k=v") into its
// attributes, in order, with their values unescaped (path values with
// PathUnescape, query values with QueryUnescape). It checks only the shape;
// the caller checks the names. Errors say what is wrong, never a value.
func SplitURI(s, scheme string) ([]URIAttr, error) {
	rest, ok := strings.CutPrefix(s, scheme+":")
	if !ok {
		return nil, fmt.Errorf("missing %s: scheme", scheme)
	}
	path, query, _ := strings.Cut(rest, "?")
	var out []URIAttr
	for _, part := range []struct {
		s, sep   string
		q        bool
		unescape func(string) (string, error)
	}{{path, ";", false, url.PathUnescape}, {query, "&", true, url.QueryUnescape}} {
		for _, attr := range strings.Split(part.s, part.sep) {
			if attr == "" {
				continue
			}
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return nil, fmt.Errorf("attribute %q has no value", k)
			}
			dv, err := part.unescape(v)
			if err != nil {
				return nil, fmt.Errorf("attribute %s: bad escaping", k)
			}
			out = append(out, URIAttr{Key: k, Value: dv, Query: part.q})
		}
	}
	return out, nil
}
