package ceremony

// The envelope layout (echo.go), for tests that forge echoes.
const (
	EnvelopeHeaderLen = headerLen
	EchoIDLen         = idLen
	EchoRound         = echoRound
)
