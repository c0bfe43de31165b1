// Package eventsink is the event benchmark's function: for each event it logs
// one line, "RECV <id> <event time> <receive time, Unix µs>", and answers at once,
// so that bench/events.sh can count deliveries and measure end-to-end latency
// (the sender sets the event time when it sends).
package eventsink

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Handle logs the event's id and times.
func Handle(ctx context.Context, event json.RawMessage) (any, error) {
	ce, _ := ctx.Value("kl.cloudevent").(map[string]string)
	fmt.Printf("RECV %s %s %d\n", ce["id"], ce["time"], time.Now().UnixMicro())
	return nil, nil
}
