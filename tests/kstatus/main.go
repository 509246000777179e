// Computes kstatus' status (sigs.k8s.io/cli-utils/pkg/kstatus/status, as Flux, kpt, Config
// Sync and `cli-utils apply --wait` do) for live objects.
//
//	go run . < objects.json
//
// stdin: a JSON array of objects as the API server returned them; stdout: a JSON array of
// {"status", "message"} (Current, InProgress, Failed, Terminating…), or {"error"}.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintln(os.Stderr, "reading objects:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(objects))
	for _, raw := range objects {
		// As client-go decodes them: integers stay int64.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		r, err := status.Compute(u)
		if err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		out = append(out, result{Status: r.Status.String(), Message: r.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "writing results:", err)
		os.Exit(1)
	}
}
