package azure

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseExpression(t *testing.T) {
	cases := []struct {
		in   string
		want string // canonical form, or "error: <part of the message>"
	}{
		{"parameters('a')", "parameters('a')"},
		{" concat ( 'a' ,'b''c' ) ", "concat('a', 'b''c')"},
		{"reference(resourceId('A.B/c', variables('n')), '2024-01-01', 'full').identity.principalId",
			"reference(resourceId('A.B/c', variables('n')), '2024-01-01', 'full').identity.principalId"},
		{"parameters('xs')[copyIndex('l')]", "parameters('xs')[copyIndex('l')]"},
		{"add(-1, 22)", "add(-1, 22)"},
		{"null()", "null()"},
		{"''", "''"},
		{"'[x]'", "'[x]'"},
		{"f()[0][1].a.b", "f()[0][1].a.b"},
		{"", "error: column 1: expected a function call"},
		{"parameters", "error: column 11: expected ( after the function name"},
		{"f('a' 'b')", "error: column 7: expected , or )"},
		{"f('a", "error: unterminated string"},
		{"f(1,)", "error: column 5: expected a function call"},
		{"f().", "error: expected a property name"},
		{"f()[1", "error: expected ] after the index"},
		{"f() g()", "error: column 5: expected the end of the expression"},
		{"f(-)", "error: a '-' without digits"},
		{"f(#)", "error: unexpected '#'"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			n, err := parseExpression(tc.in)
			if want, isErr := strings.CutPrefix(tc.want, "error: "); isErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("got %v, %v; want an error with %q", n, err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := n.String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestIsExpression(t *testing.T) {
	for s, want := range map[string]bool{
		"[parameters('a')]": true, "[[literal]": false, "plain": false, "[": false, "[]": true, "[x": false,
	} {
		if got := isExpression(s); got != want {
			t.Errorf("isExpression(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzParseExpression: the parser never panics, and what it accepts it
// renders to a canonical text that parses to the same canonical text. The
// seeds are every expression of the templates here plus the cases above.
func FuzzParseExpression(f *testing.F) {
	for _, s := range []string{"parameters('a')", "f('a''b', -1, g().x[0])", "f(", "'", "f()[", "a.b"} {
		f.Add(s)
	}
	files, _ := filepath.Glob("*.json")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			f.Fatal(err)
		}
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				if isExpression(v) {
					f.Add(v[1 : len(v)-1])
				}
			case []any:
				for _, x := range v {
					walk(x)
				}
			case map[string]any:
				for _, x := range v {
					walk(x)
				}
			}
		}
		walk(v)
	}
	f.Fuzz(func(t *testing.T, src string) {
		n, err := parseExpression(src)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "column ") {
				t.Fatalf("error without a column: %v", err)
			}
			return
		}
		canon := n.String()
		m, err := parseExpression(canon)
		if err != nil {
			t.Fatalf("%q parsed, its canonical form %q does not: %v", src, canon, err)
		}
		if again := m.String(); again != canon {
			t.Fatalf("canonical form not stable: %q -> %q", canon, again)
		}
	})
}
