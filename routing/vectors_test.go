package routing_test

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/hwsigner/signer/internal/testvectors"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// testdata/vectors/routing.json (made by cmd/gentestvectors, read by
// clients/typescript) agrees with this package.
func TestVectorsRouting(t *testing.T) {
	b, err := os.ReadFile("../testdata/vectors/routing.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors    []testvectors.RoutingVector `json:"vectors"`
		ErrorCodes []string                    `json:"error_codes"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.ErrorCodes, protocol.ErrorCodes()) {
		t.Errorf("error codes %v", f.ErrorCodes)
	}
	for _, v := range f.Vectors {
		for _, op := range []string{"keygen", "sign", "reshare"} {
			filter, _ := routing.ResultFilterSubject(op, v.ClientID)
			name, _ := routing.ResultConsumerName(op, v.ClientID)
			subj, _ := routing.RequestSubject(op, "w1")
			if filter != v.ResultFilters[op] || name != v.ResultConsumers[op] || subj != v.RequestSubjects[op] {
				t.Errorf("%q %s: %s %s %s", v.ClientID, op, filter, name, subj)
			}
		}
		if got := routing.RequestMsgID(v.ClientID, "r1", []byte(v.Raw)); got != v.RequestMsgID {
			t.Errorf("%q: request msg id %s", v.ClientID, got)
		}
		if got := routing.ResultMsgID(v.ClientID, "r1", "node0", []byte(v.Raw)); got != v.ResultMsgID {
			t.Errorf("%q: result msg id %s", v.ClientID, got)
		}
	}
}
