package secret

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	const value = "s3cret-pin-4711"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain", value)
	lf := write("lf", value+"\n")
	crlf := write("crlf", value+"\r\n\n")
	empty := write("empty", "")
	newline := write("newline", "\n")
	credDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(credDir, "hsm-pin"), []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SECRET_TEST_SET", value)
	t.Setenv("SECRET_TEST_EMPTY", "")

	tests := []struct {
		name    string
		source  string
		credDir string // $CREDENTIALS_DIRECTORY; "" = unset
		want    string // "" = error
		hint    string // part of the error's hint
	}{
		{"file", "file:" + plain, "", value, ""},
		{"file trailing newline", "file:" + lf, "", value, ""},
		{"file trailing CRLF", "file:" + crlf, "", value, ""},
		{"env", "env:SECRET_TEST_SET", "", value, ""},
		{"cred", "cred:hsm-pin", credDir, value, ""},
		{"literal secret", value, "", "", "file:/path"},
		{"no value", "file:", "", "", "file:/path"},
		{"unknown kind", "pin:" + value, "", "", "file:/path"},
		{"missing file", "file:" + filepath.Join(dir, "missing"), "", "", "check the path"},
		{"empty file", "file:" + empty, "", "", "empty"},
		{"only a newline", "file:" + newline, "", "", "empty"},
		{"env unset", "env:SECRET_TEST_UNSET", "", "", "set the variable SECRET_TEST_UNSET"},
		{"env empty", "env:SECRET_TEST_EMPTY", "", "", "empty"},
		{"cred outside systemd", "cred:hsm-pin", "", "", "LoadCredential="},
		{"cred with slash", "cred:../hsm-pin", credDir, "", "no slash"},
		{"cred missing", "cred:other", credDir, "", "LoadCredential="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.credDir == "" {
				t.Setenv("CREDENTIALS_DIRECTORY", "")
				os.Unsetenv("CREDENTIALS_DIRECTORY")
			} else {
				t.Setenv("CREDENTIALS_DIRECTORY", tt.credDir)
			}
			got, err := Read(tt.source)
			if tt.want != "" {
				if err != nil || string(got) != tt.want {
					t.Fatalf("Read(%q) = %q, %v; want %q", tt.source, got, err, tt.want)
				}
				return
			}
			if err == nil || got != nil {
				t.Fatalf("Read(%q) = %q, %v; want an error", tt.source, got, err)
			}
			var se *Error
			if !errors.Is(err, ErrSource) || !errors.As(err, &se) {
				t.Fatalf("error %v is not a *Error wrapping ErrSource", err)
			}
			if !strings.Contains(se.Hint, tt.hint) {
				t.Errorf("hint %q lacks %q", se.Hint, tt.hint)
			}
			if strings.Contains(err.Error(), value) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}

func TestErrorUnwrapsCause(t *testing.T) {
	_, err := Read("file:" + filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrSource) {
		t.Fatalf("error %v does not wrap both ErrSource and os.ErrNotExist", err)
	}
}

func TestZero(t *testing.T) {
	for _, b := range [][]byte{nil, {}, []byte("pin"), make([]byte, 1000)} {
		for i := range b {
			b[i] = byte(i + 1)
		}
		Zero(b)
		for i, c := range b {
			if c != 0 {
				t.Fatalf("byte %d of %d is %#x after Zero", i, len(b), c)
			}
		}
	}
}
