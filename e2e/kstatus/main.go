// kstatus: what sigs.k8s.io/cli-utils/pkg/kstatus/status (the library Flux's
// health checks and `kubectl wait`-style tools use) says about Kubernetes
// objects. Reads a JSON object, or a List of them, on stdin; prints one JSON
// line per object: {"name": ..., "status": "Current|InProgress|Failed|...", "message": ...}.
// Built by e2e/scripts/build-deps.sh kstatus; used by e2e/tests/gitops_flux.rs.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	// apimachinery's decoder: whole numbers become int64, as client-go
	// decodes them (kstatus refuses a float64 generation).
	var obj map[string]interface{}
	if err := kjson.Unmarshal(raw, &obj); err != nil {
		fail("stdin is not a JSON object: %v", err)
	}
	objects := []map[string]interface{}{obj}
	if items, ok := obj["items"].([]interface{}); ok {
		objects = objects[:0]
		for i, it := range items {
			m, ok := it.(map[string]interface{})
			if !ok {
				fail("items[%d] is not an object", i)
			}
			objects = append(objects, m)
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o}
		res, err := status.Compute(u)
		if err != nil {
			fail("kstatus of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if err := out.Encode(verdict{Name: u.GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
			fail("write: %v", err)
		}
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
