package store

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestDecodeMeta(t *testing.T) {
	m := WalletMeta{WalletID: "w1", KeyType: "ed25519", Epoch: 3, Committee: []string{"node0", "node1"}, Threshold: 1,
		PubKey: []byte{1, 2}, CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Status: StatusPending}
	full, err := json.Marshal(Record{Meta: m, Sealed: []byte("sealed bytes")})
	if err != nil {
		t.Fatal(err)
	}
	metaJSON, _ := json.Marshal(m)
	tests := []struct {
		name    string
		rec     string
		damaged bool
	}{
		{"as written", string(full), false},
		{"sealed first", `{"sealed":"c2VhbGVk","meta":` + string(metaJSON) + `}`, false},
		{"key case", `{"Meta":` + string(metaJSON) + `}`, false},
		{"sealed value damaged after the metadata", string(full[:len(full)-5]), false},
		{"not an object", `["meta"]`, true},
		{"empty", ``, true},
		{"metadata truncated", string(full[:20]), true},
		{"no metadata", `{"sealed":"c2VhbGVk"}`, true},
		{"metadata of the wrong type", `{"meta":"w1"}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeMeta([]byte(tc.rec))
			if tc.damaged {
				if !errors.Is(err, ErrDamaged) {
					t.Fatalf("got %+v %v, want ErrDamaged", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, m) {
				t.Fatalf("got %+v %v, want %+v", got, err, m)
			}
		})
	}
}
