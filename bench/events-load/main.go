// Command eventsload POSTs CloudEvents to a kl server's ingress, each with a unique id
// and its send time as the event time, from -c connections, as fast as the server
// answers or at -rate requests/s in total: one binary-mode event per request, or with
// -batch K, K events per application/cloudevents-batch+json request. It prints one
// JSON summary.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// event is one CloudEvent of a batch, in the JSON format.
type event struct {
	SpecVersion string `json:"specversion"`
	ID          string `json:"id"`
	Source      string `json:"source"`
	Type        string `json:"type"`
	Time        string `json:"time"`
}

func main() {
	url := flag.String("url", "", "the ingress, e.g. http://127.0.0.1:8080/v1/tenants/default/events")
	token := flag.String("token", "", "bearer token")
	n := flag.Int("n", 1000, "events to send")
	c := flag.Int("c", 16, "connections")
	rate := flag.Float64("rate", 0, "events per second in total (0: as fast as possible)")
	prefix := flag.String("prefix", "ev", "event id prefix")
	ty := flag.String("type", "bench.event", "event type")
	batch := flag.Int("batch", 0, "events per batch request (0: binary mode, one per request)")
	flag.Parse()
	perRequest := max(*batch, 1)
	requests := (*n + perRequest - 1) / perRequest

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *c}}
	var next, accepted, failed atomic.Int64
	var interval time.Duration
	if *rate > 0 {
		interval = time.Duration(float64(time.Second) / *rate)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r := next.Add(1) - 1
				if r >= int64(requests) {
					return
				}
				if interval > 0 {
					if wait := time.Until(start.Add(time.Duration(r) * interval)); wait > 0 {
						time.Sleep(wait)
					}
				}
				first := int(r) * perRequest
				count := min(perRequest, *n-first)
				now := time.Now().UTC().Format(time.RFC3339Nano)
				var req *http.Request
				if *batch > 0 {
					events := make([]event, count)
					for k := range events {
						events[k] = event{"1.0", fmt.Sprintf("%s-%d", *prefix, first+k), "/bench", *ty, now}
					}
					body, _ := json.Marshal(events)
					req, _ = http.NewRequest("POST", *url, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/cloudevents-batch+json")
				} else {
					req, _ = http.NewRequest("POST", *url, nil)
					req.Header.Set("ce-specversion", "1.0")
					req.Header.Set("ce-id", fmt.Sprintf("%s-%d", *prefix, first))
					req.Header.Set("ce-source", "/bench")
					req.Header.Set("ce-type", *ty)
					req.Header.Set("ce-time", now)
				}
				req.Header.Set("Authorization", "Bearer "+*token)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(int64(count))
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					accepted.Add(int64(count))
				} else {
					failed.Add(int64(count))
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sent": *n, "accepted": accepted.Load(), "failed": failed.Load(),
		"seconds": secs, "acceptedPerSecond": float64(accepted.Load()) / secs,
		"startMicros": start.UnixMicro(),
	})
}
