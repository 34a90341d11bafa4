package demo

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), &out, Options{Version: "test", Noise: 1000,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"CEF received by the SIEM stand-in (3):",
		"|brute-force-then-success|Brute force followed by a successful logon|10|",
		"|ssh-brute-force|SSH brute force|8|",
		"|ssh-root-logon|SSH logon as root|5|",
		"src=" + attackerIP,
		"events in   1,013",
		"alerts out  3",
		"fewer bytes to the SIEM",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
}

func TestScenarioIsSeeded(t *testing.T) {
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a, b := scenario(base, 200), scenario(base, 200)
	if len(a) != 213 {
		t.Fatalf("scenario has %d lines, want 200 noise + 13 attack", len(a))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("line %d differs between runs", i)
		}
	}
}
