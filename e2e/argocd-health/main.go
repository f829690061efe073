// argocd-health: Argo CD's own health assessment (github.com/argoproj/argo-cd/v3
// util/lua, and gitops-engine's health.GetResourceHealth that Argo CD's
// application controller calls) with dnspolicy's health.lua loaded as a
// resource customization, the way argocd-cm's
// resource.customizations.health.dnspolicy.dev_ClusterDNSPolicy loads it.
//
//	argocd-health test DIR    run DIR's health_test.yaml fixtures (the
//	                          resource_customizations layout) as Argo CD's
//	                          TestLuaHealthScript does; exit 1 on a mismatch
//	argocd-health judge DIR   read a JSON object (or a List) on stdin, print
//	                          per object {"name","status","message"} (what
//	                          the application controller shows) and
//	                          {"luaStatus","luaMessage"} (the script alone)
//
// Built by e2e/scripts/build-deps.sh argocd; used by e2e/tests/gitops_flux.rs.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/argoproj/gitops-engine/pkg/health"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
)

const key = "dnspolicy.dev/ClusterDNSPolicy"

type fixtures struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type verdict struct {
	Name       string `json:"name"`
	Status     string `json:"status"`
	Message    string `json:"message"`
	LuaStatus  string `json:"luaStatus"`
	LuaMessage string `json:"luaMessage"`
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: argocd-health test|judge DIR")
	}
	dir := os.Args[2]
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fail("%v", err)
	}
	overrides := map[string]appv1.ResourceOverride{key: {HealthLua: string(script)}}
	switch os.Args[1] {
	case "test":
		runFixtures(dir, overrides)
	case "judge":
		judge(overrides)
	default:
		fail("unknown mode %q", os.Args[1])
	}
}

// runFixtures: Argo CD's TestLuaHealthScript (util/lua/health_test.go) on
// one resource_customizations directory, the script found through the
// resource overrides instead of the built-in ones.
func runFixtures(dir string, overrides map[string]appv1.ResourceOverride) {
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fail("%v", err)
	}
	var tests fixtures
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		fail("health_test.yaml: %v", err)
	}
	if len(tests.Tests) == 0 {
		fail("health_test.yaml has no tests")
	}
	bad := 0
	for _, t := range tests.Tests {
		obj := readObject(filepath.Join(dir, t.InputPath))
		vm := lua.VM{ResourceOverrides: overrides, UseOpenLibs: true}
		script, _, err := vm.GetHealthScript(obj)
		if err != nil || script == "" {
			fail("%s: no health script for %s (%v)", t.InputPath, key, err)
		}
		got, err := vm.ExecuteHealthLua(obj, script)
		if err != nil {
			fail("%s: %v", t.InputPath, err)
		}
		if *got != t.HealthStatus {
			bad++
			fmt.Printf("FAIL %s: got %+v, want %+v\n", t.InputPath, *got, t.HealthStatus)
		} else {
			fmt.Printf("ok   %s: %s\n", t.InputPath, got.Status)
		}
	}
	if bad > 0 {
		os.Exit(1)
	}
}

// judge: what Argo CD's application controller shows as the resource's
// health: gitops-engine's GetResourceHealth with Argo CD's Lua overrides.
func judge(overrides map[string]appv1.ResourceOverride) {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		fail("stdin is not a JSON object: %v", err)
	}
	objects := []map[string]interface{}{obj}
	if items, ok := obj["items"].([]interface{}); ok {
		objects = objects[:0]
		for _, it := range items {
			objects = append(objects, it.(map[string]interface{}))
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o}
		h, err := health.GetResourceHealth(u, lua.ResourceHealthOverrides(overrides))
		if err != nil {
			fail("health of %s: %v", u.GetName(), err)
		}
		l, err := lua.ResourceHealthOverrides(overrides).GetResourceHealth(u)
		if err != nil {
			fail("Lua health of %s: %v", u.GetName(), err)
		}
		if h == nil || l == nil {
			fail("no health for %s: the override did not match %s", u.GetName(), key)
		}
		_ = out.Encode(verdict{
			Name: u.GetName(), Status: string(h.Status), Message: h.Message,
			LuaStatus: string(l.Status), LuaMessage: l.Message,
		})
	}
}

func readObject(path string) *unstructured.Unstructured {
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	obj := map[string]interface{}{}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		fail("%s: %v", path, err)
	}
	return &unstructured.Unstructured{Object: obj}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "argocd-health: "+format+"\n", args...)
	os.Exit(1)
}
