package join

// Paths served by the join port.
const (
	PathCA   = "/ca.crt"
	PathJoin = "/v1/join"
)

// joinRequest is the body of POST /v1/join. The server rejects unknown fields, so a typo in a
// hand-written request is an error rather than a silently missing value.
type joinRequest struct {
	Token    string            `json:"token"`
	NodeName string            `json:"nodeName"`
	Labels   map[string]string `json:"labels,omitempty"`
	CSR      string            `json:"csr"`
}

// joinResponse is the 200 body of POST /v1/join. The client ignores fields it does not know, so
// the server may add some.
type joinResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}
