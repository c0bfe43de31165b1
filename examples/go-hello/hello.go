// Package hellogo is a minimal kl function in Go (deploy it with `kl deploy DIR`).
//
// kl compiles the package together with a small HTTP server that calls Handle
// for each request. event is the request body: a JSON body arrives as is, so
//
//	curl -H 'content-type: application/json' -d '{"name":"Ada"}' ...
//
// greets Ada. ctx carries the deadline and the request metadata under "kl.*"
// keys (request id, method, path, query, headers, ...). Returning a value
// answers 200 with it as JSON; returning an error answers 500.
package hellogo

import (
	"context"
	"encoding/json"
	"fmt"
)

// Handle greets the name in the event ({"name": "..."}), or in ?name=, or the world.
func Handle(ctx context.Context, event json.RawMessage) (any, error) {
	var in struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(event, &in) // a non-JSON or empty body leaves Name empty
	if in.Name == "" {
		query, _ := ctx.Value("kl.query").(map[string]string)
		in.Name = query["name"]
	}
	if in.Name == "" {
		in.Name = "world"
	}
	return map[string]any{
		"message":   fmt.Sprintf("Hello, %s!", in.Name),
		"requestId": ctx.Value("kl.request_id"),
	}, nil
}
