//go:build !unix

package ceremony_test

import "time"

// cpuTime is not measured here: benchmarks report 0 CPU-ms/op.
func cpuTime() time.Duration { return 0 }
