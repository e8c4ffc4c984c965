package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestValidToken(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"a", true},
		{"svcA", true},
		{"a-b", true},
		{"a_b", true},
		{"ABC-xyz_019", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a.b", false},
		{"a*", false},
		{">", false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		err := ValidToken(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidToken(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidToken) {
			t.Errorf("ValidToken(%q) error %v does not wrap ErrInvalidToken", tt.in, err)
		}
	}
}
