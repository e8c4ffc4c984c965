// Package preparams generates, encodes and pools the Paillier pre-parameters
// (safe primes, Paillier keys) that every ECDSA keygen and reshare consumes.
//
// Generating one set takes tens of seconds on a small machine, so nodes keep a
// sealed pool filled in the background, and tests draw from a fixture file
// made once by `make fixtures`.
package preparams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
)

// Generate makes one fresh set of pre-parameters. It honours ctx: a cancelled
// context stops the safe-prime search.
func Generate(ctx context.Context, concurrency int) (*keygen.LocalPreParams, error) {
	if concurrency < 1 {
		concurrency = 1
	}
	pp, err := keygen.GeneratePreParamsWithContext(ctx, concurrency)
	if err != nil {
		return nil, fmt.Errorf("generate pre-params: %w", err)
	}
	if !pp.ValidateWithProof() {
		return nil, errors.New("generate pre-params: generated set failed validation")
	}
	return pp, nil
}

// Marshal encodes one set. The result is secret material: seal it before it
// goes anywhere but memory.
func Marshal(pp *keygen.LocalPreParams) ([]byte, error) {
	if pp == nil {
		return nil, errors.New("marshal pre-params: nil set")
	}
	b, err := json.Marshal(pp)
	if err != nil {
		return nil, fmt.Errorf("marshal pre-params: %w", err)
	}
	return b, nil
}

// Unmarshal decodes one set and checks it is complete.
func Unmarshal(b []byte) (*keygen.LocalPreParams, error) {
	var pp keygen.LocalPreParams
	if err := json.Unmarshal(b, &pp); err != nil {
		return nil, fmt.Errorf("decode pre-params: %w", err)
	}
	if !pp.ValidateWithProof() {
		return nil, errors.New("decode pre-params: set is incomplete or invalid")
	}
	return &pp, nil
}

// Fixtures is a file of pre-generated sets for tests and benchmarks only.
type Fixtures struct {
	Warning string                   `json:"warning"`
	Sets    []*keygen.LocalPreParams `json:"sets"`
}

// FixtureWarning is written into every fixture file.
const FixtureWarning = "TEST FIXTURES ONLY: these Paillier keys are public; a production node refuses to use them"

// LoadFixtures reads a fixture file written by WriteFixtures.
func LoadFixtures(path string) ([]*keygen.LocalPreParams, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pre-params fixtures (run `make fixtures` to create them): %w", err)
	}
	var f Fixtures
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode pre-params fixtures %s: %w", path, err)
	}
	if len(f.Sets) == 0 {
		return nil, fmt.Errorf("pre-params fixtures %s: no sets", path)
	}
	for i, pp := range f.Sets {
		if pp == nil || !pp.ValidateWithProof() {
			return nil, fmt.Errorf("pre-params fixtures %s: set %d is invalid", path, i)
		}
	}
	return f.Sets, nil
}

// WriteFixtures writes sets to path atomically.
func WriteFixtures(path string, sets []*keygen.LocalPreParams) error {
	b, err := json.MarshalIndent(Fixtures{Warning: FixtureWarning, Sets: sets}, "", " ")
	if err != nil {
		return fmt.Errorf("encode fixtures: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write fixtures: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write fixtures: %w", err)
	}
	return nil
}
