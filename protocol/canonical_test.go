package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalizeStable(t *testing.T) {
	want := `{"a":[1,{"x":null,"y":true}],"b":"\u0001\n\"\\<>&é\u2028","c":-9007199254740991,"d":{}}`
	inputs := []string{
		want,
		`{"d":{},"c":-9007199254740991,"b":"\u0001\n\"\\<>&é\u2028","a":[1,{"y":true,"x":null}]}`,
		"\n{ \"c\" : -9007199254740991 ,\t\"a\": [ 1 , { \"y\": true, \"x\": null } ],\r\n \"d\": { }, \"b\": \"\\u0001\\n\\\"\\\\\\u003c\\u003e\\u0026\\u00e9\\u2028\" }\n",
	}
	for i, in := range inputs {
		got, err := Canonicalize([]byte(in))
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		// The canonical form writes U+2028 and é literally.
		if string(got) != strings.ReplaceAll(want, `\u2028`, "\u2028") {
			t.Errorf("input %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func TestCanonicalizeEscapes(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"s":"\b\f\n\r\t"}`, `{"s":"\b\f\n\r\t"}`},
		{`{"s":"\u001f\u007f"}`, "{\"s\":\"\\u001f\x7f\"}"},
		{`{"s":"\/"}`, `{"s":"/"}`},
		{`{"s":"\ud83d\ude00"}`, "{\"s\":\"\U0001F600\"}"},
		{`{"s":"<script>&amp;"}`, `{"s":"<script>&amp;"}`},
	}
	for _, tt := range tests {
		got, err := Canonicalize([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("%s: got %s want %s", tt.in, got, tt.want)
		}
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	deep := strings.Repeat(`{"a":`, MaxNesting+2) + "1" + strings.Repeat("}", MaxNesting+2)
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"float", `{"a":1.5}`, ErrMalformed},
		{"float zero fraction", `{"a":1.0}`, ErrMalformed},
		{"exponent", `{"a":1e3}`, ErrMalformed},
		{"negative zero", `{"a":-0}`, ErrMalformed},
		{"too big", `{"a":9007199254740992}`, ErrMalformed},
		{"too small", `{"a":-9007199254740992}`, ErrMalformed},
		{"duplicate", `{"a":1,"a":1}`, ErrMalformed},
		{"nested duplicate", `{"a":{"b":1,"b":2}}`, ErrMalformed},
		{"array", `[1,2]`, ErrMalformed},
		{"string", `"x"`, ErrMalformed},
		{"empty", ``, ErrMalformed},
		{"trailing", `{"a":1} {}`, ErrMalformed},
		{"trailing garbage", `{"a":1}x`, ErrMalformed},
		{"syntax", `{"a":}`, ErrMalformed},
		{"invalid utf8", "{\"a\":\"\xff\"}", ErrMalformed},
		{"non-ascii key", `{"é":1}`, ErrMalformed},
		{"too deep", deep, ErrMalformed},
		{"too large", `{"a":"` + strings.Repeat("x", MaxMessageSize) + `"}`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Canonicalize([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCanonicalizeAcceptsLimits(t *testing.T) {
	for _, in := range []string{`{"a":9007199254740991}`, `{"a":-9007199254740991}`, `{"a":0}`, `{}`} {
		if _, err := Canonicalize([]byte(in)); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
}
