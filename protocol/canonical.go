package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxSafeInteger is 2^53-1: integers beyond it are not exactly representable
// in the IEEE 754 doubles other languages' JSON libraries use.
const maxSafeInteger = 1<<53 - 1

// Canonicalize returns the canonical encoding of a JSON object (see
// docs/canonical-encoding.md): members sorted by byte order, no
// insignificant whitespace, RFC 8785 string escaping, integers only. It
// rejects with ErrMalformed anything but a single JSON object, duplicate
// members, non-integer numbers, integers beyond ±(2^53-1), invalid UTF-8,
// non-ASCII member names and nesting deeper than MaxNesting.
func Canonicalize(raw []byte) ([]byte, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	return appendCanonical(nil, obj), nil
}

// RequestSigningInput returns the bytes a request signature covers:
// RequestDomain(op) followed by the canonical encoding of the request without
// its "signature" member. op is read from the request's "op" member.
func RequestSigningInput(raw []byte) ([]byte, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	op, err := stringMember(obj, "op")
	if err != nil {
		return nil, err
	}
	if !ValidOp(op) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	return signingInput(RequestDomain(op), obj, "signature"), nil
}

// ResultSigningInput returns the bytes a node's result signature covers:
// ResultDomain followed by the canonical encoding of the result without its
// "node_signature" member.
func ResultSigningInput(raw []byte) ([]byte, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	return signingInput(ResultDomain, obj, "node_signature"), nil
}

func signingInput(domain string, obj map[string]any, omit string) []byte {
	b := make([]byte, 0, 512)
	b = append(b, domain...)
	return appendCanonicalObject(b, obj, omit)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// parseObject decodes raw into a tree of map[string]any, []any, string,
// json.Number (integers only), bool and nil, enforcing the rules above.
func parseObject(raw []byte) (map[string]any, error) {
	if len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(raw), MaxMessageSize)
	}
	if !utf8.Valid(raw) {
		return nil, malformed("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := parseValue(dec, 0)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, malformed("top-level value is not an object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, malformed("data after the top-level object")
	}
	return obj, nil
}

func parseValue(dec *json.Decoder, depth int) (any, error) {
	if depth > MaxNesting {
		return nil, malformed("nesting deeper than %d", MaxNesting)
	}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, malformed("unexpected end of input")
		}
		return nil, malformed("%v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return parseMembers(dec, depth)
		case '[':
			return parseElements(dec, depth)
		}
		return nil, malformed("unexpected %q", t)
	case json.Number:
		if err := checkInteger(string(t)); err != nil {
			return nil, err
		}
		return t, nil
	case string, bool, nil:
		return t, nil
	}
	return nil, malformed("unexpected token %v", tok)
}

func parseMembers(dec *json.Decoder, depth int) (map[string]any, error) {
	obj := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed("%v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, malformed("member name is not a string")
		}
		for i := 0; i < len(key); i++ {
			if key[i] >= utf8.RuneSelf {
				return nil, malformed("non-ASCII member name %q", key)
			}
		}
		if _, dup := obj[key]; dup {
			return nil, malformed("duplicate member %q", key)
		}
		v, err := parseValue(dec, depth+1)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, malformed("%v", err)
	}
	return obj, nil
}

func parseElements(dec *json.Decoder, depth int) ([]any, error) {
	arr := []any{}
	for dec.More() {
		v, err := parseValue(dec, depth+1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, malformed("%v", err)
	}
	return arr, nil
}

// checkInteger accepts -?(0|[1-9][0-9]*) within ±(2^53-1), except "-0".
func checkInteger(lit string) error {
	digits := strings.TrimPrefix(lit, "-")
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return malformed("number %s is not an integer", lit)
	}
	if len(digits) > 1 && digits[0] == '0' || lit == "-0" {
		return malformed("number %s is not minimal", lit)
	}
	n, err := strconv.ParseInt(lit, 10, 64)
	if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
		return malformed("integer %s out of range ±(2^53-1)", lit)
	}
	return nil
}

func appendCanonical(b []byte, v any) []byte {
	switch t := v.(type) {
	case map[string]any:
		return appendCanonicalObject(b, t, "")
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonical(b, e)
		}
		return append(b, ']')
	case string:
		return appendString(b, t)
	case json.Number:
		return append(b, t...)
	case bool:
		return strconv.AppendBool(b, t)
	case nil:
		return append(b, "null"...)
	}
	panic(fmt.Sprintf("protocol: canonical encoding of %T", v)) // unreachable: parseValue builds the tree
}

func appendCanonicalObject(b []byte, obj map[string]any, omit string) []byte {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		if omit != "" && k == omit {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys) // byte order; member names are ASCII
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendCanonical(b, obj[k])
	}
	return append(b, '}')
}

// appendString escapes as RFC 8785 §3.2.2.2: \" \\ \b \f \n \r \t, other
// control characters as \u00xx (lowercase hex), everything else as UTF-8.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

func stringMember(obj map[string]any, name string) (string, error) {
	v, ok := obj[name]
	if !ok {
		return "", malformed("missing member %q", name)
	}
	s, ok := v.(string)
	if !ok {
		return "", malformed("member %q is not a string", name)
	}
	return s, nil
}

// checkMemberCase rejects members whose names differ only in case from a
// field of t (encoding/json would match them case-insensitively, so the typed
// value could differ from what a case-sensitive reader of the signed bytes
// sees).
func checkMemberCase(obj map[string]any, t reflect.Type) error {
	names := jsonFieldNames(t, nil)
	for k := range obj {
		for _, n := range names {
			if k != n && strings.EqualFold(k, n) {
				return malformed("member %q differs from %q only in case", k, n)
			}
		}
	}
	return nil
}

func jsonFieldNames(t reflect.Type, names []string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if f.Anonymous && tag == "" {
			names = jsonFieldNames(f.Type, names)
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// decodeTyped parses raw with the canonical rules, then decodes it into v.
func decodeTyped(raw []byte, v any) (map[string]any, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	if err := checkMemberCase(obj, reflect.TypeOf(v)); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, malformed("%v", err)
	}
	return obj, nil
}
